"""Contract tests for engine adapters: a pytest base class that an adapter's test suite subclasses.

::

    from pathlib import Path

    from wes_bridge.testing import ContractWorkflow, EngineContract

    WORKFLOWS = Path(__file__).parent / "workflows"

    class TestMyEngine(EngineContract):
        engine = "my-engine"                # the entry-point name
        workflow_type = "MYWL"
        workflow_type_version = "1.0"
        hello = ContractWorkflow(WORKFLOWS / "hello", "hello.x", params="params.json",
                                 outputs={"hello.txt": "sha1$..."})
        failing = ContractWorkflow(WORKFLOWS / "fail", "fail.x", stderr="boom")
        slow = ContractWorkflow(WORKFLOWS / "sleep", "sleep.x", params={"seconds": 600})

The class starts one real ``wes-bridge serve`` (loopback, a random port, a temporary data
directory, the embedded TES), submits the three workflows at once through the WES API, and
checks what every adapter must do: metadata, parameter validation, a hello-world run whose
every step is a TES task of the run, failure reporting and cancellation. Every WES and TES
response it receives goes through :meth:`EngineContract.check_response`.

This module needs pytest (``pip install wes-bridge[test]``); nothing else of wes-bridge imports
it. ``docs/plugins.md`` ("Testing an adapter") describes the checks one by one.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from .models import (
    ErrorResponse,
    RunId,
    RunListResponse,
    RunLog,
    RunStatus,
    ServiceInfo,
    TaskListResponse,
    TaskLog,
)
from .plugin import API_VERSION, RUN_TAG, EngineAdapter, EngineParameters, EngineSettings
from .tes.client import TERMINAL_STATES, TesClient
from .tes.models import TASK_STATES, TesCreateTaskResponse, TesListTasksResponse

__all__ = [
    "CONTRACT_NODE_CONFIG",
    "ENTRY_POINT_GROUP",
    "TES_PREFIX",
    "WES_PREFIX",
    "ContractRuns",
    "ContractWorkflow",
    "EngineContract",
    "LiveNode",
    "ResponseCheck",
    "ResponseMismatch",
    "check_response_models",
    "load_adapter_class",
]

ENTRY_POINT_GROUP = "wes_bridge.engines"
CONTRACT_NODE_CONFIG: Mapping[str, Any] = {"tes": {"cpu_cores": 16}}
"""The contract node's config before :attr:`EngineContract.node_config`: its embedded TES
counts 16 cores whatever the machine has, so that the runs' tasks start side by side instead
of queueing behind one another on a small machine."""
WES_PREFIX = "/ga4gh/wes/v1"
TES_PREFIX = "/ga4gh/tes/v1"

ResponseCheck = Callable[[str, str, str, int, bytes, str], None]
"""``check(api, method, path, status, body, content_type)``: raises if a response is wrong.

