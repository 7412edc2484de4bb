"""Nextflow on the node: the adapter's parameters and configuration, its progress sources, and
real Nextflow runs through a node (the app on a real port with its embedded TES, every WES and
TES answer checked against the official documents).

Nextflow comes from scripts/install-nextflow (24.10.0 from Maven Central). Neither Nextflow TES
executor plugin (nf-ga4gh) nor nf-weblog can be had on this machine, so the runs here are the
one-task kind: Nextflow is one TES task, its processes run inside it, and the process tasks are
followed through their work directories. The weblog listener is tested with events of the
shape nf-weblog posts, sent over real HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError
from wes_bridge_nextflow import (
    NextflowAdapter,
    NextflowParameters,
    NextflowSettings,
    installation,
    node_config,
    plugin_id,
)
from wes_bridge_nextflow.progress import ProcessTasks, WeblogListener

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.plugin import DriverContext, RunSpec, TaskReporter, TesEndpoint

from .conftest import TERMINAL, WES, WORKFLOWS, SpecCheckedClient, free_port, nextflow_command

FIXTURES = Path(__file__).resolve().parent / "nextflow_fixtures"
TES = "/ga4gh/tes/v1"


# -- units ----------------------------------------------------------------------------------
def test_parameters_take_nextflow_options_and_refuse_others() -> None:
    params = NextflowParameters.model_validate(
        {"-profile": "test,docker", "-stub-run": None, "-resume": None, "-with-trace": None}
    )
    assert (params.profile, params.stub_run) == ("test,docker", True)
    assert NextflowParameters.model_validate({"entry": "ALT"}).entry == "ALT"
    for bad in ({"-bogus": "1"}, {"profile": "x; rm -rf /"}, {"entry": "1abc"}, {"x": 1}):
        with pytest.raises(ValidationError):
            NextflowParameters.model_validate(bad)


def test_plugin_id_takes_the_newest_version(tmp_path: Path) -> None:
    assert plugin_id(None, "nf-ga4gh") is None
    assert plugin_id(tmp_path, "nf-ga4gh") is None
    for name in ("nf-ga4gh-1.1.0", "nf-ga4gh-1.3.0", "nf-ga4gh-extra", "nf-amazon-2.0.0"):
        (tmp_path / name).mkdir()
    assert plugin_id(tmp_path, "nf-ga4gh") == "nf-ga4gh@1.3.0"
    assert plugin_id(tmp_path, "nf-weblog") is None


def test_installation_is_only_what_install_nextflow_made(tmp_path: Path) -> None:
    """What a sandboxing TES shows of a `nextflow` outside the system: scripts/install-nextflow's
    directory, never the parent of some other launcher (a ~/bin/nextflow would show ~)."""
    launcher = tmp_path / "home" / "bin" / "nextflow"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    assert installation(str(launcher)) is None
    assert installation(None) is None
    prefix = tmp_path / "prefix"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "bin").mkdir()
    (prefix / "bin" / "nextflow").write_text("#!/bin/sh\n")
    (prefix / "VERSION").write_text("24.10.0\n")
    link = tmp_path / "nextflow"
    link.symlink_to(prefix / "bin" / "nextflow")
    assert installation(str(link)) == prefix


@pytest.mark.integration
@pytest.mark.parametrize("plugin", [None, "nf-ga4gh@1.3.0"])
def test_node_config_is_valid_nextflow_configuration(tmp_path: Path, plugin: str | None) -> None:
    tes = TesEndpoint(
        "http://127.0.0.1:8080/ga4gh/tes/v1",
        "r1",
        True,
        False,
        token="tok'en-of-the-run",
        username="u",
        password="p'w",
    )
    text = node_config(
        outputs_dir=tmp_path / "out's",
        logs_dir=tmp_path / "logs",
        plugin=plugin,
        tes=tes,
        cpus=3,
        weblog_plugin="nf-weblog@1.0.0" if plugin else None,
    )
    # No credential in the file (quoted or not): Nextflow reads them from its environment.
    for secret in ("en-of-the-run", "p'w", "p\\'w"):
        assert secret not in text
    config = tmp_path / "node.config"
    config.write_text(text)
    done = subprocess.run(
        [nextflow_command(), "-c", str(config), "config", "-flat", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={
            **os.environ,
            **tes.credential_env(),
            "NXF_HOME": str(tmp_path / "home"),
            "NXF_OFFLINE": "true",
        },
    )
    assert done.returncode == 0, done.stderr
    flat = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    assert flat["params.outdir"] == "'" + str(tmp_path / "out\\'s") + "'"
    assert flat["trace.file"].endswith("trace.txt'")
    if plugin is None:
        assert flat["process.executor"] == "'local'"
        assert flat["executor.cpus"] == "3"
    else:
        assert flat["process.executor"] == "'tes'"
        assert flat["tes.endpoint"] == "'http://127.0.0.1:8080'"
        assert flat["tes.basicUsername"] == "'u'"
        assert flat["tes.basicPassword"] == "'p\\'w'"
        assert flat["tes.oauthToken"] == "'tok\\'en-of-the-run'"
        assert "nf-ga4gh@1.3.0" in flat["plugins"]
        assert "nf-weblog@1.0.0" in flat["plugins"]


def test_weblog_events_list_process_tasks(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    tasks = ProcessTasks(TaskReporter(events), tes_uri=lambda native: f"http://tes/tasks/{native}")
    work = tmp_path / "work" / "ab" / "cdef0123456789"
    work.mkdir(parents=True)
    (work / ".command.err").write_text("boom\n")
    trace = {"task_id": 1, "hash": "ab/cdef01", "name": "ALIGN (1)", "workdir": str(work)}
    with WeblogListener(tasks.handle) as weblog:
        # The path holds a secret: anything else is not found; a body that is no JSON is a 400.
        wrong = weblog.url.rsplit("/", 1)[0] + "/guess"
        assert httpx.post(wrong, json={"event": "started"}).status_code == 404
        assert httpx.post(weblog.url, content=b"{not json").status_code == 400
        for event in (
            {"event": "started", "runId": "r", "metadata": {}},
            {"event": "process_submitted", "trace": {**trace, "status": "SUBMITTED"}},
            {
                "event": "process_started",
                "trace": {**trace, "status": "RUNNING", "native_id": "1"},
            },
            {
                "event": "process_completed",
                "trace": {**trace, "status": "FAILED", "exit": 7, "native_id": "1"},
            },
            {"event": "process_completed", "trace": {**trace, "status": "FAILED", "exit": 7}},
        ):
            assert httpx.post(weblog.url, json=event).status_code == 204
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["event"] for r in records] == ["started", "finished"]  # each once
    started, finished = records
    assert started["id"] == "nf-abcdef0123456789"
    assert started["name"] == "ALIGN (1)"
    assert started["tes_uri"] == "http://tes/tasks/1"
    assert started["stderr"] == str(work / ".command.err")
    assert (finished["state"], finished["exit_code"]) == ("EXECUTOR_ERROR", 7)
    [failure] = tasks.failures
    assert "step ALIGN (1) (task nf-abcdef0123456789) exited with code 7" in failure.describe()
    assert failure.describe().endswith("stderr tail:\nboom")


def test_a_tes_that_cannot_run_nextflow_as_one_task_is_refused(tmp_path: Path) -> None:
    workflow = FIXTURES / "sleep" / "main.nf"
    run = RunSpec(
        run_id="r1",
        workflow_type="NFL",
        workflow_type_version="DSL2",
        workflow_url="main.nf",
        workflow_path=workflow,
        workflow_fragment=None,
        workflow_dir=workflow.parent,
        params={},
        engine_parameters=NextflowParameters(),
    )
    for name in ("outputs", "work"):
        (tmp_path / name).mkdir()
    for shared, containers in ((False, False), (True, True)):
        tes = TesEndpoint("http://127.0.0.1:9/ga4gh/tes/v1", "r1", shared, containers)
        ctx = DriverContext(
            run=run,
            run_dir=tmp_path,
            outputs_dir=tmp_path / "outputs",
            work_dir=tmp_path / "work",
            tasks=TaskReporter(tmp_path / "events.jsonl"),
            tes=tes,
        )
        outcome = NextflowAdapter(NextflowSettings(command="true")).drive(ctx)
        assert outcome.state == "SYSTEM_ERROR"
        assert "nf-ga4gh" in outcome.system_logs[0]


def test_with_the_tes_plugin_the_credentials_are_in_the_environment_not_the_run(
    tmp_path: Path,
) -> None:
    """The driver's side of the per-process way, with a stand-in for `nextflow` that records
    its environment (the real one cannot load nf-ga4gh here): the run's config file names the
    credentials' variables, Nextflow's environment holds them, and its home is the run's."""
    record = tmp_path / "seen"
    record.mkdir()
    fake = tmp_path / "nextflow"
    fake.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = -log ] || exit 0\n'
        f"env > {record}/env.txt\n"
        f'while [ "$1" != -c ]; do shift; done; cp "$2" {record}/config.txt\n'
    )
    fake.chmod(0o755)
    plugins = tmp_path / "plugins"
    (plugins / "nf-ga4gh-1.3.0").mkdir(parents=True)
    workflow = FIXTURES / "sleep" / "main.nf"
    run = RunSpec(
        run_id="r1",
        workflow_type="NFL",
        workflow_type_version="DSL2",
        workflow_url="main.nf",
        workflow_path=workflow,
        workflow_fragment=None,
        workflow_dir=workflow.parent,
        params={},
        engine_parameters=NextflowParameters(),
    )
    run_dir = tmp_path / "run"
    for name in ("outputs", "work"):
        (run_dir / name).mkdir(parents=True)
    token = "the-run's-tes-token"
    tes = TesEndpoint("http://127.0.0.1:9/ga4gh/tes/v1", "r1", True, False, token=token)
    ctx = DriverContext(
        run=run,
        run_dir=run_dir,
        outputs_dir=run_dir / "outputs",
        work_dir=run_dir / "work",
        tasks=TaskReporter(run_dir / "events.jsonl"),
        tes=tes,
    )
    settings = NextflowSettings(command=str(fake), plugins_dir=plugins)
    outcome = NextflowAdapter(settings).drive(ctx)
    assert outcome.state == "COMPLETE", outcome.system_logs
    assert "through nf-ga4gh@1.3.0" in outcome.system_logs[0]
    config = (record / "config.txt").read_text()
    assert "tes.oauthToken = System.getenv('WES_BRIDGE_TES_TOKEN')" in config
    env = dict(
        line.split("=", 1) for line in (record / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["WES_BRIDGE_TES_TOKEN"] == token
    assert env["HOME"] == env["NXF_HOME"] == str(run_dir / "work" / "nextflow-home")
    # Nothing the driver left in the run directory holds the token.
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"tes-token" not in path.read_bytes(), path


# -- through a node -------------------------------------------------------------------------
def _attachments(folder: Path) -> list[tuple[str, bytes]]:
    return [
        (path.relative_to(folder).as_posix(), path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "expected.json"
    ]


def _submit(
    node: SpecCheckedClient,
    folder: Path,
    params: dict[str, Any] | None = None,
    engine_parameters: dict[str, Any] | None = None,
) -> str:
    response = node.submit(
        "main.nf",
        params,
        attachments=_attachments(folder),
        workflow_type="NFL",
        workflow_type_version="DSL2",
        workflow_url="main.nf",
        workflow_engine_parameters=json.dumps(engine_parameters or {}),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["run_id"])


def _tasks(node: SpecCheckedClient, run_id: str) -> list[dict[str, Any]]:
    return list(node.get(f"{WES}/runs/{run_id}/tasks").json()["task_logs"])


def _state(task_log: dict[str, Any]) -> str | None:
    for line in task_log.get("system_logs") or []:
        if line.startswith("state: "):
            return str(line.removeprefix("state: "))
    return None


def _processes_under(run_dir: Path) -> list[psutil.Process]:
    """Processes whose working directory or command line is inside the run directory."""
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        cwd = proc.info.get("cwd")
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if (cwd and (Path(cwd) == run_dir or run_dir in Path(cwd).parents)) or str(
            run_dir
        ) in cmdline:
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpecCheckedClient]:
    nextflow_command()
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("node") / "data",
        port=free_port(),
        max_concurrent_runs=4,
        cancel_grace_seconds=5,
        tes={"cpu_cores": 4, "cancel_grace_seconds": 5},
    )
    with SpecCheckedClient(create_app(settings)) as client:
        yield client
        for run in client.get(f"{WES}/runs", params={"page_size": 100}).json()["runs"]:
            if run["state"] not in TERMINAL:  # leave nothing running behind
                client.post(f"{WES}/runs/{run['run_id']}/cancel")
                client.wait(run["run_id"], timeout=60)


@pytest.mark.integration
def test_service_info_says_how_nextflow_runs(node: SpecCheckedClient) -> None:
    info = node.get(f"{WES}/service-info").json()
    assert info["workflow_type_versions"]["NFL"]["workflow_type_version"] == ["DSL2"]
    assert "nextflow" in info["workflow_engine_versions"]
    described = json.dumps(info["tags"])
    assert "one task on the node's TES" in described


@pytest.mark.integration
def test_cancel_stops_nextflow_and_its_task(node: SpecCheckedClient) -> None:
    run_id = _submit(node, FIXTURES / "sleep", {"seconds": 600})
    # The process task is listed while it runs, its logs readable.
    deadline = time.monotonic() + 300
    running: list[dict[str, Any]] = []
    while not running and time.monotonic() < deadline:
        running = [
            t for t in _tasks(node, run_id) if t["id"].startswith("nf-") and _state(t) == "RUNNING"
        ]
        time.sleep(0.2)
    assert running, _tasks(node, run_id)
    [task] = running
    assert task["name"] == "SLEEP"
    assert node.get(task["stderr"]).status_code == 200
    run_dir = Path(node.app.state.node.settings.runs_dir) / run_id
    assert _processes_under(run_dir), "Nextflow should be running in the run directory"

    assert node.post(f"{WES}/runs/{run_id}/cancel").status_code == 200
    assert node.wait(run_id, timeout=120) == "CANCELED"
    [driver] = [t for t in _tasks(node, run_id) if t.get("tes_uri")]
    assert node.get(driver["tes_uri"]).json()["state"] == "CANCELED"
    deadline = time.monotonic() + 30
    while _processes_under(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_under(run_dir), "Nextflow and its processes should be gone"


@pytest.mark.integration
def test_outputs_are_the_published_files_and_nothing_from_outside(
    node: SpecCheckedClient,
) -> None:
    run_id = _submit(node, FIXTURES / "links", {"outdir": "/tmp/elsewhere"})
    assert node.wait(run_id, timeout=600) == "COMPLETE"
    log = node.get(f"{WES}/runs/{run_id}").json()
    outputs = log["outputs"]
    # Published as links into the work directory; the outputs hold the files themselves.
    assert sorted(outputs) == ["bundle/a.txt", "bundle/inner/b.txt", "result.txt"]
    for rel, output in outputs.items():
        path = Path(output["path"])
        assert path.is_file(), rel
        assert not path.is_symlink(), rel
    assert Path(outputs["result.txt"]["path"]).read_text() == "result\n"
    system_logs = "\n".join(log["run_log"]["system_logs"])
    assert "params.outdir '/tmp/elsewhere' was replaced" in system_logs
    assert "links out of the run left out of the outputs: escape.txt" in system_logs
    assert not Path("/tmp/elsewhere").exists()
    # Nextflow's trace is kept with the run, and lists the process.
    run_dir = Path(node.app.state.node.settings.runs_dir) / run_id
    assert "MAKE" in (run_dir / "logs" / "trace.txt").read_text()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("engine_parameters", "params", "expected"),
    [
        ({"bogus": "1"}, {}, "bogus"),
        ({"-with-docker": "ubuntu"}, {}, "-with-docker"),
        ({"profile": "a b"}, {}, "profile"),
    ],
)
def test_bad_requests_are_refused(
    node: SpecCheckedClient, engine_parameters: dict[str, Any], params: Any, expected: str
) -> None:
    response = node.submit(
        "main.nf",
        params,
        attachments=_attachments(WORKFLOWS / "nextflow" / "hello"),
        workflow_type="NFL",
        workflow_type_version="DSL2",
        workflow_url="main.nf",
        workflow_engine_parameters=json.dumps(engine_parameters),
    )
    assert response.status_code == 400, response.text
    assert expected in response.json()["msg"]


@pytest.mark.integration
def test_a_run_whose_driver_is_lost_resumes_with_what_had_completed(
    node: SpecCheckedClient, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    run_id = _submit(node, FIXTURES / "resume", {"go": str(go)})
    deadline = time.monotonic() + 300
    waiting: list[dict[str, Any]] = []
    while not waiting and time.monotonic() < deadline:
        waiting = [
            t for t in _tasks(node, run_id) if t["name"] == "SECOND" and _state(t) == "RUNNING"
        ]
        time.sleep(0.2)
    assert waiting, _tasks(node, run_id)
    store = node.app.state.node.store
    record = store.get_run(run_id)
    first_driver = record.driver_pid
    # The driver is lost (killed, as the OOM killer or a reboot would); Nextflow goes on in its
    # TES task until the node notices.
    os.kill(first_driver, 9)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = store.get_run(run_id)
        if record.driver_pid not in (None, first_driver) and record.state == "RUNNING":
            break
        time.sleep(0.2)
    assert record.driver_pid not in (None, first_driver), record
    go.touch()
    assert node.wait(run_id, timeout=600) == "COMPLETE"
    log = node.get(f"{WES}/runs/{run_id}").json()
    assert sorted(log["outputs"]) == ["first.txt", "second.txt"]
    assert Path(log["outputs"]["second.txt"]["path"]).read_text() == "first\nsecond\n"
    assert any("resumed (start 2)" in line for line in log["run_log"]["system_logs"])
    tasks = _tasks(node, run_id)
    drivers = [t for t in tasks if t.get("tes_uri")]
    assert [_state(t) for t in drivers] == ["CANCELED", "COMPLETE"], drivers
    # FIRST ran once (the resumed Nextflow took it from its cache); the SECOND that was
    # running when the driver was lost ended with it, and ran again.
    assert [_state(t) for t in tasks if t["name"] == "FIRST"] == ["COMPLETE"]
    assert sorted(_state(t) or "" for t in tasks if t["name"] == "SECOND") == [
        "CANCELED",
        "COMPLETE",
    ]
    run_dir = Path(node.app.state.node.settings.runs_dir) / run_id
    trace = (run_dir / "logs" / "trace.txt").read_text()
    assert "CACHED" in trace, trace


def test_validate_wants_the_pipeline_among_the_attachments(tmp_path: Path) -> None:
    folder = tmp_path / "workflow"
    folder.mkdir()
    outside = tmp_path / "main.nf"
    outside.write_text("workflow {}\n")
    (folder / "link.nf").symlink_to(outside)

    def spec(url: str, params: Any) -> RunSpec:
        return RunSpec(
            "r1", "NFL", "DSL2", url, folder / url, None, folder, params, NextflowParameters()
        )

    adapter = NextflowAdapter(NextflowSettings())
    assert adapter.validate(spec("missing.nf", {})) == [
        "the pipeline 'missing.nf' is not a file of the run"
    ]
    assert adapter.validate(spec("link.nf", [])) == [
        "the pipeline 'link.nf' is not among the attachments",
        "workflow_params must be a JSON object (the pipeline's params)",
    ]
