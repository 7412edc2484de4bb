"""Toil on TES: the ``toil`` engine adapter and the ``wes_bridge_tes`` Toil batch system.

The integration tests go through one real node, shared by this module's tests, with their runs
submitted together so that Toil's slow start-ups overlap: every CommandLineTool job must show up
as a task of the node's TES, tagged with its run. The unit tests at the end need no node.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.plugin import DriverContext, RunSpec, TaskReporter, TesEndpoint

from .conftest import TERMINAL, WES, WORKFLOWS, SpecCheckedClient, free_port

TES = "/ga4gh/tes/v1"
BIN = Path(sys.executable).parent
RUN_TIMEOUT = 300  # Toil is slow to start, and this machine is shared


def _sha1(path: Path) -> str:
    return "sha1$" + hashlib.sha1(path.read_bytes()).hexdigest()


def _toil_env(tmp: Path) -> dict[str, str]:
    """An environment for a Toil process of a test: no node configuration, no TES endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WES_BRIDGE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["TOIL_HISTORY"] = "False"
    env["TMPDIR"] = str(tmp)
    env["HOME"] = str(tmp)  # Toil writes ~/.toil
    return env


def _pipeline_attachments() -> list[tuple[str, bytes]]:
    root = WORKFLOWS / "cwl/pipeline"
    return [
        (str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    ]


@dataclass
class Started:
    sleep: str
    hello: str
    pipeline: str
    fail: str
    direct: subprocess.Popen[bytes]
    direct_out: Path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpecCheckedClient]:
    root = tmp_path_factory.mktemp("toil-node")
    settings = load_settings(
        data_dir=root / "data", max_concurrent_runs=6, cancel_grace_seconds=2, port=free_port()
    )
    with SpecCheckedClient(create_app(settings)) as client:
        try:
            yield client
        finally:
            # Drivers outlive a node that stops (to be re-attached): cancel what a failed test
            # may have left running, so that no Toil leader goes on without its TES.
            for run in client.get(f"{WES}/runs", params={"page_size": 100}).json()["runs"]:
                if run["state"] not in TERMINAL:
                    client.post(f"{WES}/runs/{run['run_id']}/cancel")
                    client.wait(run["run_id"], timeout=60)