``api`` is ``"wes"`` or ``"tes"``, ``path`` the URL path as requested (with its
``/ga4gh/.../v1`` prefix), ``body`` the raw bytes."""


# -- the workflows a contract runs ----------------------------------------------------------
@dataclass(frozen=True)
class ContractWorkflow:
    """A workflow the contract submits: a folder whose files are sent as attachments.

    ``workflow`` is the primary file (the ``workflow_url``), relative to ``folder``. ``params``
    is the ``workflow_params``: a mapping, or the name of a JSON or YAML file in ``folder``.
    ``outputs`` maps keys of the run's ``outputs`` to the ``sha1$...`` checksum each file must
    have; ``stderr`` is text the failing step writes on its stderr (for ``failing``).
    """

    folder: Path
    workflow: str
    params: str | Mapping[str, Any] | None = None
    engine_parameters: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    stderr: str = ""
    files: tuple[str, ...] | None = None
    """The attachments, relative to ``folder``; None: every file under it."""

    def attachments(self) -> list[tuple[str, bytes]]:
        """(relative POSIX path, content) of each file sent with the run."""
        folder = Path(self.folder)
        if self.files is not None:
            paths = [folder / name for name in self.files]
        else:
            paths = sorted(p for p in folder.rglob("*") if p.is_file())
        return [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in paths]

    def workflow_params(self) -> dict[str, Any]:
        """The ``workflow_params`` object."""
        if self.params is None:
            return {}
        if isinstance(self.params, str):
            loaded = yaml.safe_load((Path(self.folder) / self.params).read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError(f"{self.params} in {self.folder} does not hold a mapping")
            return loaded
        return dict(self.params)


# -- checking responses ---------------------------------------------------------------------
class ResponseMismatch(AssertionError):
    """A WES or TES response is not what the API says it is."""


_WES_MODELS: list[tuple[str, re.Pattern[str], type[BaseModel]]] = [
    ("get", re.compile(r"/service-info"), ServiceInfo),
    ("post", re.compile(r"/runs"), RunId),
    ("get", re.compile(r"/runs"), RunListResponse),
    ("get", re.compile(r"/runs/[^/]+"), RunLog),
    ("get", re.compile(r"/runs/[^/]+/status"), RunStatus),
    ("post", re.compile(r"/runs/[^/]+/cancel"), RunId),
    ("get", re.compile(r"/runs/[^/]+/tasks"), TaskListResponse),
    ("get", re.compile(r"/runs/[^/]+/tasks/[^/]+"), TaskLog),
]
_TES_MODELS: list[tuple[str, re.Pattern[str], type[BaseModel] | None]] = [
    ("get", re.compile(r"/service-info"), None),
    ("post", re.compile(r"/tasks"), TesCreateTaskResponse),
    ("get", re.compile(r"/tasks"), TesListTasksResponse),
    ("get", re.compile(r"/tasks/[^/]+"), None),
    ("post", re.compile(r"/tasks/[^/]+:cancel"), None),
]


def _task_document(task: Any, where: str) -> None:
    if not isinstance(task, dict) or not isinstance(task.get("id"), str):
        raise ResponseMismatch(f"{where}: a TES task without an id: {task!r}")
    if task.get("state", "UNKNOWN") not in TASK_STATES:
        raise ResponseMismatch(f"{where}: TES task {task['id']} in state {task.get('state')!r}")


def check_response_models(
    api: str, method: str, path: str, status: int, body: bytes, content_type: str
) -> None:
    """The default :data:`ResponseCheck`: each WES and TES response of a known operation must
    parse as wes-bridge's own model of it, an error as ``{"msg", "status_code"}`` with its
    status. Other paths (log and output files) are not checked."""
    prefix, table = (WES_PREFIX, _WES_MODELS) if api == "wes" else (TES_PREFIX, _TES_MODELS)
    if not path.startswith(prefix):
        return
    relative = path[len(prefix) :] or "/"
    matched = [
        m for verb, pattern, m in table if verb == method.lower() and pattern.fullmatch(relative)
    ]
    if not matched:
        return
    where = f"{method.upper()} {path} {status}"
    if not content_type.startswith("application/json"):
        raise ResponseMismatch(f"{where}: content-type {content_type!r}, not JSON")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ResponseMismatch(f"{where}: the body is not JSON ({exc})") from exc
    if status >= 400:
        try:
            error = ErrorResponse.model_validate(data)
        except ValidationError as exc:
            raise ResponseMismatch(f"{where}: not an ErrorResponse: {exc}") from exc
        if error.status_code != status or not error.msg:
            raise ResponseMismatch(f"{where}: error body {data!r}")
        return
    model = matched[0]
    if model is not None:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            raise ResponseMismatch(f"{where}: not a {model.__name__}: {exc}") from exc
    if api == "tes" and method.lower() == "get":
        if relative == "/tasks":
            for task in data.get("tasks", []):
                _task_document(task, where)
        elif relative.startswith("/tasks/"):
            _task_document(data, where)
        elif not isinstance(data, dict) or not {"id", "name", "type"} <= set(data):
            raise ResponseMismatch(f"{where}: not a service-info object: {data!r}")


# -- a live node ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mappings merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class LiveNode:
    """A real ``wes-bridge serve`` in a process of its own, on loopback and a free port, with
    its data directory, config file and log under ``root``.

    ``config`` is merged into the node's config file (``{"engines": {...}}``,
    ``{"disabled_engines": [...]}``, ...); ``env`` is added to the environment of the node and
    of ``wes-bridge engines``. Every WES and TES response of :attr:`http` (and so of
    :meth:`wes`, :meth:`tes_client` and the helpers) goes through ``check``.
    """

    def __init__(
        self,
        root: Path,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        check: ResponseCheck | None = check_response_models,
        start_timeout: float = 120.0,
    ) -> None:
        self.root = Path(root)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.wes_url = self.url + WES_PREFIX
        self.tes_url = self.url + TES_PREFIX
        self.data_dir = self.root / "data"
        self.config_file = self.root / "node.yaml"
        self.log_file = self.root / "node.log"
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        defaults = {"cancel_grace_seconds": 2, "max_concurrent_runs": 4, "log_level": "info"}
        self.config = _merge(defaults, config or {})
        self._check = check
        self.http = httpx.Client(timeout=60, event_hooks={"response": [self._checked]})
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process ------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the node's process (:meth:`wait_ready` waits until it answers)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wes_bridge",
                    "serve",
                    "--config",
                    str(self.config_file),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        """Wait until the node answers ``GET /service-info``; raise with its log if it dies."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the node exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if self.http.get(self.wes_url + "/service-info", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the node did not answer in {self.start_timeout} s:\n{self.log()}")

    def start(self) -> None:
        """Start the node and wait until it answers; a node that does not is stopped."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel the runs that have not ended (their drivers would outlive the node), then
        stop the node: SIGTERM, and SIGKILL to its process group if it does not exit."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.cancel_unfinished()
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
            self.http.close()

    def __enter__(self) -> LiveNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, tail: int = 20000) -> str:
        """The end of the node's log."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    # -- HTTP ---------------------------------------------------------------------------------
    def _checked(self, response: httpx.Response) -> None:
        path = response.request.url.path
        api = "wes" if path.startswith(WES_PREFIX) else "tes" if path.startswith(TES_PREFIX) else ""
        if not api or self._check is None:
            return
        response.read()
        self._check(
            api,
            response.request.method,
            path,
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
        )

    def wes(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the node's WES (``path`` after ``/ga4gh/wes/v1``)."""
        return self.http.request(method, self.wes_url + path, **kwargs)

    def tes_client(self) -> TesClient:
        """A client of the node's embedded TES whose responses are checked too."""
        return TesClient(self.tes_url, client=self.http)

    def submit(
        self,
        workflow: ContractWorkflow,
        workflow_type: str,
        workflow_type_version: str,
        *,
        engine: str | None = None,
        engine_parameters: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``POST /runs`` of ``workflow`` with its files as ``workflow_attachment`` parts."""
        data = {
            "workflow_type": workflow_type,
            "workflow_type_version": workflow_type_version,
            "workflow_url": workflow.workflow,
            "workflow_params": json.dumps(workflow.workflow_params()),
            "workflow_engine_parameters": json.dumps(
                dict(workflow.engine_parameters if engine_parameters is None else engine_parameters)
            ),
            "tags": json.dumps(dict(tags or {})),
        }
        if engine:
            data["workflow_engine"] = engine
        files = [
            ("workflow_attachment", (name, content)) for name, content in workflow.attachments()
        ]
        return self.wes("POST", "/runs", data=data, files=files)

    def run_log(self, run_id: str) -> dict[str, Any]:
        response = self.wes("GET", f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(
        self, run_id: str, timeout: float, states: frozenset[str] = TERMINAL_STATES
    ) -> dict[str, Any]:
        """The run's log once its state is one of ``states``."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            response = self.wes("GET", f"/runs/{run_id}/status")
            assert response.status_code == 200, response.text
            state = response.json()["state"]
            if state in states:
                return self.run_log(run_id)
            time.sleep(0.2)
        raise AssertionError(
            f"run {run_id} is still {state} after {timeout:g} s\n{self.describe_run(run_id)}"
        )

    def tasks(self, run_id: str) -> list[dict[str, Any]]:
        """Every entry of ``GET /runs/{id}/tasks``, page after page."""
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"page_token": token} if token else {}
            response = self.wes("GET", f"/runs/{run_id}/tasks", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["task_logs"]
            token = page.get("next_page_token") or ""
            if not token:
                return found

    def text(self, url: str) -> str:
        """A log file the node serves (a run's or a task's ``stdout``/``stderr`` URL)."""
        response = self.http.get(url)
        assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text}"
        return response.text

    def describe_run(self, run_id: str) -> str:
        """The run's state, system logs and the end of its stderr, for assertion messages."""
        try:
            log = self.run_log(run_id)
            run_log = log.get("run_log") or {}
            stderr = self.text(run_log["stderr"])[-4000:] if run_log.get("stderr") else ""
        except (AssertionError, httpx.HTTPError, KeyError) as exc:
            return f"(the run's log could not be read: {exc})"
        return (
            f"state {log['state']}, exit code {run_log.get('exit_code')}\n"
            f"system_logs: {json.dumps(run_log.get('system_logs'), indent=1)}\n"
            f"stderr (end):\n{stderr}"
        )

    def cancel_unfinished(self, timeout: float = 60.0) -> None:
        """Cancel every run that has not ended and wait (up to ``timeout``) until they have."""
        response = self.wes("GET", "/runs", params={"page_size": 100})
        if response.status_code != 200:
            return
        open_runs = [
            r["run_id"] for r in response.json()["runs"] if r["state"] not in TERMINAL_STATES
        ]
        for run_id in open_runs:
            self.wes("POST", f"/runs/{run_id}/cancel")
        for run_id in open_runs:
            with contextlib.suppress(AssertionError):
                self.wait(run_id, timeout)

    def engines_listing(self) -> str:
        """What ``wes-bridge engines`` prints with this node's config file and environment."""
        done = subprocess.run(
            [sys.executable, "-m", "wes_bridge", "engines", "--config", str(self.config_file)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


# -- the contract ---------------------------------------------------------------------------
def load_adapter_class(engine: str) -> tuple[type[EngineAdapter], EntryPoint]:
    """The adapter class the ``wes_bridge.engines`` entry point ``engine`` names, loaded as
    the node loads it, and the entry point."""
    found = list(entry_points(group=ENTRY_POINT_GROUP, name=engine))
    assert found, f"no {ENTRY_POINT_GROUP!r} entry point named {engine!r} is installed"
    distributions = {ep.dist.name if ep.dist else "?" for ep in found}
    assert len(found) == 1, f"{engine!r} is registered by several distributions: {distributions}"
    [ep] = found
    loaded = ep.load()
    if not (isinstance(loaded, type) and issubclass(loaded, EngineAdapter)):
        raise AssertionError(
            f"entry point {engine} = {ep.value} is {loaded!r}, not an EngineAdapter subclass"
        )
    return loaded, ep


@dataclass(frozen=True)
class ContractRuns:
    """The class's node and the ids of the runs submitted to it at the start."""

    node: LiveNode
    hello: str
    failing: str
    slow: str


def _tes_task_id(tes_uri: str, tes_url: str) -> str:
    prefix = tes_url + "/tasks/"
    assert tes_uri.startswith(prefix), f"tes_uri {tes_uri} is not a task of the node's TES"
    return tes_uri[len(prefix) :]


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()  # noqa: S324 - the checksum format of WES outputs
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha1$" + digest.hexdigest()


class EngineContract:
    """Base class of an adapter's contract tests (see the module docstring).

    Set the class attributes without defaults; override the others where the engine needs it.
    The node's config and environment can also come from the class-scoped fixtures
    ``contract_node_config`` and ``contract_node_env``, which a subclass may override (e.g. to
    point at something a session fixture installed).
    """

    engine: ClassVar[str]
    """The entry-point name (the engine id) under test."""
    workflow_type: ClassVar[str]
    workflow_type_version: ClassVar[str]
    """The version the runs are submitted with; the adapter must declare it."""
    hello: ClassVar[ContractWorkflow]
    """Completes; its ``outputs`` are checked, and each of its steps must be a TES task."""
    failing: ClassVar[ContractWorkflow]
    """Has a step that exits non-zero (and writes ``stderr`` on its stderr, if given)."""
    slow: ClassVar[ContractWorkflow]
    """Has a step that runs long enough to be cancelled (a minute or more)."""

    workflow_type_versions: ClassVar[tuple[str, ...] | None] = None
    """The versions the adapter must declare (None: only ``workflow_type_version``)."""
    bad_parameters: ClassVar[Mapping[str, str]] = {"no_such_option": "1"}
    """``workflow_engine_parameters`` the adapter must refuse (400 naming every key)."""
    bad_workflow_type_version: ClassVar[str] = "0.0-no-such-version"
    min_steps: ClassVar[int] = 1
    """The least number of tasks ``hello`` must list."""
    nested_steps: ClassVar[bool] = False
    """True if the engine may list steps that run inside one of its TES tasks (entries of
    ``GET /runs/{id}/tasks`` without ``tes_uri``, reported through ``TaskReporter``), as
    Nextflow does without a TES executor plugin. At least one TES task is still required."""
    node_config: ClassVar[Mapping[str, Any]] = {}
    """Merged into the node's config file, e.g. ``{"engines": {"my-engine": {...}}}``."""
    node_env: ClassVar[Mapping[str, str]] = {}
    """Added to the environment of the node and of ``wes-bridge engines``."""
    run_timeout: ClassVar[float] = 600.0
    """Seconds each run may take (they run side by side on one node)."""
    task_start_timeout: ClassVar[float] = 180.0
    """Seconds the cancel test waits for a TES task of ``slow`` to be RUNNING."""
    cancel_timeout: ClassVar[float] = 60.0
    """Seconds from ``POST /runs/{id}/cancel`` to CANCELED."""

    # -- hooks ------------------------------------------------------------------------------
    def check_response(
        self, api: str, method: str, path: str, status: int, body: bytes, content_type: str
    ) -> None:
        """Called with every WES and TES response the contract receives (a
        :data:`ResponseCheck`); raise to fail the test. Default: :func:`check_response_models`."""
        check_response_models(api, method, path, status, body, content_type)

    def prerequisites(self) -> None:
        """Called before the node starts: skip (``pytest.skip``) or fail when the engine
        cannot run here. Default: skip when the adapter says it is not usable."""
        cls, _ = load_adapter_class(self.engine)
        settings = cls.settings_model.model_validate(self._engine_settings())
        availability = cls(settings).availability()
        if not availability.usable:
            pytest.skip(f"{self.engine} cannot run here: {availability.reason}")

    def _engine_settings(self) -> dict[str, Any]:
        engines = self.node_config.get("engines") or {}
        return dict(engines.get(self.engine) or {})

    # -- fixtures ---------------------------------------------------------------------------
    # Class-scoped fixtures are class methods: the test methods run on other instances.
    @pytest.fixture(scope="class")
    @classmethod
    def contract_node_config(cls) -> dict[str, Any]:
        """The config merged into the node's: :attr:`node_config` over
        :data:`CONTRACT_NODE_CONFIG`."""
        return _merge(dict(CONTRACT_NODE_CONFIG), cls.node_config)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_node_env(cls) -> dict[str, str]:
        """Environment added for the node (default: :attr:`node_env`)."""
        return dict(cls.node_env)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_node(
        cls,
        tmp_path_factory: pytest.TempPathFactory,
        contract_node_config: dict[str, Any],
        contract_node_env: dict[str, str],
    ) -> Iterator[LiveNode]:
        """One node for the whole class."""
        contract = cls()
        contract.prerequisites()
        root = tmp_path_factory.mktemp(f"contract-{cls.engine}")
        node = LiveNode(
            root, config=contract_node_config, env=contract_node_env, check=contract.check_response
        )
        with node:
            yield node

    @pytest.fixture(scope="class")
    @classmethod
    def contract_runs(cls, contract_node: LiveNode) -> ContractRuns:
        """``hello``, ``failing`` and ``slow``, submitted together, so that the class takes
        about as long as its longest run."""
        ids: dict[str, str] = {}
        for name in ("hello", "failing", "slow"):
            workflow: ContractWorkflow = getattr(cls, name)
            response = contract_node.submit(
                workflow,
                cls.workflow_type,
                cls.workflow_type_version,
                engine=cls.engine,
                tags={"contract": name},
            )
            assert response.status_code == 200, f"{name} was refused: {response.text}"
            ids[name] = str(response.json()["run_id"])
        return ContractRuns(contract_node, ids["hello"], ids["failing"], ids["slow"])

    # -- metadata ---------------------------------------------------------------------------
    def test_entry_point_loads_an_adapter(self) -> None:
        cls, ep = load_adapter_class(self.engine)
        assert cls.api_version == API_VERSION, (
            f"{cls.__name__} declares api_version {cls.api_version}; "
            f"this wes-bridge provides {API_VERSION}"
        )
        # The entry point's name is the adapter's id: the engine's name, or the engine's name
        # and a suffix for a further workflow type of one engine (toil, toil-wdl).
        assert ep.name == self.engine
        assert ep.name == cls.engine or (
            ep.name.startswith(cls.engine + "-") and len(ep.name) > len(cls.engine) + 1
        ), f"entry point {ep.name!r} is neither engine {cls.engine!r} nor it with a -suffix"
        assert cls.workflow_type == self.workflow_type
        assert isinstance(cls.workflow_type_versions, tuple)
        assert cls.workflow_type_versions
        wanted = self.workflow_type_versions or (self.workflow_type_version,)
        assert set(wanted) <= set(cls.workflow_type_versions), cls.workflow_type_versions
        assert ep.dist is not None, f"entry point {ep.name} belongs to no distribution"

    def test_adapter_models_and_defaults(self) -> None:
        cls, _ = load_adapter_class(self.engine)
        assert issubclass(cls.settings_model, EngineSettings)
        assert issubclass(cls.parameters_model, EngineParameters)
        settings = cls.settings_model.model_validate(self._engine_settings())
        json.dumps(settings.model_dump(mode="json"))
        adapter = cls(settings)
        version = adapter.engine_version()
        assert isinstance(version, str), f"engine_version() = {version!r}"
        assert version.strip(), "engine_version() is empty"
        # A run without parameters is valid, and service-info publishes every default.
        cls.parameters_model.model_validate({})
        for name, info in cls.parameters_model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            try:
                json.dumps(default)
            except TypeError as exc:
                raise AssertionError(f"parameter {name}: default {default!r}: {exc}") from exc

    def test_node_lists_the_engine(self, contract_runs: ContractRuns) -> None:
        cls, _ = load_adapter_class(self.engine)
        response = contract_runs.node.wes("GET", "/service-info")
        assert response.status_code == 200
        info = response.json()
        tags = info["tags"]
        assert f"engine.{self.engine}.load_error" not in tags, tags
        assert tags.get(f"engine.{self.engine}.usable") == "yes", tags
        offered = info["workflow_type_versions"][self.workflow_type]["workflow_type_version"]
        assert set(cls.workflow_type_versions) <= set(offered), offered
        engine_versions = info["workflow_engine_versions"][cls.engine]
        adapter = cls(cls.settings_model.model_validate(self._engine_settings()))
        assert adapter.engine_version() in engine_versions["workflow_engine_version"]
        published = {p["name"] for p in info["default_workflow_engine_parameters"]}
        assert set(cls.parameters_model.model_fields) <= published

    def test_engines_command_lists_the_engine(self, contract_runs: ContractRuns) -> None:
        _, ep = load_adapter_class(self.engine)
        assert ep.dist is not None
        listing = contract_runs.node.engines_listing()
        rows = [
            line
            for line in listing.splitlines()
            if line.split()[:2] == [self.engine, self.workflow_type]
        ]
        assert rows, f"no line for {self.engine} ({self.workflow_type}):\n{listing}"
        assert f"{ep.dist.name} {ep.dist.version}" in rows[0], rows[0]
        assert rows[0].split()[-1] == "yes", rows[0]

    # -- refusals ---------------------------------------------------------------------------
    def test_bad_parameters_are_refused(self, contract_runs: ContractRuns) -> None:
        response = contract_runs.node.submit(
            self.hello,
            self.workflow_type,
            self.workflow_type_version,
            engine=self.engine,
            engine_parameters=self.bad_parameters,
        )
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["status_code"] == 400
        for key in self.bad_parameters:
            assert key in error["msg"], f"the refusal does not name {key!r}: {error['msg']}"

    def test_bad_workflow_type_version_is_refused(self, contract_runs: ContractRuns) -> None:
        response = contract_runs.node.submit(
            self.hello, self.workflow_type, self.bad_workflow_type_version, engine=self.engine
        )
        assert response.status_code == 400, response.text
        assert self.bad_workflow_type_version in response.json()["msg"]

    # -- runs -------------------------------------------------------------------------------
    def test_slow_run_is_cancelled(self, contract_runs: ContractRuns) -> None:
        node, run_id = contract_runs.node, contract_runs.slow
        with node.tes_client() as tes:
            running = self._wait_for_running_task(node, tes, run_id)
            cancelled_at = time.monotonic()
            response = node.wes("POST", f"/runs/{run_id}/cancel")
            assert response.status_code == 200, response.text
            log = node.wait(run_id, self.cancel_timeout)
            assert log["state"] == "CANCELED", node.describe_run(run_id)
            assert time.monotonic() - cancelled_at <= self.cancel_timeout
            tasks = list(tes.iter_tasks(tags={RUN_TAG: run_id}, view="MINIMAL"))
        states = {t["id"]: t["state"] for t in tasks}
        assert running in states, f"TES task {running} is not tagged with run {run_id}"
        assert states[running] == "CANCELED", states
        left = {task_id: s for task_id, s in states.items() if s not in TERMINAL_STATES}
        assert not left, f"TES tasks of the cancelled run still going: {left}"

    def _wait_for_running_task(self, node: LiveNode, tes: TesClient, run_id: str) -> str:
        """The id of a RUNNING TES task of the run, once there is one."""
        deadline = time.monotonic() + self.task_start_timeout
        while time.monotonic() < deadline:
            state = node.wes("GET", f"/runs/{run_id}/status").json()["state"]
            assert state not in TERMINAL_STATES, (
                f"the slow run ended before it could be cancelled\n{node.describe_run(run_id)}"
            )
            if state == "RUNNING":
                for task in node.tasks(run_id):
                    if task.get("tes_uri"):
                        task_id = _tes_task_id(task["tes_uri"], node.tes_url)
                        if tes.get_task(task_id)["state"] == "RUNNING":
                            return task_id
            time.sleep(0.25)
        raise AssertionError(
            f"no TES task of run {run_id} was RUNNING after {self.task_start_timeout:g} s "
            f"(are its tasks tagged {RUN_TAG}?)\n{node.describe_run(run_id)}"
        )

    def test_hello_world_runs_on_the_tes(self, contract_runs: ContractRuns) -> None:
        node, run_id = contract_runs.node, contract_runs.hello
        log = node.wait(run_id, self.run_timeout)
        assert log["state"] == "COMPLETE", node.describe_run(run_id)
        assert log["run_log"].get("exit_code") == 0, log["run_log"]
        assert log["request"]["workflow_engine"] == self.engine
        outputs = log["outputs"]
        for key, checksum in self.hello.outputs.items():
            assert key in outputs, f"output {key!r} missing from {sorted(outputs)}"
            assert outputs[key].get("checksum") == checksum, (key, outputs[key])
            path = outputs[key].get("path")
            if path and Path(path).is_file():
                assert _sha1(Path(path)) == checksum, f"{path} does not have {checksum}"
        tasks = node.tasks(run_id)
        assert len(tasks) >= self.min_steps, f"{len(tasks)} task(s), {self.min_steps} wanted"
        with node.tes_client() as tes:
            on_tes = {t["id"]: t for t in tes.iter_tasks(tags={RUN_TAG: run_id}, view="BASIC")}
        listed = set()
        for task in tasks:
            if not task.get("tes_uri"):
                assert self.nested_steps, f"step {task['name']} is not a TES task: {task}"
                assert task.get("exit_code") == 0, task
                continue
            task_id = _tes_task_id(task["tes_uri"], node.tes_url)
            listed.add(task_id)
            assert task_id in on_tes, f"TES task {task_id} is not tagged {RUN_TAG}={run_id}"
            assert on_tes[task_id]["state"] == "COMPLETE", on_tes[task_id]
            assert task.get("exit_code") == 0, task
        assert listed, f"no step of run {run_id} was a TES task: {tasks}"
        assert listed == set(on_tes), (
            f"TES tasks of the run not listed as its tasks: {set(on_tes) - listed}"
        )

    def test_failure_is_reported(self, contract_runs: ContractRuns) -> None:
        node, run_id = contract_runs.node, contract_runs.failing
        log = node.wait(run_id, self.run_timeout)
        assert log["state"] == "EXECUTOR_ERROR", node.describe_run(run_id)
        exit_code = log["run_log"].get("exit_code")
        assert isinstance(exit_code, int), log["run_log"]
        assert exit_code != 0, log["run_log"]
        tasks = node.tasks(run_id)
        failed = [t for t in tasks if t.get("exit_code") not in (None, 0)]
        assert failed, f"no task of the failed run has a non-zero exit code: {tasks}"
        stderr = []
        for task in failed:
            assert task.get("stderr"), f"failed task {task['id']} has no stderr URL"
            stderr.append(node.text(task["stderr"]))
        if self.failing.stderr:
            assert any(self.failing.stderr in text for text in stderr), stderr
        with node.tes_client() as tes:
            for task in failed:
                if task.get("tes_uri"):
                    task_id = _tes_task_id(task["tes_uri"], node.tes_url)
                    assert tes.get_task(task_id)["state"] == "EXECUTOR_ERROR", task
