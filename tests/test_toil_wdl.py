"""Toil's WDL runner on TES: the ``toil-wdl`` adapter (engine ``toil``, workflow type WDL).

The integration tests go through one real ``wes-bridge serve``: the four WDL test-workflows and
a sleeping workflow (cancelled) are submitted together with ``workflow_engine=toil``, so that
Toil's slow start-ups overlap, and each is checked against its expected.json: every step a
COMPLETE TES task of the run whose command ran on the host, the outputs those of the other
languages. The unit tests at the end need no node.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from wes_bridge.plugin import DriverContext, RunSpec, TaskReporter, TesEndpoint

from .conftest import TERMINAL, WORKFLOWS
from .live_server import Server, free_port
from .spec_check import check_response, tes_api
from .test_workflows_direct import TOOLS, _check_file, _check_variants, _expected
from .test_workflows_wes import _tasks, _wait

CASES = ("wdl/hello", "wdl/fanout", "wdl/fail", "wdl/variant-calling")
RUN_TIMEOUT = 600  # Toil is slow to start, and this machine is shared
TES = "/ga4gh/tes/v1"
# A task that sleeps until the run is cancelled; the number marks its process.
SLEEP_WDL = """version 1.0

workflow sleepy {
  call nap
}

task nap {
  command <<<
    sleep 3171
  >>>
}
"""


@dataclass
class Node:
    server: Server
    runs: dict[str, str]
    """Run id by case (and "sleep")."""
    submitted: float


def _attachments(case: str) -> list[tuple[str, tuple[str, bytes]]]:
    folder = WORKFLOWS / case
    return [
        ("workflow_attachment", (p.relative_to(folder).as_posix(), p.read_bytes()))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "expected.json"
    ]


def _submit(server: Server, files: list[Any], **fields: str) -> httpx.Response:
    data = {"workflow_type": "WDL", "workflow_type_version": "1.0", "workflow_engine": "toil"}
    return server.request("POST", "/runs", data={**data, **fields}, files=files)


def _tools_missing() -> bool:
    return any(shutil.which(tool) is None for tool in TOOLS)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("toil-wdl")
    # Toil's tasks are mostly a Python start-up, waiting on the leader: let the TES run more of
    # them at once than this machine has cores (the sleeping one holds one until cancelled).
    server = Server(base / "data", free_port(), env={"WES_BRIDGE_TES__CPU_CORES": "8"})
    server.start()
    runs: dict[str, str] = {}
    try:
        response = _submit(
            server,
            [("workflow_attachment", ("sleep.wdl", SLEEP_WDL.encode()))],
            workflow_url="sleep.wdl",
        )
        assert response.status_code == 200, response.text
        runs["sleep"] = response.json()["run_id"]
        for case in CASES:
            if case == "wdl/variant-calling" and _tools_missing():
                continue
            expected = _expected(case)
            params = yaml.safe_load((WORKFLOWS / case / expected["params"]).read_text())
            fields = {
                "workflow_url": expected["workflow"],
                "workflow_params": json.dumps(params),
                "tags": json.dumps({"case": case}),
            }
            if "failed_step" in expected:
                # Toil's command-line form; no retry, so that the step fails once.
                fields["workflow_engine_parameters"] = json.dumps(
                    {"--retryCount": "0", "--wdlStrict": "false", "--logInfo": None}
                )
            response = _submit(server, _attachments(case), **fields)
            assert response.status_code == 200, response.text
            runs[case] = response.json()["run_id"]
        yield Node(server, runs, time.monotonic())
    finally:
        for run_id in runs.values():  # never leave a Toil leader going on without its node
            state = server.get(f"/runs/{run_id}/status").json()["state"]
            if state not in TERMINAL:
                server.request("POST", f"/runs/{run_id}/cancel")
        server.stop(signal.SIGTERM)


def _tes_task(server: Server, task_log: dict[str, Any], view: str = "FULL") -> dict[str, Any]:
    """The TES task behind a run's task log, its response checked against the TES document."""
    uri = task_log["tes_uri"]
    assert uri == f"http://127.0.0.1:{server.port}{TES}/tasks/{task_log['id']}", uri
    response = httpx.get(uri, params={"view": view}, timeout=30)
    assert check_response(
        tes_api(),
        "GET",
        f"{TES}/tasks/{task_log['id']}",
        response.status_code,
        response.content,
        response.headers.get("content-type", ""),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _check_task(server: Server, run_id: str, task: dict[str, Any], state: str) -> None:
    """A task of the run: one Toil job that ran a WDL command, a TES task of the run."""
    assert f"state: {state}" in task["system_logs"], task
    assert task["name"].endswith(".command"), task["name"]
    assert task["cmd"][1:3] == ["-m", "toil_wes_bridge.wdl_worker"], task["cmd"]
    tes_task = _tes_task(server, task)
    assert tes_task["state"] == state
    assert tes_task["tags"]["wes_run_id"] == run_id
    assert tes_task["tags"]["wes_step"] == task["name"]
    assert tes_task["tags"]["toil_job"].startswith("kind-WDLTaskJob/")


def _check_output(got: Any, want: Any, outputs_dir: Path, rel: str) -> None:
    """One WDL output: a File object (or a list of them) like expected.json's, its file in the
    run's outputs at ``rel`` (``<output>/<basename>``, ``<output>/<index>/<basename>``)."""
    if isinstance(want, list):
        assert isinstance(got, list)
        assert len(got) == len(want)
        for index, (item, wanted) in enumerate(zip(got, want, strict=True)):
            _check_output(item, wanted, outputs_dir, f"{rel}/{index}")
        return
    assert got["class"] == "File"
    assert got["basename"] == want["basename"]
    path = outputs_dir / rel / want["basename"]
    assert got["path"] == str(path)
    assert got["location"] == path.as_uri()
    assert got["size"] == path.stat().st_size
    if "checksum" in want:
        assert (got["checksum"], got["size"]) == (want["checksum"], want["size"]), rel
    _check_file(path, want)


# -- runs through the node -------------------------------------------------------------------
@pytest.mark.integration
def test_service_info_offers_wdl_under_the_toil_engine(node: Node) -> None:
    info = node.server.get("/service-info").json()
    assert info["workflow_type_versions"]["WDL"]["workflow_type_version"] == ["1.0", "1.1"]
    assert info["workflow_engine_versions"]["toil"] == {
        "workflow_engine_version": [version("toil")]
    }
    assert "toil-wdl" not in info["workflow_engine_versions"]
    assert info["tags"]["engine.toil-wdl.usable"] == "yes"
    assert "runs the command on the host" in info["tags"]["engine.toil-wdl.execution"]


@pytest.mark.integration
def test_cancel_stops_the_leader_the_task_and_its_command(node: Node) -> None:
    server, run_id = node.server, node.runs["sleep"]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        command: list[psutil.Process] = []
        while not command:  # the task's command itself, run on the host by the Toil worker
            assert time.monotonic() < deadline, "the task's command never started"
            assert server.get(f"/runs/{run_id}/status").json()["state"] in (
                "QUEUED",
                "INITIALIZING",
                "RUNNING",
            )
            command = [
                p
                for p in psutil.process_iter(["cmdline"])
                if (p.info["cmdline"] or [])[:2] == ["sleep", "3171"]
            ]
            time.sleep(0.2)
        [task] = _tasks(server, run_id)
        assert task["name"] == "sleepy.nap.command"
        assert _tes_task(server, task, "MINIMAL")["state"] == "RUNNING"
        # The command (under its shell) is a child of the task's Toil worker.
        ancestry = [command[0], *command[0].parents()]
        names = [" ".join(p.cmdline()) for p in ancestry]
        [worker] = [i for i, name in enumerate(names) if "toil_wes_bridge.wdl_worker" in name]
        processes = ancestry[: worker + 1]

        response = server.request("POST", f"/runs/{run_id}/cancel")
        assert response.status_code == 200
        assert _wait(server, run_id, RUN_TIMEOUT)["state"] == "CANCELED"
        deadline = time.monotonic() + 60
        while _tes_task(server, task, "MINIMAL")["state"] != "CANCELED":
            assert time.monotonic() < deadline, "the TES task was not cancelled"
            time.sleep(0.1)
        _, alive = psutil.wait_procs(processes, timeout=30)
        assert not alive, f"the task's processes outlived the cancel: {alive}"
    finally:
        server.request("POST", f"/runs/{run_id}/cancel")


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES)
def test_wdl_workflow_through_wes_on_tes(node: Node, case: str) -> None:
    if case not in node.runs:
        pytest.skip(f"not on PATH: {', '.join(TOOLS)}")
    server, run_id = node.server, node.runs[case]
    expected = _expected(case)
    log = _wait(server, run_id, RUN_TIMEOUT)
    run_log = log["run_log"]
    assert log["state"] == expected["state"], run_log["system_logs"]
    assert log["request"]["workflow_engine"] == "toil"
    assert run_log["cmd"][0] == "toil-wdl-runner"
    assert "--wdlContainer" in run_log["cmd"]
    tasks = _tasks(server, run_id)
    assert tasks, "no step of the run went to the TES"
    if expected["state"] == "COMPLETE":
        assert run_log["exit_code"] == 0
        for task in tasks:
            assert task["exit_code"] == 0
            _check_task(server, run_id, task, "COMPLETE")
        # One task per call: the 20 parts and the gather, the six variant-calling steps.
        calls = {"wdl/hello": 1, "wdl/fanout": 21, "wdl/variant-calling": 6}[case]
        assert len(tasks) == len({t["name"] for t in tasks}) == calls
    else:
        step = expected["failed_step"]
        failed = [t for t in tasks if "state: EXECUTOR_ERROR" in t["system_logs"]]
        [task] = failed  # no retry
        assert task["name"] == f"fail.{step['name']}.command"
        assert task["exit_code"] == step["exit_code"]  # the worker exits with the command's
        _check_task(server, run_id, task, "EXECUTOR_ERROR")
        [prepare] = [t for t in tasks if t is not task]
        _check_task(server, run_id, prepare, "COMPLETE")
        # The run's exit code is the command's; its log names the task, with its stderr.
        assert run_log["exit_code"] == step["exit_code"] == expected["exit_code"]
        [line] = [s for s in run_log["system_logs"] if f"(TES task {task['id']})" in s]
        assert f"exited with code {step['exit_code']}; stderr tail:\n{step['stderr']}" in line
        stderr = httpx.get(task["stderr"], timeout=30).text
        assert step["stderr"] in stderr
    outputs = log["outputs"]
    assert sorted(outputs) == sorted(expected["outputs"])
    outputs_dir = server.data_dir / "runs" / run_id / "outputs"
    for key, want in expected["outputs"].items():
        _check_output(outputs[key], want, outputs_dir, key.split(".", 1)[1])
    assert sorted(p.relative_to(outputs_dir).parts[0] for p in outputs_dir.iterdir()) == sorted(
        key.split(".", 1)[1] for key in expected["outputs"]
    )
    if "known_snps" in expected:
        vcf = Path(outputs["variant_calling.vcf"]["path"])
        _check_variants(vcf, WORKFLOWS / case / expected["known_snps"])


