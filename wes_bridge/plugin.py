"""The public API that workflow-engine adapters are written against (plugin API version 1).

An engine adapter teaches wes-bridge to run one workflow language with one engine: a subclass
of :class:`EngineAdapter` published in the ``wes_bridge.engines`` entry-point group of its own
distribution. The built-in adapters register the same way a third-party one does.

``docs/plugins.md`` is the guide: what is public and stable under :data:`API_VERSION` (every
name in ``__all__`` here, the TES client of :mod:`wes_bridge.tes.client`, the TES models of
:mod:`wes_bridge.tes.models` and the contract tests of :mod:`wes_bridge.testing`), the life of
a run, how steps become TES tasks, outputs, errors, packaging, and a worked example that the
test suite installs and runs.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from .errors import BadRequest
from .results import Signature, describe_outputs, materialise_links, mirror, publish, snapshot
from .tes.paths import link_or_copy

if TYPE_CHECKING:
    from .tes.client import AsyncTesClient, TesClient

__all__ = [
    "API_VERSION",
    "RUN_TAG",
    "STEP_TAG",
    "Availability",
    "DriverContext",
    "DriverOutcome",
    "EngineAdapter",
    "EngineParameters",
    "EngineSettings",
    "FinalState",
    "InvalidRunRequest",
    "RunSpec",
    "Signature",
    "TaskReporter",
    "TesEndpoint",
    "describe_outputs",
    "flag_value",
    "from_command_line",
    "link_or_copy",
    "materialise_links",
    "mirror",
    "publish",
    "snapshot",
]

API_VERSION = 1
"""Version of this plugin API. An adapter declaring another ``api_version`` is not loaded.

It changes only when an adapter written for the previous version could break: a public name
removed or renamed, a signature or meaning changed, a new abstract method. Additions (a new
optional attribute, a new field of :class:`DriverContext`, a new helper) keep it."""

FinalState = Literal["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"]


class InvalidRunRequest(BadRequest, ValueError):
    """A run request this adapter refuses: raise it from :meth:`EngineAdapter.validate` (or
    return the problems from there) and the client gets a 400 with the message.

    A ``ValueError`` too, so that raised in a validator of :class:`EngineParameters` it is
    reported like any invalid parameter (a 400 naming the key)."""


class EngineSettings(BaseModel):
    """Base of an adapter's operator settings (``engines.<engine id>`` in the config file).

    Subclass it and set :attr:`EngineAdapter.settings_model`. Unknown keys are refused when the
    node starts, so a typo in the config file is reported, not ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


_FALSE = frozenset({"false", "0", "no", "off", "n", "f"})


def flag_value(value: Any) -> bool:
    """A command-line flag's value as WES clients send it: a bare flag (``null``) is set;
    ``"false"``, ``"0"``, ``"no"``, ``"off"`` are not; anything else is."""
    return value is None or str(value).strip().lower() not in _FALSE


def from_command_line(
    data: Any, prefix: str, option: Callable[[str, Any], dict[str, Any] | None]
) -> Any:
    """For a ``mode="before"`` validator of :class:`EngineParameters`: take the engine's own
    command-line options, the form some WES clients send (Toil's forwards its unknown flags as
    ``{"--flag": null, "--key": "value"}``).

    Keys starting with ``prefix`` are options: ``option(name, value)``, ``name`` without its
    leading dashes, returns the fields it sets (``{}``: accepted and ignored, for options the
    node decides), or None for an option it does not know, which is kept under its own name and
    so refused like any unknown key. Other keys pass as they are.
    """
    if not isinstance(data, dict):
        return data
    result: dict[str, Any] = {}
    for key, value in data.items():
        if not (isinstance(key, str) and key.startswith(prefix)):
            result[key] = value
            continue
        fields = option(key.lstrip("-"), value)
        if fields is None:
            result[key] = value
        else:
            result.update(fields)
    return result


class EngineParameters(BaseModel):
    """Base of an adapter's per-run ``workflow_engine_parameters``.

    WES sends every value as a string; pydantic's lax mode turns ``"true"``/``"4"`` into the
    declared types. Unknown keys are refused with a 400 that names them. Field defaults and
    types are published in service-info as ``default_workflow_engine_parameters``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Availability:
    """Whether an adapter's engine can run on this machine, and why not when it cannot."""

    usable: bool
    reason: str = ""


@dataclass(frozen=True)
class RunSpec:
    """One run as the adapter sees it: the validated request, already staged on disk."""

    run_id: str
    workflow_type: str
    workflow_type_version: str
    workflow_url: str
    """What the client sent (a relative attachment path or a URL)."""
    workflow_path: Path
    """The primary workflow file inside :attr:`workflow_dir`."""
    workflow_fragment: str | None
    """The part after ``#`` in ``workflow_url`` (e.g. ``main`` of a packed CWL), if any."""
    workflow_dir: Path
    """Attachments (and the fetched workflow) live here; relative inputs resolve against it."""
    params: dict[str, Any]
    engine_parameters: EngineParameters
    tags: dict[str, str] = field(default_factory=dict)

    def workflow_file_problems(self, what: str) -> list[str]:
        """For :meth:`EngineAdapter.validate`: the primary workflow file (called ``what`` in
        the messages, e.g. "the Snakefile") must be a file among the attachments."""
        if not self.workflow_path.is_file():
            return [f"{what} {self.workflow_url!r} is not a file of the run"]
        if not self.workflow_path.resolve().is_relative_to(self.workflow_dir.resolve()):
            return [f"{what} {self.workflow_url!r} is not among the attachments"]
        return []