@pytest.fixture(scope="module")
def started(node: SpecCheckedClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """The module's runs, submitted at once, and toil-cwl-runner on the pipeline, run directly."""

    def submit(*args: Any, **fields: str) -> str:
        response = node.submit(*args, workflow_engine="toil", **fields)
        assert response.status_code == 200, response.text
        return str(response.json()["run_id"])

    sleep = submit("cwl/sleep/sleep.cwl", {"seconds": 300})  # cancelled by its test
    hello = submit("cwl/hello/hello.cwl", {"message": "Hello from Toil"})
    pipeline = submit(
        "",
        {"infile": {"class": "File", "location": "data.txt"}},
        attachments=_pipeline_attachments(),
        workflow_url="workflow.cwl",
    )
    fail = submit(
        "cwl/fail/fail.cwl",
        {},
        workflow_engine_parameters=json.dumps({"--retryCount": "0", "--logInfo": None}),
    )
    direct_dir = tmp_path_factory.mktemp("toil-direct")
    job = direct_dir / "job.json"
    data = WORKFLOWS / "cwl/pipeline/data.txt"
    job.write_text(json.dumps({"infile": {"class": "File", "location": data.as_uri()}}))
    out = direct_dir / "out"
    direct_log = open(direct_dir / "stderr.log", "wb")  # noqa: SIM115 - closed below
    direct = subprocess.Popen(
        [
            str(BIN / "toil-cwl-runner"),
            "--jobStore",
            f"file:{direct_dir / 'jobstore'}",
            "--workDir",
            str(direct_dir),
            "--outdir",
            str(out),
            "--no-container",
            "--publishWorkflowMetrics",
            "no",
            str(WORKFLOWS / "cwl/pipeline/workflow.cwl"),
            str(job),
        ],
        stdout=subprocess.PIPE,
        stderr=direct_log,
        env=_toil_env(direct_dir),
        cwd=direct_dir,
    )
    try:
        yield Started(sleep, hello, pipeline, fail, direct, out)
    finally:
        if direct.poll() is None:
            direct.kill()
        direct.wait()
        if direct.stdout is not None:
            direct.stdout.close()
        direct_log.close()


def _run_log(node: SpecCheckedClient, run_id: str) -> dict[str, Any]:
    response = node.get(f"{WES}/runs/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _tasks(node: SpecCheckedClient, run_id: str) -> list[dict[str, Any]]:
    response = node.get(f"{WES}/runs/{run_id}/tasks")
    assert response.status_code == 200, response.text
    return list(response.json()["task_logs"])


def _tes_task(node: SpecCheckedClient, task_log: dict[str, Any], view: str = "FULL") -> Any:
    uri = task_log["tes_uri"]
    assert uri.startswith(str(node.base_url) + TES + "/tasks/"), uri
    response = node.get(uri, params={"view": view})
    assert response.status_code == 200, response.text
    return response.json()


def _check_completed_tasks(node: SpecCheckedClient, run_id: str) -> list[dict[str, Any]]:
    """Every task of the run is a COMPLETE TES task of the run, with a Toil worker command."""
    tasks = _tasks(node, run_id)
    assert tasks
    for task in tasks:
        assert task["exit_code"] == 0
        assert "state: COMPLETE" in task["system_logs"]
        assert os.path.basename(task["cmd"][0]) == "_toil_worker"
        tes_task = _tes_task(node, task)
        assert tes_task["state"] == "COMPLETE"
        assert tes_task["tags"]["wes_run_id"] == run_id
        assert tes_task["tags"]["wes_step"] == task["name"]
        assert tes_task["tags"]["toil_job"].startswith("kind-CWLJob/")
        assert tes_task["resources"]["cpu_cores"] >= 1
    return tasks


# -- runs through the node -------------------------------------------------------------------
def _processes_of(run_dir: Path) -> list[psutil.Process]:
    """Processes that name the run's directory on their command line or work inside it."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if str(run_dir) in cmdline or cwd == str(run_dir) or cwd.startswith(f"{run_dir}/"):
            found.append(proc)
    return found


@pytest.mark.integration
def test_cancel_stops_the_leader_and_its_tasks(node: SpecCheckedClient, started: Started) -> None:
    # The module's first node test: the sleeping task holds a TES core only until cancelled.
    try:
        _cancel_while_the_step_runs(node, started.sleep)
    finally:  # never leave a sleeping run behind
        node.post(f"{WES}/runs/{started.sleep}/cancel")


def _cancel_while_the_step_runs(node: SpecCheckedClient, run_id: str) -> None:
    run_dir = node.app.state.node.settings.runs_dir / run_id
    assert node.wait(run_id, timeout=RUN_TIMEOUT, states={"RUNNING"}) == "RUNNING"
    deadline = time.monotonic() + RUN_TIMEOUT
    task: dict[str, Any] | None = None
    while task is None or _tes_task(node, task, "MINIMAL")["state"] != "RUNNING":
        assert time.monotonic() < deadline, "the sleep step never started"
        assert node.get(f"{WES}/runs/{run_id}/status").json()["state"] == "RUNNING"
        tasks = _tasks(node, run_id)  # listed while the run goes on
        task = tasks[0] if tasks else None
        time.sleep(0.2)
    assert task["name"] == "sleep.cwl"
    assert task.get("end_time") is None
    # Wait for the tool itself (cwltool's `sleep`), so that there is a process tree to stop.
    while not any((p.info["cmdline"] or [])[:1] == ["sleep"] for p in _processes_of(run_dir)):
        assert time.monotonic() < deadline, "the sleep tool never started"
        time.sleep(0.2)
    processes = _processes_of(run_dir)
    names = " ".join(" ".join(p.info["cmdline"] or []) for p in processes)
    assert "toil_wes_bridge.cwl" in names  # the leader
    assert "_toil_worker" in names  # the task's worker

    assert node.post(f"{WES}/runs/{run_id}/cancel").status_code == 200
    assert node.wait(run_id, timeout=60) == "CANCELED"
    deadline = time.monotonic() + 60
    while _tes_task(node, task, "MINIMAL")["state"] != "CANCELED":
        assert time.monotonic() < deadline, "the TES task was not cancelled"
        time.sleep(0.1)
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"processes of the run outlived its cancel: {alive}"
    [task] = _tasks(node, run_id)
    assert "state: CANCELED" in task["system_logs"]
    assert not list((run_dir / "outputs").iterdir())


@pytest.mark.integration
def test_hello_runs_as_a_tes_task(node: SpecCheckedClient, started: Started) -> None:
    run_id = started.hello
    assert node.wait(run_id, timeout=RUN_TIMEOUT) == "COMPLETE"
    log = _run_log(node, run_id)
    assert log["request"]["workflow_engine"] == "toil"
    greeting = log["outputs"]["greeting"]
    path = Path(greeting["path"])
    assert path.read_text() == "Hello from Toil\n"
    assert greeting["checksum"] == _sha1(path)
    assert greeting["location"] == path.as_uri()
    assert path.parent.name == "outputs"
    run_log = log["run_log"]
    assert run_log["exit_code"] == 0
    assert run_log["cmd"][0] == "toil-cwl-runner"
    assert "--batchSystem" in run_log["cmd"]
    assert run_log["cmd"][run_log["cmd"].index("--batchSystem") + 1] == "wes_bridge_tes"
    assert "--no-container" in run_log["cmd"]  # the embedded TES runs on the host here
    stderr = node.get(run_log["stderr"]).text
    assert "Toil jobs run as tasks on the TES at" in stderr
    assert "CWL run complete!" in stderr
    assert json.loads(node.get(run_log["stdout"]).text)["greeting"]["checksum"] == _sha1(path)
    assert node.get(f"{WES}/runs/{run_id}/outputs/hello.txt").content == b"Hello from Toil\n"

    [task] = _check_completed_tasks(node, run_id)
    assert task["name"] == "hello.cwl"
    # The task's stderr is its Toil worker's log, served as the task's stderr.
    [executor_log] = _tes_task(node, task)["logs"][-1]["logs"]
    assert "[job hello.cwl] completed success" in executor_log["stderr"]
    assert "[job hello.cwl] completed success" in node.get(task["stderr"]).text


@pytest.mark.integration
def test_pipeline_matches_toil_run_directly(node: SpecCheckedClient, started: Started) -> None:
    run_id = started.pipeline
    assert node.wait(run_id, timeout=RUN_TIMEOUT) == "COMPLETE"
    log = _run_log(node, run_id)
    report = log["outputs"]["report"]
    assert Path(report["path"]).read_text() == "lines: 3\n"
    tasks = _check_completed_tasks(node, run_id)
    names = sorted(t["name"] for t in tasks)
    # One task per CommandLineTool step; Toil names a job by its place in the workflow.
    assert len(names) == 2
    assert "count" in names[0]
    assert "report" in names[1]

    stdout, _ = started.direct.communicate(timeout=RUN_TIMEOUT)
    assert started.direct.returncode == 0
    direct_report = json.loads(stdout)["report"]
    assert report["checksum"] == direct_report["checksum"]
    direct_files = {p.name: _sha1(p) for p in started.direct_out.iterdir()}
    outputs = Path(report["path"]).parent
    assert {p.name: _sha1(p) for p in outputs.iterdir()} == direct_files


@pytest.mark.integration
def test_failing_tool_is_an_executor_error(node: SpecCheckedClient, started: Started) -> None:
    run_id = started.fail
    assert node.wait(run_id, timeout=RUN_TIMEOUT) == "EXECUTOR_ERROR"
    log = _run_log(node, run_id)
    run_log = log["run_log"]
    assert run_log["exit_code"] == 3  # the tool's, read back from its task
    system_logs = run_log["system_logs"]
    assert any(s.startswith("toil-cwl-runner exited with code 1") for s in system_logs)
    [failure] = [s for s in system_logs if s.startswith("step fail.cwl (TES task ")]
    assert failure.endswith(
        "exited with code 3 (the Toil worker with 1); stderr tail:\nabout to fail"
    )
    assert "--retryCount" in run_log["cmd"]
    assert run_log["cmd"][run_log["cmd"].index("--retryCount") + 1] == "0"
    # The leader's log (the run's stderr) has the failed task's stderr too.
    assert "about to fail" in node.get(run_log["stderr"]).text
    [task] = _tasks(node, run_id)
    assert task["exit_code"] == 1  # the Toil worker's
    assert "state: EXECUTOR_ERROR" in task["system_logs"]
    assert failure.startswith(f"step fail.cwl (TES task {task['id']})")


# -- refusing what cannot work ---------------------------------------------------------------
@pytest.mark.integration
def test_batch_system_refuses_file_job_store_on_a_non_shared_tes(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "toil_wes_bridge.cwl",
            "--batchSystem",
            "wes_bridge_tes",
            "--tesUrl",
            "http://127.0.0.1:9/ga4gh/tes/v1",  # never reached: refused before
            "--tesSharedFilesystem",
            "false",
            "--tesContainers",
            "false",
            "--jobStore",
            f"file:{tmp_path / 'jobstore'}",
            "--workDir",
            str(tmp_path),
            "--outdir",
            str(tmp_path / "out"),
            "--no-container",
            "--logColors",
            "false",
            "--publishWorkflowMetrics",
            "no",
            str(WORKFLOWS / "cwl/hello/hello.cwl"),
        ],
        capture_output=True,
        env=_toil_env(tmp_path),
        cwd=tmp_path,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "cannot be reached by Toil workers" in stderr
    assert "does not share this machine's file system" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def _context(tmp_path: Path, tes: TesEndpoint) -> DriverContext:
    from wes_bridge_toil import ToilParameters

    workflow = WORKFLOWS / "cwl/hello/hello.cwl"
    run = RunSpec(
        run_id="r1",
        workflow_type="CWL",
        workflow_type_version="v1.2",
        workflow_url="hello.cwl",
        workflow_path=workflow,
        workflow_fragment=None,
        workflow_dir=workflow.parent,
        params={},
        engine_parameters=ToilParameters(),
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


@pytest.mark.parametrize(
    ("shared", "containers", "why"),
    [
        (False, False, "does not share this machine's file system"),
        (True, True, "runs its executors in containers"),
    ],
)
def test_adapter_refuses_a_file_job_store_the_workers_cannot_reach(
    tmp_path: Path, shared: bool, containers: bool, why: str
) -> None:
    from wes_bridge_toil import ToilAdapter, ToilSettings

    tes = TesEndpoint("http://127.0.0.1:9/ga4gh/tes/v1", "r1", shared, containers, "a test TES")
    outcome = ToilAdapter(ToilSettings()).drive(_context(tmp_path, tes))
    assert outcome.state == "SYSTEM_ERROR"
    [message] = outcome.system_logs
    assert why in message
    assert "engines.toil.job_store" in message
    # With an object store configured, the run would go ahead (and name it as its job store).
    adapter = ToilAdapter(ToilSettings(job_store="aws:us-west-2:wes-{run_id}", image="img:1"))
    argv = adapter.command(_context(tmp_path / "x", tes), tmp_path / "job.json")
    assert argv[argv.index("--jobStore") + 1] == "aws:us-west-2:wes-r1"
    assert ("--no-container" in argv) is not containers
    assert ("--tesImage" in argv) is containers


# -- units -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "exit_code", "expected_status", "expected_reason"),
    [
        ("COMPLETE", 0, 0, "FINISHED"),
        ("COMPLETE", None, 0, "FINISHED"),
        ("EXECUTOR_ERROR", 3, 3, "FAILED"),
        ("EXECUTOR_ERROR", 137, 137, "FAILED"),
        ("EXECUTOR_ERROR", None, 255, "FAILED"),
        ("EXECUTOR_ERROR", 0, 255, "FAILED"),  # an error never reads as success
        ("SYSTEM_ERROR", None, 255, "ERROR"),
        ("SYSTEM_ERROR", 1, 255, "ERROR"),
        ("CANCELED", None, 255, "KILLED"),
        ("PREEMPTED", None, 255, "LOST"),
    ],
)
def test_task_state_maps_to_toil_exit_status_and_reason(
    state: str, exit_code: int | None, expected_status: int, expected_reason: str
) -> None:
    from toil.batchSystems.abstractBatchSystem import BatchJobExitReason
    from toil_wes_bridge.batch_system import task_outcome

    logs = [{"logs": [{"exit_code": exit_code, "stderr": ""}]}] if exit_code is not None else []
    status, reason = task_outcome({"id": "t", "state": state, "logs": logs})
    assert status == expected_status
    assert reason == BatchJobExitReason[expected_reason]


def test_failed_step_is_described_from_its_worker_log() -> None:
    from wes_bridge_toil import StepFailure, tool_exit_code, tool_stderr

    log = (
        "[2026-01-01T00:00:00+0000] [MainThread] [W] [cwltool] [job a] exited with status: 2\n"
        "[2026-01-01T00:00:01+0000] [MainThread] [W] [cwltool] [job fail.cwl] exited with "
        "status: 3\n"
        "[2026-01-01T00:00:01+0000] [MainThread] [E] [toil.cwl.cwltoil] Failed command "
        "standard error:\nabout to fail\nfor real\n\n"
        "[2026-01-01T00:00:01+0000] [MainThread] [C] [toil.worker] Worker crashed with "
        "traceback:\nTraceback (most recent call last): ...\n"
    )
    assert tool_exit_code(log) == 3
    assert tool_exit_code("no tool ran") is None
    assert tool_stderr(log) == "about to fail\nfor real\n\n"
    assert tool_stderr("no tool ran") is None
    failure = StepFailure(
        {
            "id": "t1",
            "state": "EXECUTOR_ERROR",
            "tags": {"wes_step": "fail.cwl"},
            "logs": [{"logs": [{"exit_code": 1, "stderr": log}], "system_logs": ["x"]}],
        }
    )
    assert failure.exit_code == 3
    assert failure.describe() == (
        "step fail.cwl (TES task t1) exited with code 3 (the Toil worker with 1); "
        "stderr tail:\nabout to fail\nfor real"
    )
    # A worker that failed before its tool ran: its own exit code and the end of its log.
    crashed = StepFailure(
        {
            "id": "t2",
            "state": "EXECUTOR_ERROR",
            "name": "n",
            "logs": [{"logs": [{"exit_code": 1, "stderr": "x" * 5000 + "ImportError: no toil\n"}]}],
        }
    )
    assert crashed.exit_code == 1
    worker_log = "x" * 5000 + "ImportError: no toil"
    assert crashed.describe().endswith("exited with code 1; stderr tail:\n" + worker_log[-2000:])
    lost = StepFailure({"id": "t3", "state": "SYSTEM_ERROR", "name": "n", "logs": []})
    assert lost.exit_code is None
    assert lost.describe() == "step n (TES task t3) ended SYSTEM_ERROR"


def test_parameters_accept_toil_command_line_flags() -> None:
    from pydantic import ValidationError
    from wes_bridge_toil import ToilParameters

    params = ToilParameters.model_validate(
        {
            "--maxJobs": "4",
            "--retryCount": "0",
            "--stopOnFirstFailure": "true",
            "--not-strict": None,
            "--logDebug": None,
            "--disableChaining": "false",
            "--outdir": "/elsewhere",  # the node decides
            "--logInfo": None,
            "clean": "always",
        }
    )
    assert params.max_jobs == 4
    assert params.retry_count == 0
    assert params.on_error == "stop"
    assert params.strict is False
    assert params.debug is True
    assert params.chaining is True
    assert params.clean == "always"
    assert ToilParameters().retry_count == 1
    for refused in ({"--jobStore": "file:/tmp/x"}, {"--batchSystem": "single_machine"}):
        with pytest.raises(ValidationError, match=next(iter(refused))):
            ToilParameters.model_validate(refused)
    with pytest.raises(ValidationError):
        ToilParameters.model_validate({"max_jobs": "0"})
    with pytest.raises(ValidationError):
        ToilParameters.model_validate({"clean": "sometimes"})


class FakeTes:
    """Just enough of a TesClient for the batch system, with states set by the test."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.gets: dict[str, int] = {}
        self.listings = 0

    def create_task(self, task: dict[str, Any]) -> str:
        task_id = f"t{len(self.tasks) + 1}"
        self.tasks[task_id] = {**task, "id": task_id, "state": "QUEUED"}
        return task_id

    def get_task(self, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        self.gets[view] = self.gets.get(view, 0) + 1
        task = self.tasks[task_id]
        return task if view != "MINIMAL" else {"id": task_id, "state": task["state"]}

    def iter_tasks(
        self, *, view: str, state: str, tags: dict[str, str]
    ) -> Iterator[dict[str, Any]]:
        self.listings += 1
        for task in list(self.tasks.values()):
            if task["state"] == state and tags.items() <= task["tags"].items():
                yield {"id": task["id"], "state": state}

    def cancel_task(self, task_id: str) -> None:
        self.cancelled.append(task_id)
        self.tasks[task_id]["state"] = "CANCELED"

    def close(self) -> None:
        pass


def _job(name: str = "step") -> Any:
    from toil.job import JobDescription

    job = JobDescription(
        requirements={
            "cores": 1.5,
            "memory": 300 * 2**20,
            "disk": 2**30,
            "preemptible": False,
            "accelerators": [],
        },
        jobName="CWLJob",
        unitName=name,
    )
    job.jobStoreID = "kind-CWLJob/instance-1"
    return job


@pytest.fixture
def batch_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Toil configuration, and the environment a wes-bridge driver gives the leader."""
    from toil.common import Config

    monkeypatch.setenv("WES_BRIDGE_TES_URL", "http://127.0.0.1:9/ga4gh/tes/v1")
    monkeypatch.setenv("WES_BRIDGE_TES_RUN_ID", "run-1")
    monkeypatch.setenv("WES_BRIDGE_TES_SHARED_FILESYSTEM", "1")
    monkeypatch.setenv("WES_BRIDGE_TES_USES_CONTAINERS", "0")
    monkeypatch.setenv("WES_BRIDGE_TES_TOKEN", "secret-token")
    config = Config()
    config.workflowID = "wf-1"
    config.jobStore = f"file:{tmp_path / 'jobstore'}"
    config.workDir = str(tmp_path)
    return config


def test_batch_system_issues_polls_kills_and_shuts_down(batch_config: Any) -> None:
    from toil.batchSystems.abstractBatchSystem import BatchJobExitReason
    from toil_wes_bridge.batch_system import TesBatchSystem

    config = batch_config
    config.max_jobs = 2
    fake = FakeTes()
    batch = TesBatchSystem(config, 64, 1 << 40, 1 << 40, client=fake)  # type: ignore[arg-type]
    try:
        # The token is the batch system's, no longer the environment's (nor the job store's).
        assert "WES_BRIDGE_TES_TOKEN" not in os.environ
        assert batch.endpoint.token == "secret-token"

        job = _job()
        command = f"_toil_worker CWLJob {config.jobStore} kind-CWLJob/instance-1"
        ids = [batch.issueBatchJob(command, job, {"OMP_NUM_THREADS": "2"}) for _ in range(3)]
        assert sorted(batch.getIssuedBatchJobIDs()) == sorted(ids)
        _until(lambda: len(fake.tasks) == 2)
        time.sleep(0.3)
        assert len(fake.tasks) == 2  # --maxJobs holds the third back
        task = fake.tasks["t1"]
        [executor] = task["executors"]
        # This installation's worker program: the TES's clean PATH may not have it.
        assert os.path.isabs(executor["command"][0])
        assert os.path.basename(executor["command"][0]) == "_toil_worker"
        assert executor["command"][1:] == command.split()[1:]
        assert executor["env"] == {"OMP_NUM_THREADS": "2"}
        assert task["resources"] == {
            "cpu_cores": 2,
            "ram_gb": 0.293,
            "disk_gb": 1.0,
            "preemptible": False,
        }
        assert task["name"] == "step"
        assert task["tags"]["wes_run_id"] == "run-1"
        assert task["tags"]["wes_step"] == "step"
        assert task["tags"]["toil_job"] == "kind-CWLJob/instance-1"
        assert "secret-token" not in json.dumps(task)

        fake.tasks["t1"]["state"] = "RUNNING"
        _until(lambda: ids[0] in batch.getRunningBatchJobIDs())
        fake.tasks["t1"].update(
            state="EXECUTOR_ERROR",
            logs=[{"logs": [{"exit_code": 3, "stderr": "boom"}]}],
        )
        update = batch.getUpdatedBatchJob(10)
        assert update is not None
        assert (update.jobID, update.exitStatus) == (ids[0], 3)
        assert update.exitReason == BatchJobExitReason.FAILED
        assert update.backing_id == "t1"
        _until(lambda: len(fake.tasks) == 3)  # a slot came free

        batch.killBatchJobs([ids[1]])
        assert fake.cancelled == ["t2"]
        assert ids[1] not in batch.getIssuedBatchJobIDs()
        fake.tasks["t3"]["state"] = "COMPLETE"
        update = batch.getUpdatedBatchJob(10)
        assert update is not None
        assert (update.jobID, update.exitStatus) == (ids[2], 0)
        assert batch.getUpdatedBatchJob(0) is None  # the killed job is never reported

        again = batch.issueBatchJob(command, job)
        _until(lambda: len(fake.tasks) == 4)
        assert again in batch.getIssuedBatchJobIDs()
    finally:
        batch.shutdown()
    assert fake.cancelled == ["t2", "t4"]  # shutdown cancels what was left


def _until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_batch_system_lists_many_tasks_instead_of_polling_each(batch_config: Any) -> None:
    from toil_wes_bridge.batch_system import TesBatchSystem

    fake = FakeTes()
    batch = TesBatchSystem(batch_config, 64, 1 << 40, 1 << 40, client=fake)  # type: ignore[arg-type]
    try:
        command = f"_toil_worker CWLJob {batch_config.jobStore} kind-CWLJob/instance-1"
        ids = {batch.issueBatchJob(command, _job(f"step{i}")) for i in range(20)}
        _until(lambda: len(fake.tasks) == 20)
        for task in fake.tasks.values():
            task["state"] = "RUNNING"
        _until(lambda: len(batch.getRunningBatchJobIDs()) == 20)
        polled = fake.gets.get("MINIMAL", 0)
        time.sleep(1.5)  # a few rounds: a listing per active state, no GET per task
        assert fake.gets.get("MINIMAL", 0) == polled
        assert fake.listings > 0
        for task in fake.tasks.values():
            task["state"] = "COMPLETE"
        done = set()
        while len(done) < 20:
            update = batch.getUpdatedBatchJob(10)
            assert update is not None
            assert update.exitStatus == 0
            done.add(update.jobID)
        assert done == ids
        assert fake.gets["FULL"] == 20  # each ended task read once
    finally:
        batch.shutdown()
    assert fake.cancelled == []
