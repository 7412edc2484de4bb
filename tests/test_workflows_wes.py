"""Every workflow in test-workflows/ through a real `wes-bridge serve`, with every engine that
runs its language (CWL: cwltool and Toil; Snakemake: snakemake; Nextflow: nextflow; WDL: miniwdl,
the WDL plugin, here, and Toil in tests/test_toil_wdl.py), each step a task on the node's
embedded TES.

The outputs must be the ones in expected.json, which `test_workflows_direct.py` checks against
the engines run directly: so a run through the node gives what the engine gives on its own.
All runs are submitted at once to one node and checked one by one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from wes_bridge_nextflow import find_nextflow

from .conftest import WORKFLOWS, nextflow_command
from .live_server import Server, free_port
from .test_workflows_direct import CASES, TOOLS, _check_file, _check_variants, _expected

pytestmark = pytest.mark.integration

# By the test-workflows folder of the language.
ENGINES = {
    "cwl": ("cwltool", "toil"),
    "snakemake": ("snakemake",),
    "nextflow": ("nextflow",),
    "wdl": ("miniwdl",),
}
LANGUAGES = {
    "cwl": ("CWL", "v1.2"),
    "snakemake": ("SMK", "9"),
    "nextflow": ("NFL", "DSL2"),
    "wdl": ("WDL", "1.0"),
}
RUNS = [(case, engine) for case in CASES for engine in ENGINES[case.split("/")[0]]]
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def _request(case: str, engine: str) -> tuple[dict[str, str], list[tuple[str, Any]]]:
    expected = _expected(case)
    folder = WORKFLOWS / case
    files = [
        ("workflow_attachment", (p.relative_to(folder).as_posix(), p.read_bytes()))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "expected.json"
    ]
    params = yaml.safe_load((folder / expected["params"]).read_text())
    workflow_type, version = LANGUAGES[case.split("/")[0]]
    data = {
        "workflow_type": workflow_type,
        "workflow_type_version": version,
        "workflow_url": expected["workflow"],
        "workflow_params": json.dumps(params),
        "workflow_engine": engine,
        "tags": json.dumps({"case": case}),
    }
    if engine == "cwltool":
        data["workflow_engine_parameters"] = json.dumps({"parallel": True})
    return data, files


def _has_engine(name: str) -> bool:
    return any(ep.name == name for ep in entry_points(group="wes_bridge.engines"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[Any, str]]]:
    base = tmp_path_factory.mktemp("workflows-wes")
    server = Server(base / "data", free_port())
    server.start()
    ids: dict[tuple[str, str], str] = {}
    try:
        for case, engine in RUNS:
            if "known_snps" in _expected(case) and any(shutil.which(t) is None for t in TOOLS):
                continue
            if engine == "nextflow" and find_nextflow() is None:
                continue
            if engine == "miniwdl" and not _has_engine("miniwdl"):
                continue
            data, files = _request(case, engine)
            response = server.request("POST", "/runs", data=data, files=files)
            assert response.status_code == 200, response.text
            ids[(case, engine)] = response.json()["run_id"]
        yield server, ids
    finally:
        server.stop(signal.SIGTERM)


def _check_output(got: Any, want: Any, output_id: str) -> None:
    """One expected output (a File object, or a WDL array of them) against the run's."""
    if isinstance(want, list):
        assert isinstance(got, list), (output_id, got)
        assert len(got) == len(want), output_id
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _check_output(g, w, f"{output_id}[{i}]")
        return
    if "basename" in want:
        assert got["basename"] == want["basename"]
    if "checksum" in want:
        assert (got["checksum"], got["size"]) == (want["checksum"], want["size"]), output_id
    _check_file(Path(got["path"]), want)


