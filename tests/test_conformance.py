"""The CWL v1.2 conformance suite (`required` tests) through Toil's WES client.

cwltest drives Toil's real WES client, `toil-wes-cwl-runner`, against a live `wes-bridge
serve`; the same tests also run through `cwltool --no-container` directly, in the same test.
Every test that cwltool passes directly must also pass through wes-bridge. A fixed subset also
runs through Toil's WES client to a node whose CWL engine is Toil on its TES, and the tests that
Toil's client cannot upload whole are sent with every file attached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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


#: Tests that pass with cwltool directly but fail through Toil's WES client whatever the server
#: does: the client finds the files to upload with `cwltool --print-deps`, which lists neither
#: an `$include`d expression library nor the secondaryFiles of a `default` input. With those
#: files attached, as a WES client may, each passes through wes-bridge. Per test: the workflow
#: (relative to the suite's tests/), its job file, and every file the run needs.
CLIENT_GAPS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "initworkdir_expreng_requirements": (
        "template-tool.cwl",
        "cat-job.json",
        ("template-tool.cwl", "underscore.js", "hello.txt"),
    ),
    **{
        f"mixed_version_{v}_wf": (
            f"mixed-versions/wf-{v}.cwl",
            None,
            tuple(
                f"mixed-versions/{name}"
                for name in (
                    f"wf-{v}.cwl",
                    *("tool-v10.cwl", "tool-v11.cwl", "tool-v12.cwl"),
                    *("hello.txt", "hello.txt.2"),
                )
            ),
        )
        for v in ("v10", "v11", "v12")
    },
}


def _expected_outputs(suite: Path, index: str = "conformance_tests.yaml") -> dict[str, Any]:
    """Each test's expected output object, by id, following the index's `$import`s."""
    found: dict[str, Any] = {}
    for entry in yaml.safe_load((suite / index).read_text()):
        if "$import" in entry:
            found.update(_expected_outputs(suite, entry["$import"]))
        elif "id" in entry:
            found[entry["id"]] = entry.get("output") or {}
    return found


def test_client_gaps_pass_with_every_file_attached(tmp_path: Path) -> None:
    suite = Path(os.environ.get("WES_BRIDGE_CWL_CONFORMANCE", DEFAULT_SUITE))
    expected = _expected_outputs(suite)
    server = Server(tmp_path / "data", free_port())
    server.start()
    try:
        ids = {}
        for name, (workflow, job, files) in CLIENT_GAPS.items():
            folder = Path(workflow).parent
            params = json.loads((suite / "tests" / job).read_text()) if job else {}
            attachments = [
                (
                    "workflow_attachment",
                    (Path(f).relative_to(folder).as_posix(), (suite / "tests" / f).read_bytes()),
                )
                for f in files
            ]
            data = {
                "workflow_type": "CWL",
                "workflow_type_version": "v1.2",
                "workflow_url": Path(workflow).name,
                "workflow_params": json.dumps(params),
            }
            response = server.request("POST", "/runs", data=data, files=attachments)
            assert response.status_code == 200, response.text
            ids[name] = response.json()["run_id"]
        for name, run_id in ids.items():
            log = server.wait(run_id, timeout=300)
            assert log["state"] == "COMPLETE", (name, log["run_log"])
            tasks = server.get(f"/runs/{run_id}/tasks").json()["task_logs"]
            assert tasks, name
            assert all(t["exit_code"] == 0 for t in tasks), (name, tasks)
            outputs = log["outputs"]
            assert isinstance(outputs, dict)
            assert set(outputs) == set(expected[name]), name
            for output_id, want in expected[name].items():
                got = outputs[output_id]
                assert (got["basename"], got["checksum"], got["size"]) == (
                    want["location"],
                    want["checksum"],
                    want["size"],
                ), (name, output_id)
    finally:
        server.stop(signal.SIGTERM)
