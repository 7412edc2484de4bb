"""Runs end to end through the WES API with the real cwltool."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .conftest import WES, WORKFLOWS, SpecCheckedClient


def _sha1(path: Path) -> str:
    return "sha1$" + hashlib.sha1(path.read_bytes()).hexdigest()


def test_hello_world_completes_with_outputs_logs_and_task(client: SpecCheckedClient) -> None:
    response = client.submit(
        "cwl/hello/hello.cwl",
        {"message": "Hello from a test"},
        tags=json.dumps({"project": "demo"}),
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    assert client.wait(run_id) == "COMPLETE"

    log = client.get(f"{WES}/runs/{run_id}").json()
    assert log["request"]["workflow_engine"] == "cwltool"
    assert log["request"]["tags"] == {"project": "demo"}
    greeting = log["outputs"]["greeting"]
    out_path = Path(greeting["path"])
    assert out_path.read_text() == "Hello from a test\n"
    assert greeting["checksum"] == _sha1(out_path)
    assert greeting["size"] == out_path.stat().st_size
    assert greeting["location"] == out_path.as_uri()
    assert log["run_log"]["exit_code"] == 0
    assert log["run_log"]["start_time"] <= log["run_log"]["end_time"]
    assert log["run_log"]["cmd"][0] == "cwltool"

    # Logs and outputs are reachable through the URLs the run log gives.
    stderr = client.get(log["run_log"]["stderr"])
    assert stderr.status_code == 200
    assert "each CommandLineTool job is a task on the node's embedded TES" in stderr.text
    assert "Final process status is success" in stderr.text
    download = client.get(f"{WES}/runs/{run_id}/outputs/hello.txt")
    assert download.content == b"Hello from a test\n"

    tasks = client.get(log["task_logs_url"]).json()
    assert tasks["next_page_token"] == ""
    [task] = tasks["task_logs"]
    assert task["name"] == "hello.cwl"
    assert task["cmd"] == ["echo", "Hello from a test"]
    assert task["exit_code"] == 0
    one = client.get(f"{WES}/runs/{run_id}/tasks/{task['id']}").json()
    assert one == task
    assert client.get(task["stdout"]).text == "Hello from a test\n"


def test_workflow_with_nested_attachments_and_relative_input(client: SpecCheckedClient) -> None:
    root = WORKFLOWS / "cwl/pipeline"
    files = [
        (str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    ]
    response = client.submit(
        "",
        {"infile": {"class": "File", "location": "data.txt"}},
        attachments=files,
        workflow_url="workflow.cwl",
        workflow_engine_parameters=json.dumps({"parallel": True}),
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    assert client.wait(run_id) == "COMPLETE"
    log = client.get(f"{WES}/runs/{run_id}").json()
    report = log["outputs"]["report"]
    assert Path(report["path"]).read_text() == "lines: 3\n"
    assert report["checksum"] == "sha1$4f8ad5eabee5e84e0ec3c7a452ff3b865732c58d"
    names = [t["name"] for t in client.get(f"{WES}/runs/{run_id}/tasks").json()["task_logs"]]
    assert sorted(names) == ["count", "report"]


def test_failing_step_gives_executor_error_with_exit_code(client: SpecCheckedClient) -> None:
    run_id = client.submit("cwl/fail/fail.cwl").json()["run_id"]
    assert client.wait(run_id) == "EXECUTOR_ERROR"
    log = client.get(f"{WES}/runs/{run_id}").json()
    # The run's exit code is the failing step's; the run log names the step, its TES task
    # and the tail of its stderr.
    assert log["run_log"]["exit_code"] == 3
    system_logs = log["run_log"]["system_logs"]
    assert any("cwltool exited with code 1" in s for s in system_logs)
    [task] = client.get(f"{WES}/runs/{run_id}/tasks").json()["task_logs"]
    assert task["exit_code"] == 3
    assert task["tes_uri"].endswith(f"/ga4gh/tes/v1/tasks/{task['id']}")
    assert "state: EXECUTOR_ERROR" in task["system_logs"]
    [step] = [s for s in system_logs if s.startswith("step ")]
    assert f"(TES task {task['id']}) exited with code 3" in step
    assert "about to fail" in step
    assert "about to fail" in client.get(log["run_log"]["stderr"]).text
    assert "about to fail" in client.get(task["stderr"]).text


def test_cancel_running_run_kills_the_step(client: SpecCheckedClient) -> None:
    run_id = client.submit("cwl/sleep/sleep.cwl", {"seconds": 60}).json()["run_id"]
    client.wait(run_id, states={"RUNNING"})
    # Wait until the step itself runs, so cancelling has a process tree to stop.
    for _ in range(400):
        if client.get(f"{WES}/runs/{run_id}/tasks").json()["task_logs"]:
            break
        __import__("time").sleep(0.05)
    response = client.post(f"{WES}/runs/{run_id}/cancel")
    assert response.status_code == 200
    assert response.json() == {"run_id": run_id}
    assert client.wait(run_id, timeout=30) == "CANCELED"
    [task] = client.get(f"{WES}/runs/{run_id}/tasks").json()["task_logs"]
    assert "state: CANCELED" in task["system_logs"]
    again = client.post(f"{WES}/runs/{run_id}/cancel")
    assert again.status_code == 400
    assert "already ended (CANCELED)" in again.json()["msg"]


def test_cancel_queued_run(settings_one_slot_client: SpecCheckedClient) -> None:
    client = settings_one_slot_client
    first = client.submit("cwl/sleep/sleep.cwl", {"seconds": 30}).json()["run_id"]
    second = client.submit("cwl/hello/hello.cwl").json()["run_id"]
    client.wait(first, states={"RUNNING"})
    assert client.get(f"{WES}/runs/{second}/status").json()["state"] == "QUEUED"
    assert client.post(f"{WES}/runs/{second}/cancel").status_code == 200
    assert client.get(f"{WES}/runs/{second}/status").json()["state"] == "CANCELED"
    client.post(f"{WES}/runs/{first}/cancel")
    assert client.wait(first, timeout=30) == "CANCELED"


def test_list_runs_pagination_is_stable_and_filters(client: SpecCheckedClient) -> None:
    ids = []
    for i in range(7):
        tag = {"batch": "a" if i % 2 == 0 else "b", "n": str(i)}
        ids.append(client.submit("cwl/hello/hello.cwl", tags=json.dumps(tag)).json()["run_id"])
    first = client.get(f"{WES}/runs", params={"page_size": 3}).json()
    assert [r["run_id"] for r in first["runs"]] == ids[::-1][:3]
    assert all("tags" in r for r in first["runs"])
    # New runs arriving between pages do not shift the next page.
    late = client.submit("cwl/hello/hello.cwl").json()["run_id"]
    second = client.get(
        f"{WES}/runs", params={"page_size": 3, "page_token": first["next_page_token"]}
    ).json()
    assert [r["run_id"] for r in second["runs"]] == ids[::-1][3:6]
    third = client.get(
        f"{WES}/runs", params={"page_size": 3, "page_token": second["next_page_token"]}
    ).json()
    assert [r["run_id"] for r in third["runs"]] == ids[:1]
    assert third["next_page_token"] == ""

    tagged = client.get(f"{WES}/runs", params={"tag_key": "batch", "tag_value": "b"}).json()
    assert [r["run_id"] for r in tagged["runs"]] == [ids[5], ids[3], ids[1]]
    has_key = client.get(f"{WES}/runs", params={"tag_key": "n"}).json()
    assert len(has_key["runs"]) == 7
    for run_id in [*ids, late]:
        client.wait(run_id)
    done = client.get(f"{WES}/runs", params={"state": "COMPLETE"}).json()
    assert {r["run_id"] for r in done["runs"]} == {*ids, late}
    assert client.get(f"{WES}/runs", params={"state": "RUNNING"}).json()["runs"] == []


def test_service_info_reports_engines_and_counts(client: SpecCheckedClient) -> None:
    run_id = client.submit("cwl/hello/hello.cwl").json()["run_id"]
    client.wait(run_id)
    info = client.get(f"{WES}/service-info").json()
    assert info["workflow_type_versions"]["CWL"]["workflow_type_version"] == [
        "v1.0",
        "v1.1",
        "v1.2",
    ]
    from importlib.metadata import version

    import cwltool  # noqa: F401

    assert info["workflow_engine_versions"]["cwltool"]["workflow_engine_version"] == [
        version("cwltool")
    ]
    assert info["system_state_counts"]["COMPLETE"] == 1
    assert info["system_state_counts"]["QUEUED"] == 0
    names = {p["name"]: p for p in info["default_workflow_engine_parameters"]}
    assert names["parallel"] == {"name": "parallel", "type": "bool", "default_value": "false"}
    assert "task on the node's TES" in info["tags"]["engine.cwltool.execution"]
    # Where the steps run is said, not hidden: no container runtime on this TES.
    assert info["tags"]["tes.url"].endswith("/ga4gh/tes/v1")
    assert "without a container" in info["tags"]["tes.execution"]
    assert info["tags"]["tes.shared_filesystem"] == "yes"
    assert info["supported_wes_versions"] == ["1.1.0"]


def test_what_toil_wes_client_sends(client: SpecCheckedClient) -> None:
    """Toil's client: lower-case type, flag-style engine parameters with nulls, a `:` in the
    workflow name, the same dependency attached twice, percent-encoded input locations."""
    tool = (WORKFLOWS / "cwl/pipeline/tools/count.cwl").read_bytes()
    data = b"1\n2\n"
    response = client.submit(
        "",
        {"infile": {"class": "File", "location": "in%3Aput.txt"}},
        attachments=[("colon:count.cwl", tool), ("in:put.txt", data), ("in:put.txt", data)],
        workflow_type="cwl",
        workflow_url="colon:count.cwl",
        workflow_engine_parameters=json.dumps(
            {"--outdir": "/tmp/elsewhere", "--quiet": None, "--on-error": "continue"}
        ),
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    assert client.wait(run_id) == "COMPLETE"
    log = client.get(f"{WES}/runs/{run_id}").json()
    assert log["request"]["workflow_engine_parameters"]["--quiet"] == "true"
    count = Path(log["outputs"]["count"]["path"])
    assert count.read_text().strip() == "2"
    assert "/tmp/elsewhere" not in str(count)
    assert "--on-error" in log["run_log"]["cmd"]
    assert log["run_log"]["cmd"][log["run_log"]["cmd"].index("--on-error") + 1] == "continue"


def test_unknown_command_line_flag_is_refused(client: SpecCheckedClient) -> None:
    response = client.submit(
        "cwl/hello/hello.cwl",
        workflow_engine_parameters=json.dumps({"--tmpdir-prefix": "/etc/"}),
    )
    assert response.status_code == 400
    assert "tmpdir_prefix" in response.json()["msg"]