def _wait(server: Server, run_id: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.get(f"/runs/{run_id}").json()
        if log["state"] in TERMINAL:
            return dict(log)
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def _tasks(server: Server, run_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    token = ""
    while True:
        page = server.get(f"/runs/{run_id}/tasks", params={"page_token": token}).json()
        tasks += page["task_logs"]
        token = page.get("next_page_token") or ""
        if not token:
            return tasks


@pytest.mark.parametrize(("case", "engine"), RUNS)
def test_workflow_through_wes_on_tes(
    runs: tuple[Server, dict[Any, str]], case: str, engine: str
) -> None:
    server, ids = runs
    if engine == "nextflow":
        nextflow_command()  # skips (fails in CI) without Nextflow
    if engine == "miniwdl" and (case, engine) not in ids:
        if os.environ.get("CI"):
            pytest.fail("the WDL plugin (engines/wes-bridge-wdl) is not installed")
        pytest.skip("the WDL plugin is not installed: pip install ./engines/wes-bridge-wdl")
    if (case, engine) not in ids:
        pytest.skip(f"not on PATH: {', '.join(TOOLS)}")
    expected = _expected(case)
    log = _wait(server, ids[(case, engine)])
    run_log = log["run_log"]
    assert log["state"] == expected["state"], run_log["system_logs"]
    assert log["request"]["workflow_engine"] == engine
    tasks = _tasks(server, log["run_id"])
    assert tasks, "no step of the run went to the TES"
    if engine == "nextflow":
        # Without a Nextflow TES executor plugin, Nextflow is one TES task and its process
        # tasks (ids nf-<work dir hash>) run inside it, listed from their work directories.
        [driver] = [t for t in tasks if t.get("tes_uri")]
        assert driver["name"] == "nextflow", driver
        tasks = [t for t in tasks if t is not driver]
        assert all(t["id"].startswith("nf-") for t in tasks), tasks
        assert all(t["stdout"].endswith(f"/tasks/{t['id']}/stdout") for t in tasks)
    for task in tasks:
        if engine != "nextflow":
            assert task["tes_uri"].endswith(f"/ga4gh/tes/v1/tasks/{task['id']}"), task
    if expected["state"] == "COMPLETE":
        # Every step ran as a TES task, and every one of them completed.
        assert all("state: COMPLETE" in t["system_logs"] for t in tasks), tasks
        assert all(t["exit_code"] == 0 for t in tasks)
        assert run_log["exit_code"] == 0
    if "parallel_steps" in expected:
        assert len(tasks) >= expected["parallel_steps"] + 1
    if "failed_step" in expected:
        step = expected["failed_step"]
        failed = [t for t in tasks if "state: EXECUTOR_ERROR" in t["system_logs"]]
        # One step failed (Toil retries a failed job once by default: two tasks of it).
        assert failed, tasks
        assert len({t["name"] for t in failed}) == 1, failed
        # The run log names the failing step's TES task and carries its stderr tail.
        [line, *_] = [
            s for s in run_log["system_logs"] if any(f"task {t['id']})" in s for t in failed)
        ]
        assert step["stderr"] in line
        # The run's exit code is the failing step's own, and the run log says so.
        assert run_log["exit_code"] == step["exit_code"]
        assert f"exited with code {step['exit_code']}" in line
        if engine == "toil":
            # A Toil task runs Toil's worker, which exits 1 whatever the tool's code was; the
            # run log gives both.
            assert all(t["exit_code"] == 1 for t in failed), failed
            assert "(the Toil worker with 1)" in line
        else:
            # cwltool's task is the tool's command line, Snakemake's the rule's shell command,
            # Nextflow's the process script.
            assert failed[0]["exit_code"] == step["exit_code"]
        if engine == "nextflow":
            assert failed[0]["name"] == step["name"]
    outputs = log["outputs"]
    if engine == "toil" and expected["state"] != "COMPLETE":
        # toil-cwl-runner reports no output object for a workflow that failed (run directly
        # too); cwltool, Snakemake and Nextflow report what the steps that completed made.
        assert outputs == {}
        return
    for output_id, want in expected["outputs"].items():
        _check_output(outputs[output_id], want, output_id)
    if "known_snps" in expected:
        vcf_id = {"cwl": "vcf", "wdl": "variant_calling.vcf"}.get(case.split("/")[0], "calls.vcf")
        vcf = outputs[vcf_id]["path"]
        _check_variants(Path(vcf), WORKFLOWS / case / expected["known_snps"])
