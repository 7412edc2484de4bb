"""The CWL v1.2 conformance suite (`required` tests) through Toil's WES client.

cwltest drives Toil's real WES client, `toil-wes-cwl-runner`, against a live `wes-bridge
serve`; the same tests also run through `cwltool --no-container` directly, in the same test.
Every test that cwltool passes directly must also pass through wes-bridge.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from .conformance.run_conformance import (
    CWLTOOL,
    DEFAULT_SUITE,
    TOIL_RUNNER,
    Config,
    run_conformance,
)
from .live_server import Server, free_port

pytestmark = [pytest.mark.conformance, pytest.mark.integration]


def _toil_client() -> Path:
    venv = os.environ.get("WES_BRIDGE_TOIL_CLIENT_VENV")
    if not venv:
        pytest.skip("WES_BRIDGE_TOIL_CLIENT_VENV is not set (tox sets it; see tox.ini)")
    runner = Path(venv) / "bin" / TOIL_RUNNER
    assert runner.exists(), f"{runner} missing: run scripts/install-toil-client {venv}"
    return runner


def test_required_conformance_matches_cwltool(tmp_path: Path) -> None:
    runner = _toil_client()
    suite = Path(os.environ.get("WES_BRIDGE_CWL_CONFORMANCE", DEFAULT_SUITE))
    assert (suite / "conformance_tests.yaml").is_file(), f"no conformance suite at {suite}"
    jobs = int(os.environ.get("WES_BRIDGE_CONFORMANCE_JOBS", "2"))
    server = Server(tmp_path / "data", free_port())
    server.start()
    try:
        through_wes = run_conformance(
            Config(
                tool=TOIL_RUNNER,
                wes_url=server.base,
                runner=str(runner),
                suite_dir=suite,
                jobs=jobs,
                junit_xml=tmp_path / "wes-bridge.xml",
            )
        )
    finally:
        server.stop(signal.SIGTERM)
    cwltool = shutil.which("cwltool", path=str(Path(sys.executable).parent))
    assert cwltool, "cwltool is not installed next to this Python"
    direct = run_conformance(
        Config(
            tool=CWLTOOL,
            runner=cwltool,
            cwltest=str(runner.parent / "cwltest"),
            suite_dir=suite,
            jobs=jobs,
            junit_xml=tmp_path / "cwltool.xml",
        )
    )
    print(f"\nthrough wes-bridge (Toil's WES client): {through_wes.summary_line()}")
    print(f"cwltool --no-container directly:        {direct.summary_line()}")
    for outcome in through_wes.failed:
        print(f"  failed through wes-bridge: {outcome.name}: {outcome.message[:200]}")
    assert len(direct.outcomes) == len(through_wes.outcomes) > 80
    lost = sorted({o.name for o in direct.passed} - {o.name for o in through_wes.passed})
    assert not lost, f"pass with cwltool directly but not through wes-bridge: {lost}"


#: Conformance tests that Toil-on-TES runs in CI, one or two per feature a step's TES task must
#: carry: stdin/stdout, a plain workflow, output and literal directories, secondaryFiles through
#: a workflow, successCodes, records with defaults, scatter, EnvVarRequirement, writable
#: InitialWorkDir, a subworkflow and ResourceRequirement. All of them pass with toil-cwl-runner
#: directly. (The full suite is measured outside CI: see tests/conformance/README.md.)
TOIL_SUBSET = (
    "stdinout_redirect",
    "wf_simple",
    "directory_output",
    "stdin_from_directory_literal_with_literal_file",
    "secondary_files_workflow_propagation",
    "success_codes",
    "record_with_default",
    "wf_scatter_two_dotproduct",
    "envvar_req",
    "writable_stagedfiles",
    "nested_workflow_noexp",
    "dynamic_resreq_inputs",
)


def test_toil_on_tes_conformance_subset(tmp_path: Path) -> None:
    """A fixed subset of the suite through Toil's WES client to a node whose CWL engine is
    Toil, each step of every run a task on the node's TES."""
    runner = _toil_client()
    suite = Path(os.environ.get("WES_BRIDGE_CWL_CONFORMANCE", DEFAULT_SUITE))
    jobs = int(os.environ.get("WES_BRIDGE_CONFORMANCE_JOBS", "2"))
    server = Server(
        tmp_path / "data", free_port(), env={"WES_BRIDGE_DEFAULT_ENGINES": '{"CWL": "toil"}'}
    )
    server.start()
    try:
        result = run_conformance(
            Config(
                tool=TOIL_RUNNER,
                wes_url=server.base,
                runner=str(runner),
                suite_dir=suite,
                tags=None,
                names=",".join(TOIL_SUBSET),
                jobs=jobs,
                junit_xml=tmp_path / "toil-on-tes.xml",
            )
        )
        runs = server.get("/runs", params={"page_size": 100}).json()["runs"]
        logs = [server.get(f"/runs/{r['run_id']}").json() for r in runs]
        tasks = {
            log["run_id"]: server.get(f"/runs/{log['run_id']}/tasks").json()["task_logs"]
            for log in logs
        }
    finally:
        server.stop(signal.SIGTERM)
    print(f"\nToil on wes-bridge's TES (Toil's WES client): {result.summary_line()}")
    assert sorted(o.name for o in result.outcomes) == sorted(TOIL_SUBSET)
    assert not result.failed, [(o.name, o.message[:300]) for o in result.failed]
    # Every run was Toil's, and every one ran its steps as TES tasks that completed.
    assert len(logs) == len(TOIL_SUBSET)
    for log in logs:
        assert log["request"]["workflow_engine"] == "toil", log["request"]
        assert log["run_log"]["cmd"][0] == "toil-cwl-runner", log["run_log"]["cmd"]
        assert tasks[log["run_id"]], f"run {log['run_id']} sent no task to the TES"
        assert all(t["exit_code"] == 0 for t in tasks[log["run_id"]]), tasks[log["run_id"]]
