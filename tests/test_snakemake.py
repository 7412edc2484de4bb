"""Snakemake on TES: the ``wes-bridge`` executor plugin and the Snakemake engine adapter.

Integration tests run Snakefiles (``tests/snakemake_fixtures``) through a real node: the app
served on a real port with its embedded TES, every WES and TES answer checked against the
official documents. Every Snakemake job must become a TES task of the run. Unit tests cover the
executor's mapping of TES states and Snakemake resources, and the adapter's parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from pydantic import ValidationError
from snakemake_executor_plugin_wes_bridge.direct import ShellJob, obstacle, shell_job
from snakemake_executor_plugin_wes_bridge.executor import Executor, resolve_endpoint
from snakemake_executor_plugin_wes_bridge.journal import Journal, final_failures, read_journal
from snakemake_executor_plugin_wes_bridge.mapping import (
    Verdict,
    classify,
    failure_message,
    runtime_seconds,
    tes_resources,
)
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from wes_bridge_snakemake import SnakemakeParameters

from wes_bridge.app import create_app
from wes_bridge.config import load_settings

from .conftest import TERMINAL, WES, SpecCheckedClient, free_port

FIXTURES = Path(__file__).resolve().parent / "snakemake_fixtures"
TES = "/ga4gh/tes/v1"
IGNORED = {".snakemake", "__pycache__"}


# -- helpers --------------------------------------------------------------------------------
def _attachments(folder: Path) -> list[tuple[str, bytes]]:
    return [
        (path.relative_to(folder).as_posix(), path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def _submit(
    node: SpecCheckedClient,
    fixture: str,
    params: dict[str, Any] | None = None,
    engine_parameters: dict[str, Any] | None = None,
) -> str:
    response = node.submit(
        "Snakefile",
        params,
        attachments=_attachments(FIXTURES / fixture),
        workflow_type="SMK",
        workflow_type_version="9",
        workflow_url="Snakefile",
        workflow_engine_parameters=json.dumps(engine_parameters or {}),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["run_id"])


def _sha1(path: Path) -> str:
    return "sha1$" + hashlib.sha1(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, str]:
    """sha1 of every file under ``root`` (Snakemake's bookkeeping left out)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED]
        for name in filenames:
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = _sha1(path)
    return found


def _direct_run(fixture: str, where: Path, *config: str) -> dict[str, str]:
    """What ``snakemake --cores 2`` makes of the fixture, run directly in a copy of it."""
    workdir = where / fixture
    shutil.copytree(FIXTURES / fixture, workdir)
    before = _files(workdir)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--nocolor"]
    if config:
        command += ["--config", *config]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return {rel: sha for rel, sha in _files(workdir).items() if before.get(rel) != sha}


def _tasks(node: SpecCheckedClient, run_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    token = ""
    while True:
        page = node.get(f"{WES}/runs/{run_id}/tasks", params={"page_token": token}).json()
        tasks += page["task_logs"]
        token = page["next_page_token"]
        if not token:
            return tasks


def _state(task_log: dict[str, Any]) -> str | None:
    """A WES task log's TES state (WES 1.1 has no field for it; the node's system log says)."""
    for line in task_log.get("system_logs") or []:
        if line.startswith("state: "):
            return str(line.removeprefix("state: "))
    return None


def _tes_tasks(node: SpecCheckedClient, run_id: str, view: str = "MINIMAL") -> list[Any]:
    page = node.get(
        f"{TES}/tasks",
        params={"tag_key": "wes_run_id", "tag_value": run_id, "view": view, "page_size": 100},
    ).json()
    return list(page.get("tasks") or [])


def _wait_for_running_task(node: SpecCheckedClient, run_id: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [t for t in _tasks(node, run_id) if _state(t) == "RUNNING"]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no task of run {run_id} was RUNNING within {timeout} s")


def _run_processes(run_dir: Path) -> list[psutil.Process]:
    """Processes working inside the run directory (the driver, Snakemake's job processes)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and (Path(cwd) == run_dir or run_dir in Path(cwd).parents):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpecCheckedClient]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("node") / "data",
        port=free_port(),
        max_concurrent_runs=4,
        cancel_grace_seconds=2,
        # Tasks start a Python each; a few more at once than cores keeps the CPU busy.
        tes={"cpu_cores": 4, "cancel_grace_seconds": 2},
        engines={"snakemake": {"seconds_between_status_checks": 2}},
    )
    with SpecCheckedClient(create_app(settings)) as client:
        yield client


# The runs the tests below look at: (fixture, workflow_params, workflow_engine_parameters).
RUNS: dict[str, tuple[str, dict[str, Any] | None, dict[str, Any]]] = {
    "hello": ("hello", {"name": "WES"}, {}),
    "hello-snakemake": ("hello", {"name": "WES"}, {"job_command": "snakemake"}),
    "staged": ("fanout", {"parts": 2, "prefix": "staged"}, {"mode": "staged"}),
    "fail": ("fail", None, {}),
    "fanout": ("fanout", None, {}),
}


@pytest.fixture(scope="module")
def runs(node: SpecCheckedClient) -> Iterator[dict[str, str]]:
    """The runs of :data:`RUNS`, submitted together so that they overlap on the node (each
    job is a Python process starting Snakemake; one after the other they take long)."""
    ids = {name: _submit(node, *spec) for name, spec in RUNS.items()}
    yield ids
    for run_id in ids.values():  # leave nothing running behind
        if node.get(f"{WES}/runs/{run_id}/status").json()["state"] not in TERMINAL:
            node.post(f"{WES}/runs/{run_id}/cancel")
            node.wait(run_id, timeout=60)


# -- through a node -------------------------------------------------------------------------
@pytest.mark.integration
def test_fanout_of_20_jobs_lists_tasks_and_matches_a_direct_run(
    node: SpecCheckedClient, runs: dict[str, str], tmp_path: Path
) -> None:
    run_id = runs["fanout"]
    # The run's tasks are listed while it runs...
    # (the parts take milliseconds each: the first task seen running may be the gather).
    first = _wait_for_running_task(node, run_id)
    assert first["name"] in {"part", "gather"}
    assert node.get(f"{WES}/runs/{run_id}/status").json()["state"] == "RUNNING"
    expected = _direct_run("fanout", tmp_path)  # meanwhile, the reference
    assert node.wait(run_id, timeout=400) == "COMPLETE"

    # ... and all of them, COMPLETE, with their TES task, when it has ended.
    tasks = _tasks(node, run_id)
    assert sorted(t["name"] for t in tasks) == ["gather"] + ["part"] * 20
    assert {_state(t) for t in tasks} == {"COMPLETE"}
    assert {t["exit_code"] for t in tasks} == {0}
    for task in tasks:
        assert task["tes_uri"].endswith(f"{TES}/tasks/{task['id']}")
    # The parts (a plain shell rule) ran their shell commands directly; the gather (a
    # script: rule) ran Snakemake's job command.
    tes_tasks = _tes_tasks(node, run_id, view="FULL")
    assert len(tes_tasks) == 21
    for tes_task in tes_tasks:
        [executor] = tes_task["executors"]
        command = executor["command"][2]
        if tes_task["name"] == "part":
            assert "-m snakemake" not in command
            script = shlex.split(command)[-1]
            assert script.startswith("set -euo pipefail;  (echo 'part "), command
            assert "sed -n '" in script
            assert executor["env"]["OMP_NUM_THREADS"] == "1"
        else:
            assert f"{sys.executable} -m snakemake" in command

    log = node.get(f"{WES}/runs/{run_id}").json()
    got = {rel: output["checksum"] for rel, output in log["outputs"].items()}
    assert len(expected) == 41  # 20 parts, 20 logs, the summary
    assert got == expected
    outputs_dir = Path(log["outputs"]["results/summary.txt"]["path"]).parents[1]
    assert _files(outputs_dir) == expected
    summary = (outputs_dir / "results/summary.txt").read_text()
    assert summary.endswith("40 lines from 20 parts\n")


@pytest.mark.integration
def test_hello_world_is_one_tes_task_with_config_from_params(
    node: SpecCheckedClient, runs: dict[str, str]
) -> None:
    run_id = runs["hello"]
    assert node.wait(run_id, timeout=180) == "COMPLETE"

    log = node.get(f"{WES}/runs/{run_id}").json()
    assert log["request"]["workflow_type"] == "SMK"
    assert log["run_log"]["exit_code"] == 0
    assert log["run_log"]["cmd"][:3] == ["snakemake", "--executor", "wes-bridge"]
    # Only what the workflow made: not the attachments, not Snakemake's bookkeeping.
    assert set(log["outputs"]) == {"results/hello.txt"}
    hello = log["outputs"]["results/hello.txt"]
    path = Path(hello["path"])
    assert path.read_text() == "Hello, WES!\n"
    assert hello["checksum"] == _sha1(path)
    assert hello["size"] == path.stat().st_size
    assert hello["location"] == path.as_uri()
    assert path.parent.parent.name == "outputs"
    assert node.get(f"{WES}/runs/{run_id}/outputs/results/hello.txt").text == "Hello, WES!\n"

    stderr = node.get(log["run_log"]["stderr"]).text
    assert "each Snakemake job is a task on the node's embedded TES" in stderr
    assert "1 of 1 steps (100%) done" in stderr

    [task] = _tasks(node, run_id)
    assert task["name"] == "hello"
    assert _state(task) == "COMPLETE"
    assert task["exit_code"] == 0
    assert task["tes_uri"].endswith(f"{TES}/tasks/{task['id']}")
    tes_task = node.get(task["tes_uri"], params={"view": "FULL"}).json()
    assert tes_task["state"] == "COMPLETE"
    assert tes_task["name"] == "hello"
    assert tes_task["tags"]["wes_run_id"] == run_id
    assert tes_task["tags"]["wes_step"] == "hello"
    assert tes_task["tags"]["snakemake_jobid"] == "0"
    # Shared mode declares no paths; the job runs its shell command, as Snakemake formats and
    # runs it (bash in strict mode), in the working directory.
    assert not tes_task.get("inputs")
    assert not tes_task.get("outputs")
    [executor] = tes_task["executors"]
    assert executor["command"][:2] == ["/bin/sh", "-c"]
    command = executor["command"][2]
    assert command.startswith("cd ")
    assert "-m snakemake" not in command
    *_, exec_, shell, dash_c, script = shlex.split(command)
    assert (exec_, Path(shell).name, dash_c) == ("exec", "bash", "-c")
    assert script == "set -euo pipefail;  echo 'Hello, WES!' > results/hello.txt"


@pytest.mark.integration
def test_job_command_snakemake_runs_every_job_through_snakemake(
    node: SpecCheckedClient, runs: dict[str, str]
) -> None:
    run_id = runs["hello-snakemake"]
    assert node.wait(run_id, timeout=180) == "COMPLETE"

    log = node.get(f"{WES}/runs/{run_id}").json()
    assert log["run_log"]["cmd"][5:7] == ["--wes-bridge-job-command", "snakemake"]
    path = Path(log["outputs"]["results/hello.txt"]["path"])
    assert path.read_text() == "Hello, WES!\n"
    [task] = _tasks(node, run_id)
    tes_task = node.get(task["tes_uri"], params={"view": "FULL"}).json()
    [executor] = tes_task["executors"]
    assert f"{sys.executable} -m snakemake" in executor["command"][2]
    assert "--mode 'remote'" in executor["command"][2]


@pytest.mark.integration
def test_staged_mode_moves_files_as_tes_inputs_and_outputs(
    node: SpecCheckedClient, runs: dict[str, str], tmp_path: Path
) -> None:
    run_id = runs["staged"]
    expected = _direct_run("fanout", tmp_path, "parts=2", "prefix=staged")
    assert node.wait(run_id, timeout=300) == "COMPLETE"

    log = node.get(f"{WES}/runs/{run_id}").json()
    assert {rel: output["checksum"] for rel, output in log["outputs"].items()} == expected
    assert "--wes-bridge-mode" in log["run_log"]["cmd"]
    tes_tasks = _tes_tasks(node, run_id, view="FULL")
    assert sorted(t["name"] for t in tes_tasks) == ["gather", "part", "part"]
    workdir = "/snakemake/workdir"
    for task in tes_tasks:
        inputs = {i["path"]: i for i in task["inputs"]}
        outputs = {o["path"] for o in task["outputs"]}
        # The sources (Snakefile, include, script, config file) travel with every job.
        for source in ("Snakefile", "rules/common.smk", "scripts/gather.py", "config.yaml"):
            assert f"{workdir}/{source}" in inputs, source
        assert all(i["url"].startswith("file://") for i in inputs.values())
        [executor] = task["executors"]
        assert executor["workdir"] == workdir
        command = executor["command"][2]
        if task["name"] == "part":
            assert f"{workdir}/data/words.txt" in inputs
            assert any(o.startswith(f"{workdir}/parts/") for o in outputs)
            assert any(o.startswith(f"{workdir}/logs/") for o in outputs)
            # A direct shell job: the task makes the output and log directories itself.
            assert "-m snakemake" not in command
            assert f"mkdir -p {workdir}/logs {workdir}/parts && " in command
            assert "set -euo pipefail;  (echo " in command
        else:
            assert "--shared-fs-usage 'none'" in command or "--shared-fs-usage none" in command
            assert {f"{workdir}/parts/{i}.txt" for i in (1, 2)} <= set(inputs)
            assert outputs == {f"{workdir}/results/summary.txt"}


@pytest.mark.integration
def test_failing_step_is_an_executor_error_with_its_exit_code_and_stderr(
    node: SpecCheckedClient, runs: dict[str, str]
) -> None:
    run_id = runs["fail"]
    assert node.wait(run_id, timeout=300) == "EXECUTOR_ERROR"

    log = node.get(f"{WES}/runs/{run_id}").json()
    tasks = {t["name"]: t for t in _tasks(node, run_id)}
    assert set(tasks) == {"prepare", "explode"}
    assert _state(tasks["prepare"]) == "COMPLETE"
    explode = tasks["explode"]
    assert _state(explode) == "EXECUTOR_ERROR"
    # The task ran the rule's shell command itself: its exit code is the command's, and the
    # run's exit code is the failing task's.
    assert explode["exit_code"] == 3
    assert log["run_log"]["exit_code"] == 3
    logs = "\n".join(log["run_log"]["system_logs"])
    assert f"step explode (TES task {explode['id']}) exited with code 3" in logs
    assert "about to fail" in logs
    # What the run made before it failed is among the outputs.
    assert set(log["outputs"]) == {"results/prepared.txt"}

    stderr = node.get(log["run_log"]["stderr"]).text
    assert "Error in rule explode" in stderr
    assert f"TES task {explode['id']} ended EXECUTOR_ERROR with exit code 3" in stderr


@pytest.mark.integration
def test_cancel_stops_the_driver_and_the_tes_tasks(node: SpecCheckedClient) -> None:
    run_id = _submit(node, "sleep", {"seconds": 300})
    task = _wait_for_running_task(node, run_id)
    run_dir = Path(node.app.state.node.settings.runs_dir) / run_id
    assert _run_processes(run_dir), "the driver should be working in the run directory"

    assert node.post(f"{WES}/runs/{run_id}/cancel").status_code == 200
    assert node.wait(run_id, timeout=120) == "CANCELED"
    tes_task = node.get(task["tes_uri"]).json()
    assert tes_task["state"] == "CANCELED"
    assert {t["state"] for t in _tes_tasks(node, run_id)} == {"CANCELED"}
    deadline = time.monotonic() + 30
    while _run_processes(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _run_processes(run_dir), "the driver and its job processes should be gone"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("engine_parameters", "expected"),
    [
        ({"bogus": "1"}, "bogus"),
        ({"mode": "teleport"}, "mode"),
        ({"targets": "../../etc/passwd"}, "targets"),
        ({"jobs": "0"}, "jobs"),
    ],
)
def test_bad_engine_parameters_are_refused(
    node: SpecCheckedClient, engine_parameters: dict[str, Any], expected: str
) -> None:
    response = node.submit(
        "Snakefile",
        {},
        attachments=_attachments(FIXTURES / "hello"),
        workflow_type="SMK",
        workflow_type_version="9",
        workflow_url="Snakefile",
        workflow_engine_parameters=json.dumps(engine_parameters),
    )
    assert response.status_code == 400, response.text
    assert expected in response.json()["msg"]


# -- units ----------------------------------------------------------------------------------
def test_tes_states_map_to_snakemake_outcomes() -> None:
    assert classify("COMPLETE") is Verdict.SUCCESS
    for state in ("EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"):
        assert classify(state) is Verdict.FAILURE
    for active in ("QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING", "UNKNOWN"):
        assert classify(active) is Verdict.ACTIVE
    assert classify("SOMETHING_NEW") is Verdict.ACTIVE
    assert classify(None) is Verdict.ACTIVE


def test_snakemake_resources_map_to_tes_resources() -> None:
    assert tes_resources({"_cores": 4, "mem_mb": 2500, "disk_mb": 10000}, threads=4) == {
        "cpu_cores": 4,
        "ram_gb": 2.5,
        "disk_gb": 10.0,
    }
    # Mebibytes when only they are given; fractions of cores round up; threads as fallback.
    assert tes_resources({"mem_mib": 1000}, threads=3) == {"cpu_cores": 3, "ram_gb": 1.049}
    assert tes_resources({"_cores": 0.5}) == {"cpu_cores": 1}
    # Unset, placeholder ("<TBD>") and nonsense values are left out.
    assert tes_resources({"mem_mb": "<TBD>", "disk_mb": -1, "tmpdir": "/tmp"}) == {"cpu_cores": 1}
    assert tes_resources({}, preemptible=True) == {"cpu_cores": 1, "preemptible": True}
    assert runtime_seconds({"runtime": 90}) == 5400
    assert runtime_seconds({"runtime": "<TBD>"}) is None
    assert runtime_seconds({}) is None


def _task_doc(state: str, code: int | None = None, stderr: str = "") -> dict[str, Any]:
    executor_log: dict[str, Any] = {"stderr": stderr}
    if code is not None:
        executor_log["exit_code"] = code
    return {"state": state, "logs": [{"logs": [executor_log], "system_logs": ["note"]}]}


def test_failure_messages_carry_state_exit_code_and_stderr_tail() -> None:
    message = failure_message("t1", _task_doc("EXECUTOR_ERROR", 2, "x" * 5000 + "boom\n"))
    assert message.startswith("TES task t1 ended EXECUTOR_ERROR with exit code 2.")
    assert "TES system log: note" in message
    assert message.rstrip().endswith("boom")
    assert len(message) < 2200  # only the tail
    assert "was preempted" in failure_message("t2", _task_doc("PREEMPTED"))
    timed_out = failure_message("t3", _task_doc("CANCELED"), timed_out_after=120)
    assert "exceeded the job's runtime of 2 min" in timed_out


def test_final_failures_leave_out_jobs_that_succeeded_on_a_retry(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("submitted", step="flaky", jobid=1, attempt=1, task_id="a")
    journal.record("finished", step="flaky", jobid=1, attempt=1, task_id="a", state="PREEMPTED")
    journal.record("submitted", step="broken", jobid=2, attempt=1, task_id="b")
    journal.record("submitted", step="flaky", jobid=1, attempt=2, task_id="c")
    journal.record(
        "finished",
        step="broken",
        jobid=2,
        attempt=1,
        task_id="b",
        state="EXECUTOR_ERROR",
        exit_code=3,
        stderr_tail="oops",
    )
    journal.record("finished", step="flaky", jobid=1, attempt=2, task_id="c", state="COMPLETE")
    [failure] = final_failures(read_journal(tmp_path / "journal.jsonl"))
    assert (failure.step, failure.task_id, failure.exit_code) == ("broken", "b", 3)
    assert failure.stderr_tail == "oops"


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class _FakeTes:
    """The part of AsyncTesClient the status checks use, with canned tasks."""

    def __init__(self, tasks: dict[str, dict[str, Any]]) -> None:
        self.tasks = tasks
        self.cancelled: list[str] = []

    async def get_task(self, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        task = self.tasks[task_id]
        return {"id": task_id, "state": task["state"]} if view == "MINIMAL" else task

    async def cancel_task(self, task_id: str) -> None:
        self.cancelled.append(task_id)


def test_status_checks_report_each_tes_state_to_snakemake(tmp_path: Path) -> None:
    import asyncio

    executor = Executor.__new__(Executor)
    fake = _FakeTes(
        {
            "done": _task_doc("COMPLETE", 0),
            "failed": _task_doc("EXECUTOR_ERROR", 1, "Traceback: boom"),
            "preempted": _task_doc("PREEMPTED"),
            "running": _task_doc("RUNNING"),
            "slow": _task_doc("RUNNING"),
            "queued": _task_doc("QUEUED"),
        }
    )
    succeeded: list[str] = []
    failed: dict[str, str] = {}
    executor.workflow = SimpleNamespace(
        remote_execution_settings=SimpleNamespace(seconds_between_status_checks=10)
    )
    executor.logger = SimpleNamespace(info=lambda msg: None, error=lambda msg: None)
    executor.status_rate_limiter = _NoLimit()
    executor.journal = Journal(tmp_path / "journal.jsonl")
    executor._async_client = fake  # type: ignore[assignment]
    executor._min_poll = 0.5
    executor._last_poll_ok = time.monotonic()
    executor.run_tag = "tag"
    executor._live = {"done", "failed", "preempted", "running", "slow", "queued"}
    executor._live_lock = threading.Lock()
    executor.report_job_success = lambda info: succeeded.append(info.external_jobid)
    executor.report_job_error = lambda info, msg=None: failed.__setitem__(info.external_jobid, msg)

    def info(task_id: str, runtime: float | None = None) -> SubmittedJobInfo:
        job = SimpleNamespace(jobid=len(task_id), attempt=1, name=task_id)
        aux = {
            "step": task_id,
            "submitted_at": time.monotonic() - 100,
            "runtime": runtime,
            "running_since": time.monotonic() - 100 if runtime else None,
            "timed_out_after": None,
        }
        return SubmittedJobInfo(job=job, external_jobid=task_id, aux=aux)

    jobs = [info(t) for t in ("done", "failed", "preempted", "running", "queued")]
    jobs.append(info("slow", runtime=60))

    async def check() -> list[str]:
        return [j.external_jobid async for j in executor.check_active_jobs(jobs)]

    still_active = asyncio.run(check())
    assert still_active == ["running", "queued", "slow"]
    assert succeeded == ["done"]
    assert set(failed) == {"failed", "preempted"}
    assert "ended EXECUTOR_ERROR with exit code 1" in failed["failed"]
    assert "Traceback: boom" in failed["failed"]
    assert "was preempted" in failed["preempted"]
    assert executor._live == {"running", "queued", "slow"}
    # The job over its runtime is cancelled; it fails when the TES says CANCELED.
    assert fake.cancelled == ["slow"]
    # "running" was first seen RUNNING just now: the next check comes after the floor.
    assert executor._poll_interval == 0.5
    active = [j for j in jobs if j.external_jobid in ("running", "queued", "slow")]
    assert {j.external_jobid: j.aux["state"] for j in active} == {
        "running": "RUNNING",
        "queued": "QUEUED",
        "slow": "RUNNING",
    }
    # Tasks 100 s in their state are checked every 10 s (a tenth of that time)...
    now = time.monotonic()
    for job in active:
        job.aux["state_since"] = job.aux["running_since"] = now - 100
    assert executor._next_interval(active) == 10
    # ... a task running for 20 s every 2 s, however long it was queued before...
    active[0].aux["running_since"] = now - 20
    assert executor._next_interval(active) == pytest.approx(2, abs=0.01)
    # ... and never more rarely than --seconds-between-status-checks.
    for job in active:
        job.aux["state_since"] = job.aux["running_since"] = now - 10000
    assert executor._next_interval(active) == 10
    recorded = read_journal(tmp_path / "journal.jsonl")
    assert {(r["task_id"], r["state"]) for r in recorded} == {
        ("done", "COMPLETE"),
        ("failed", "EXECUTOR_ERROR"),
        ("preempted", "PREEMPTED"),
    }

    fake.tasks["slow"] = _task_doc("CANCELED")
    assert asyncio.run(check()) == ["running", "queued"]
    assert "exceeded the job's runtime of 1 min" in failed["slow"]


def test_a_new_job_is_checked_soon_whatever_the_pause() -> None:
    import asyncio

    executor = Executor.__new__(Executor)
    executor.lock = threading.Lock()
    executor._min_poll = 0.05
    executor._poll_interval = 30.0
    fresh = SubmittedJobInfo(
        job=SimpleNamespace(jobid=1), external_jobid="t", aux={"submitted_at": time.monotonic()}
    )
    executor.active_jobs = [fresh]
    start = time.monotonic()
    asyncio.run(executor.sleep())
    assert time.monotonic() - start < 5  # not the 30 s pause: the new job is due
    # Once a check has seen it, the pause is the computed one.
    fresh.aux["checked"] = True
    executor._poll_interval = 0.2
    start = time.monotonic()
    asyncio.run(executor.sleep())
    assert 0.15 < time.monotonic() - start < 5
    # Snakemake shutting the executor down (it joins this thread) ends the pause at once.
    executor._poll_interval = 30.0
    executor.wait = False
    start = time.monotonic()
    asyncio.run(executor.sleep())
    assert time.monotonic() - start < 5


class _Flagged(str):
    """A path with Snakemake flags (what temp(), touch(), pipe() ... make)."""

    def __new__(cls, path: str, **flags: Any) -> _Flagged:
        made = super().__new__(cls, path)
        made.flags = flags  # type: ignore[attr-defined]
        return made


def _shell_rule_job(**changes: Any) -> SimpleNamespace:
    rule: dict[str, Any] = {
        "name": "part",
        "is_shell": True,
        "norun": False,
        "is_script": False,
        "is_notebook": False,
        "is_wrapper": False,
        "is_cwl": False,
        "is_template_engine": False,
        "cache": None,
    }
    rule.update(changes.pop("rule", {}))
    job: dict[str, Any] = {
        "rule": SimpleNamespace(**rule),
        "is_group": lambda: False,
        "is_shadow": False,
        "benchmark": None,
        "conda_env_spec": None,
        "container_img_url": None,
        "env_modules": None,
        "input": ["data/words.txt"],
        "output": ["parts/1.txt"],
        "log": ["logs/part-1.log"],
        "resources": {"_cores": 2},
        "threads": 2,
        "shellcmd": "sed -n 1p data/words.txt > parts/1.txt 2> logs/part-1.log",
        "jobid": 3,
        "attempt": 1,
        "name": "part",
    }
    job.update(changes)
    return SimpleNamespace(**job)


def test_only_plain_shell_jobs_run_their_shell_command_directly() -> None:
    assert obstacle(_shell_rule_job(), []) is None
    refused = {
        "run": _shell_rule_job(rule={"is_shell": False}),
        "script": _shell_rule_job(rule={"is_shell": False, "is_script": True}),
        "wrapper": _shell_rule_job(rule={"is_shell": False, "is_wrapper": True}),
        "group": _shell_rule_job(is_group=lambda: True),
        "shadow": _shell_rule_job(is_shadow=True),
        "benchmark": _shell_rule_job(benchmark="bench/part-1.tsv"),
        "cache": _shell_rule_job(rule={"cache": SimpleNamespace(output=True)}),
        "pipe": _shell_rule_job(output=[_Flagged("parts/1.txt", pipe=True)]),
        "storage": _shell_rule_job(input=[SimpleNamespace(is_storage=True)]),
    }
    for what, job in refused.items():
        assert obstacle(job, []) is not None, what
    # Deployment only matters where it is used.
    conda = _shell_rule_job(conda_env_spec="envs/tools.yaml")
    assert obstacle(conda, []) is None
    assert obstacle(conda, [SimpleNamespace(name="CONDA")]) is not None
    container = _shell_rule_job(container_img_url="docker://debian")
    assert obstacle(container, [SimpleNamespace(name="APPTAINER")]) is not None
    # The job process makes touch() outputs inside a staged task.
    touched = _shell_rule_job(output=[_Flagged("done.flag", touch=True)])
    assert obstacle(touched, []) is None
    assert obstacle(touched, [], staged=True) is not None


def test_a_direct_shell_job_runs_as_snakemakes_shell_would_run_it() -> None:
    shell = shell_job(_shell_rule_job())
    assert shell is not None
    assert Path(shell.executable).name == "bash"
    assert (
        shell.script
        == "set -euo pipefail;  sed -n 1p data/words.txt > parts/1.txt 2> logs/part-1.log"
    )
    assert shell.env["OMP_NUM_THREADS"] == "2"
    assert "TMPDIR" not in shell.env
    assert shell.tmpdir is None
    custom = shell_job(_shell_rule_job(resources={"tmpdir": "/scratch/t", "shell_exec": "sh"}))
    assert custom is not None
    assert (custom.executable, custom.tmpdir, custom.env["TMPDIR"]) == (
        "sh",
        "/scratch/t",
        "/scratch/t",
    )
    assert custom.script == "sed -n 1p data/words.txt > parts/1.txt 2> logs/part-1.log"
    # A command too long for one argument goes through Snakemake's job process.
    assert shell_job(_shell_rule_job(shellcmd="echo " + "x" * 70000)) is None


def _task_executor(tmp_path: Path, mode: str) -> Executor:
    executor = Executor.__new__(Executor)
    executor.settings = SimpleNamespace(staged_workdir="/snakemake/workdir", job_command="auto")
    executor.mode = mode
    executor.workdir = str(tmp_path)
    executor.python = sys.executable
    executor.endpoint = resolve_endpoint("http://tes.example/v1", {})
    executor.workflow = SimpleNamespace(
        remote_execution_settings=SimpleNamespace(container_image="img", preemptible_rules=None),
        deployment_settings=SimpleNamespace(deployment_method=[]),
        dag=SimpleNamespace(get_unneeded_temp_files=lambda job: []),
    )
    executor.envvars = lambda: {"DECLARED": "1"}  # type: ignore[method-assign]
    executor._sources = []
    executor.run_tag = "tag"
    return executor


def test_direct_shell_tasks_in_shared_and_staged_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # Snakemake's working directory
    job = _shell_rule_job()
    shell = ShellJob("/bin/bash", "set -euo pipefail;  make it", {"OMP_NUM_THREADS": "2"})

    shared = _task_executor(tmp_path, "shared")
    assert shared.direct_shell(job) is not None
    [executor] = shared.tes_task(job, shell)["executors"]
    assert executor["env"] == {"DECLARED": "1", "OMP_NUM_THREADS": "2"}
    command = executor["command"][2]
    assert command.startswith(f"cd {shlex.quote(str(tmp_path))} && PATH=")
    assert command.endswith("&& exec /bin/bash -c 'set -euo pipefail;  make it'")

    staged = _task_executor(tmp_path, "staged")
    task = staged.tes_task(job, shell)
    [executor] = task["executors"]
    assert executor["workdir"] == "/snakemake/workdir"
    assert {o["path"] for o in task["outputs"]} == {
        "/snakemake/workdir/parts/1.txt",
        "/snakemake/workdir/logs/part-1.log",
    }
    log = "/snakemake/workdir/logs/part-1.log"
    assert executor["command"][2].endswith(
        "mkdir -p /snakemake/workdir/logs /snakemake/workdir/parts && "
        "{ /bin/bash -c 'set -euo pipefail;  make it'; rc=$?; "
        f"[ -e {log} ] || : > {log}; exit $rc; }}"
    )
    # job_command snakemake: never directly.
    shared.settings.job_command = "snakemake"
    assert shared.direct_shell(job) is None


class _FakeBlockingTes:
    def __init__(self) -> None:
        self.cancelled: list[str] = []

    def cancel_task(self, task_id: str) -> None:
        self.cancelled.append(task_id)


def test_sigterm_cancels_every_live_task_and_stops_submissions() -> None:
    import signal

    executor = Executor.__new__(Executor)
    fake = _FakeBlockingTes()
    executor.client = fake  # type: ignore[assignment]
    executor.logger = SimpleNamespace(info=lambda msg: None, error=lambda msg: None)
    executor.journal = None
    executor._live = {"a", "b"}
    executor._live_lock = threading.Lock()
    executor._terminating = threading.Event()
    executor._sigterm_watched = False
    errors: list[str] = []
    executor.report_job_error = lambda info, msg=None: errors.append(msg)
    snakemake_saw: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: snakemake_saw.append(signum))
    try:
        executor._watch_sigterm()
        signal.raise_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while len(fake.cancelled) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(fake.cancelled) == ["a", "b"]
        assert snakemake_saw == [signal.SIGTERM]  # Snakemake's own handler still runs
        executor.run_job(SimpleNamespace(jobid=7, attempt=1, name="late"))
        assert errors == ["Job 7 (late) not submitted: terminating\n"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_engine_parameters_accept_flags_and_target_lists() -> None:
    params = SnakemakeParameters.model_validate(
        {"--keep-going": "true", "--jobs": "4", "targets": "results/a.txt, b"}
    )
    assert params.keep_going is True
    assert params.jobs == 4
    assert params.targets == ["results/a.txt", "b"]
    assert SnakemakeParameters.model_validate({"targets": '["x y"]'}).targets == ["x y"]
    assert SnakemakeParameters().mode == "auto"
    for bad, field in (
        ({"bogus": 1}, "bogus"),
        ({"targets": "/x"}, "targets"),
        ({"retries": -1}, "retries"),
    ):
        with pytest.raises(ValidationError, match=field):
            SnakemakeParameters.model_validate(bad)


def test_the_endpoint_comes_from_the_environment_with_its_credentials() -> None:
    env = {
        "WES_BRIDGE_TES_URL": "http://tes.example/ga4gh/tes/v1",
        "WES_BRIDGE_TES_RUN_ID": "run-1",
        "WES_BRIDGE_TES_SHARED_FILESYSTEM": "1",
        "WES_BRIDGE_TES_TOKEN": "secret",
    }
    endpoint = resolve_endpoint(None, env)
    assert (endpoint.url, endpoint.run_id, endpoint.token) == (
        env["WES_BRIDGE_TES_URL"],
        "run-1",
        "secret",
    )
    assert resolve_endpoint(env["WES_BRIDGE_TES_URL"] + "/", env).token == "secret"
    # Another TES than the environment's does not get its credentials.
    other = resolve_endpoint("http://other.example/ga4gh/tes/v1", env)
    assert other.token is None
    assert resolve_endpoint("http://other.example/v1", {"WES_BRIDGE_TES_TOKEN": "t"}).token == "t"
    with pytest.raises(Exception, match="no TES"):
        resolve_endpoint(None, {})