class TaskReporter:
    """Tells the core about steps of a run that are not TES tasks of their own, so
    ``GET /runs/{id}/tasks`` lists them too (e.g. Nextflow's processes inside one TES task).

    A task submitted to :attr:`DriverContext.tes` with :meth:`TesEndpoint.task_tags` needs no
    report: the node follows the run's TES tasks and lists them with their ``tes_uri``.

    Events are appended to a JSON-lines file in the run directory that the core reads while the
    run goes on (and again after a restart), so reporting never blocks the engine on the server.
    """

    def __init__(self, events_path: Path) -> None:
        self._path = events_path

    def log_paths(self, task_id: str) -> tuple[Path, Path]:
        """Files (stdout, stderr) in the run directory where a step's logs may be kept.

        The folder is created; the core serves these files through the task's log URLs.
        """
        folder = self._path.parent / "tasks" / task_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "stdout", folder / "stderr"

    def _emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        # One write() of an O_APPEND file per event: concurrent steps never interleave lines.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def started(
        self,
        task_id: str,
        name: str,
        cmd: list[str] | None = None,
        stdout: Path | None = None,
        stderr: Path | None = None,
        tes_uri: str | None = None,
    ) -> None:
        """A step has started. ``stdout``/``stderr`` name files the step writes, if any."""
        self._emit(
            {
                "event": "started",
                "id": task_id,
                "name": name,
                "cmd": cmd or [],
                "time": time.time(),
                "stdout": str(stdout) if stdout else None,
                "stderr": str(stderr) if stderr else None,
                "tes_uri": tes_uri,
            }
        )

    def finished(
        self,
        task_id: str,
        state: str,
        exit_code: int | None = None,
        system_logs: list[str] | None = None,
    ) -> None:
        """A step has ended in ``state`` (a WES/TES state name such as ``COMPLETE``)."""
        self._emit(
            {
                "event": "finished",
                "id": task_id,
                "state": state,
                "exit_code": exit_code,
                "time": time.time(),
                "system_logs": system_logs or [],
            }
        )


RUN_TAG = "wes_run_id"
"""The TES tag that names a task's run: the node lists and cancels a run's tasks by it."""
STEP_TAG = "wes_step"
"""The TES tag that names a task's step (its name in ``GET /runs/{id}/tasks``)."""


@dataclass(frozen=True)
class TesEndpoint:
    """The node's TES, as a driver submits the run's steps to it.

    Every task a driver submits must carry :meth:`task_tags`: the core finds a run's tasks by
    them (``GET /runs/{id}/tasks``) and cancels them with the run.
    """

    url: str
    """The TES API (``.../ga4gh/tes/v1``): the node's embedded TES or the external one."""
    run_id: str
    shared_filesystem: bool
    """True when the TES executes on a file system that holds the run directory at the same
    path (the embedded TES; an external one the operator declared so): ``file://`` URLs into
    the run directory work as task inputs and outputs, and tools may read files in place."""
    uses_containers: bool
    """Whether executors run in their image (False: on the host, the image recorded only)."""
    description: str = ""
    """How the TES executes tasks, for the run's log."""
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def task_tags(self, step: str, **extra: str) -> dict[str, str]:
        """The tags a task of this run carries: the run id, the step's name, and ``extra``."""
        return {RUN_TAG: self.run_id, STEP_TAG: step, **extra}

    def client(self, **options: Any) -> TesClient:
        """A blocking client for this TES (see :class:`wes_bridge.tes.client.TesClient`)."""
        from .tes.client import TesClient

        return TesClient(
            self.url,
            token=self.token,
            username=self.username,
            password=self.password,
            **options,
        )

    def async_client(self, **options: Any) -> AsyncTesClient:
        """An asyncio client for this TES (:class:`wes_bridge.tes.client.AsyncTesClient`)."""
        from .tes.client import AsyncTesClient

        return AsyncTesClient(
            self.url,
            token=self.token,
            username=self.username,
            password=self.password,
            **options,
        )

    def credential_env(self, prefix: str = "WES_BRIDGE_TES_") -> dict[str, str]:
        """Environment variables that carry this endpoint to a process the engine starts
        (read back with :meth:`from_env`). The credentials are included: pass them only to
        processes of the run."""
        env = {
            f"{prefix}URL": self.url,
            f"{prefix}RUN_ID": self.run_id,
            f"{prefix}SHARED_FILESYSTEM": "1" if self.shared_filesystem else "0",
            f"{prefix}USES_CONTAINERS": "1" if self.uses_containers else "0",
        }
        for key, value in (
            ("TOKEN", self.token),
            ("USERNAME", self.username),
            ("PASSWORD", self.password),
        ):
            if value:
                env[prefix + key] = value
        return env

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, prefix: str = "WES_BRIDGE_TES_"
    ) -> TesEndpoint | None:
        """The endpoint :meth:`credential_env` put in the environment, or None."""
        env = os.environ if environ is None else environ
        url = env.get(prefix + "URL")
        if not url:
            return None
        return cls(
            url=url,
            run_id=env.get(prefix + "RUN_ID", ""),
            shared_filesystem=env.get(prefix + "SHARED_FILESYSTEM") == "1",
            uses_containers=env.get(prefix + "USES_CONTAINERS") == "1",
            token=env.get(prefix + "TOKEN") or None,
            username=env.get(prefix + "USERNAME") or None,
            password=env.get(prefix + "PASSWORD") or None,
        )