@pytest.mark.integration
@pytest.mark.parametrize(
    ("case", "fields", "params", "message"),
    [
        (
            "wdl/variant-calling",
            {},
            {
                "variant_calling.reference": "../../etc/passwd",
                "variant_calling.reads_1": "data/reads_1.fq",
                "variant_calling.reads_2": "data/reads_2.fq",
            },
            "input path '../../etc/passwd' points outside the run's attachments",
        ),
        ("wdl/hello", {}, {"hello.bogus": "x"}, "unknown input/output: hello.bogus"),
        ("wdl/hello", {}, {"hello.message": 7}, "couldn't construct String"),
        (
            "wdl/hello",
            {"workflow_type_version": "1.1"},
            {},
            "the WDL document is version 1.0, not 1.1",
        ),
        (
            "wdl/hello",
            {"workflow_engine_parameters": json.dumps({"--jobStore": "file:/tmp/x"})},
            {},
            "--jobStore",
        ),
    ],
)
def test_bad_requests_are_refused_before_a_run(
    node: Node, case: str, fields: dict[str, str], params: dict[str, Any], message: str
) -> None:
    expected = _expected(case)
    merged = {"workflow_url": expected["workflow"], "workflow_params": json.dumps(params)}
    response = _submit(node.server, _attachments(case), **{**merged, **fields})
    assert response.status_code == 400, response.text
    assert message in response.json()["msg"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            'version 1.0\nimport "https://example.org/lib.wdl" as lib\nworkflow w {}\n',
            "main.wdl:2:1: Failed to import https://example.org/lib.wdl: "
            "import 'https://example.org/lib.wdl' is not among the run's attachments",
        ),
        (
            'version 1.0\nimport "../../../etc/lib.wdl" as lib\nworkflow w {}\n',
            "import '../../../etc/lib.wdl' is not among the run's attachments",
        ),
        ("version 1.0\nworkflow w {\n  call nowhere\n}\n", "main.wdl:3:3: No such task/workflow"),
        ("version 1.0\nworkflow w {\n", "main.wdl:"),
    ],
)
def test_documents_are_checked_when_submitted(node: Node, document: str, message: str) -> None:
    response = _submit(
        node.server,
        [("workflow_attachment", ("main.wdl", document.encode()))],
        workflow_url="main.wdl",
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["msg"]


# -- units -----------------------------------------------------------------------------------
def _context(tmp_path: Path, tes: TesEndpoint) -> DriverContext:
    from wes_bridge_toil import ToilWdlParameters

    workflow = WORKFLOWS / "wdl/hello/hello.wdl"
    run = RunSpec(
        run_id="r1",
        workflow_type="WDL",
        workflow_type_version="1.0",
        workflow_url="hello.wdl",
        workflow_path=workflow,
        workflow_fragment=None,
        workflow_dir=workflow.parent,
        params={"hello.message": "hi"},
        engine_parameters=ToilWdlParameters(),
    )
    for name in ("outputs", "work"):
        (tmp_path / name).mkdir(parents=True)
    return DriverContext(
        run=run,
        run_dir=tmp_path,
        outputs_dir=tmp_path / "outputs",
        work_dir=tmp_path / "work",
        tasks=TaskReporter(tmp_path / "events.jsonl"),
        tes=tes,
    )


def test_a_tes_with_containers_is_named_in_the_run_log(tmp_path: Path) -> None:
    from wes_bridge_toil import ToilWdlAdapter, ToilWdlSettings

    tes = TesEndpoint("http://127.0.0.1:9/ga4gh/tes/v1", "r1", True, True, "a test TES")
    outcome = ToilWdlAdapter(ToilWdlSettings()).drive(_context(tmp_path, tes))
    assert outcome.state == "SYSTEM_ERROR"
    [job_store, note] = outcome.system_logs
    assert "engines.toil-wdl.job_store" in job_store
    assert "a test TES runs its tasks in containers" in note
    assert "in Docker or Singularity" in note
    # With an object store, the run would go ahead with Toil's own containers.
    adapter = ToilWdlAdapter(ToilWdlSettings(job_store="aws:us-west-2:w-{run_id}", image="i:1"))
    argv = adapter.command(_context(tmp_path / "x", tes), tmp_path / "inputs.json")
    assert argv[argv.index("--jobStore") + 1] == "aws:us-west-2:w-r1"
    assert "--wdlContainer" not in argv
    assert argv[argv.index("--tesImage") + 1] == "i:1"
    host = TesEndpoint("http://127.0.0.1:9/ga4gh/tes/v1", "r1", True, False, "host TES")
    argv = adapter.command(_context(tmp_path / "y", host), tmp_path / "inputs.json")
    assert argv[argv.index("--wdlContainer") + 1] == "docker"
    assert "--tesImage" not in argv
    assert argv[-2:] == [str(WORKFLOWS / "wdl/hello/hello.wdl"), str(tmp_path / "inputs.json")]
    assert adapter.notes(_context(tmp_path / "z", host)) == []


def test_parameters_accept_toil_wdl_runner_flags() -> None:
    from pydantic import ValidationError
    from wes_bridge_toil import ToilWdlParameters

    params = ToilWdlParameters.model_validate(
        {
            "--maxJobs": "4",
            "--retryCount": "0",
            "--wdlStrict": "true",
            "--allCallOutputs": None,
            "--disableChaining": "true",
            "--wdlContainer": "singularity",  # the node decides
            "--outputDirectory": "/elsewhere",
            "--logDebug": None,
        }
    )
    assert (params.max_jobs, params.retry_count, params.strict) == (4, 0, True)
    assert (params.all_call_outputs, params.chaining, params.debug) == (True, False, True)
    assert ToilWdlParameters().chaining is True
    assert ToilWdlParameters().strict is False
    for refused in ({"--jobStore": "x"}, {"--not-strict": None}, {"compute_checksum": "true"}):
        with pytest.raises(ValidationError, match=next(iter(refused)).lstrip("-")):
            ToilWdlParameters.model_validate(refused)


def test_host_task_container_runs_the_command_on_the_host(tmp_path: Path) -> None:
    import WDL
    from toil_wes_bridge.host_container import HostTaskContainer
    from WDL.runtime.error import CommandFailed

    logger = logging.getLogger("test-host-container")
    cfg = WDL.runtime.config.Loader(logger)
    source = tmp_path / "in"
    (source / "dir").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "dir" / "b.txt").write_text("beta\n")
    container = HostTaskContainer(cfg, "t1", str(tmp_path / "task"))
    # The paths the engine assigns are under the task's own directory, as in a container.
    container.input_path_map = {
        str(source / "a.txt"): str(tmp_path / "task/work/_miniwdl_inputs/0/a.txt"),
        str(source / "dir") + "/": str(tmp_path / "task/work/_miniwdl_inputs/0/dir/"),
        str(source / "dir/b.txt"): str(tmp_path / "task/work/_miniwdl_inputs/0/dir/b.txt"),
    }
    container.input_path_map_rev = {v: k for k, v in container.input_path_map.items()}
    inputs = tmp_path / "task/work/_miniwdl_inputs/0"
    container.runtime_values = {"docker": "ubuntu:24.04", "env": {"GREETING": "it's me"}}
    container.run(
        logger,
        f'cat {inputs}/a.txt {inputs}/dir/b.txt > both.txt; echo "$GREETING"; echo oops >&2',
    )
    work = Path(container.host_work_dir())  # type: ignore[no-untyped-call]
    assert (work / "both.txt").read_text() == "alpha\nbeta\n"
    assert (inputs / "dir").is_symlink()  # the directory is linked once, not its files
    assert Path(container.host_stdout_txt()).read_text() == "it's me\n"  # type: ignore[no-untyped-call]
    assert Path(container.host_stderr_txt()).read_text() == "oops\n"  # type: ignore[no-untyped-call]
    assert container.host_path(str(work / "both.txt")) == str(work / "both.txt")
    assert container.host_path(str(inputs / "a.txt")) == str(source / "a.txt")
    (source / "a.txt").write_text("unchanged\n")
    assert (inputs / "a.txt").read_text() == "unchanged\n"  # a link, not a copy

    failing = HostTaskContainer(cfg, "t2", str(tmp_path / "task2"))
    with pytest.raises(CommandFailed, match="exit status 3"):
        failing.run(logger, "echo bad >&2; exit 3")
    assert failing.last_exit_code == 3


def test_install_refuses_a_toil_that_picks_containers_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import toil.wdl.wdltoil as wdltoil
    from toil_wes_bridge import host_container

    class Elsewhere:
        pass

    monkeypatch.setattr(wdltoil, "SwarmContainer", Elsewhere)
    with pytest.raises(host_container.ToilInternalsChanged) as raised:
        host_container.install()
    message = str(raised.value)
    assert "toil.wdl.wdltoil.SwarmContainer is not miniwdl's SwarmContainer" in message
    assert "Install Toil 9.x, or adapt toil_wes_bridge.host_container" in message
    assert wdltoil.SwarmContainer is Elsewhere
    assert not host_container.installed()