@dataclass(frozen=True)
class DriverContext:
    """Everything :meth:`EngineAdapter.drive` may use. New fields may be added; none removed."""

    run: RunSpec
    run_dir: Path
    outputs_dir: Path
    """Where final outputs go; the core serves and checksums nothing outside it."""
    work_dir: Path
    """Scratch space for the engine (intermediate files, TMPDIR); kept for debugging."""
    tasks: TaskReporter
    tes: TesEndpoint | None = None
    """The node's TES, where the run's steps are to be submitted (None only where a node
    runs without one, e.g. tests of the core)."""
    resumed: int = 0
    """How many times this run was started again after its driver was lost (the machine
    restarted, the driver was killed) before it ended: 0 at the first start. Only adapters with
    :attr:`EngineAdapter.supports_resume` are started again; the run directory is as the lost
    driver left it, so the engine can keep the work that had completed."""


@dataclass
class DriverOutcome:
    """How a run ended, as the engine saw it."""

    state: FinalState
    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    cmd: list[str] = field(default_factory=list)
    system_logs: list[str] = field(default_factory=list)


class EngineAdapter(ABC):
    """Base class of every engine adapter.

    Class attributes describe the adapter; the core checks them when the plugin loads and
    reports a plugin that gets them wrong by name, then starts without it.
    """

    api_version: ClassVar[int] = API_VERSION
    engine: ClassVar[str]
    """The engine's name, e.g. ``cwltool``: what clients send as ``workflow_engine``. The
    entry point's name (the adapter's id: its settings, ``disabled_engines``, the run record) is
    this name, or this name and a ``-suffix`` for a further workflow type of the same engine
    (``toil`` and ``toil-wdl``)."""
    workflow_type: ClassVar[str]
    """WES ``workflow_type`` this adapter runs, e.g. ``CWL``."""
    workflow_type_versions: ClassVar[tuple[str, ...]]
    """Accepted ``workflow_type_version`` values, e.g. ``("v1.0", "v1.1", "v1.2")``."""
    settings_model: ClassVar[type[EngineSettings]] = EngineSettings
    parameters_model: ClassVar[type[EngineParameters]] = EngineParameters
    supports_resume: ClassVar[bool] = False
    """True if :meth:`drive` can pick up a run whose earlier driver was lost (e.g. the machine
    restarted): the node then starts the run again (up to ``resume_attempts`` times) with
    :attr:`DriverContext.resumed` set, after cancelling the TES tasks the lost driver left.
    False: such a run ends SYSTEM_ERROR."""
    warm_modules: ClassVar[tuple[str, ...]] = ()
    """Modules imported once in the warm driver process (import-time warm-up is allowed)."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    @abstractmethod
    def engine_version(self) -> str:
        """The version of the engine this adapter drives, as WES reports it."""

    def availability(self) -> Availability:
        """Whether the engine can run here. Called by ``wes-bridge engines`` and service-info."""
        return Availability(True)

    def sandbox_read_only(self) -> tuple[Path, ...]:
        """Host paths this engine's TES tasks must be able to read where the embedded TES runs
        them in its sandbox (``tes.backend: host-sandbox``): an installation of the engine or
        its runtime outside the system directories, ``PATH`` and the node's Python (e.g. a
        Java and a launcher in the node user's home). Shown read-only to every sandboxed task;
        default none. Asked once when the node starts."""
        return ()

    def validate(self, run: RunSpec) -> list[str]:
        """Cheap checks in the server before the run is queued; each string becomes a 400."""
        return []

    @abstractmethod
    def drive(self, ctx: DriverContext) -> DriverOutcome:
        """Run the workflow to the end, in the driver process, and say how it ended.

        The driver is a process of its own (its own process group, working in
        :attr:`DriverContext.run_dir`, stdout and stderr going to the run's logs); cancelling
        the run signals the whole group (SIGTERM, then SIGKILL) and cancels the run's TES
        tasks. An exception is recorded as the run's SYSTEM_ERROR. See ``docs/plugins.md``."""
