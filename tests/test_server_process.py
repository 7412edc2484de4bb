"""`wes-bridge serve` as a real process: start, SIGTERM, kill -9 and restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .live_server import Server, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", free_port())
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop(signal.SIGKILL)


def test_kill_9_while_running_then_restart_reattaches(server: Server) -> None:
    run_id = server.submit_sleep(10)
    server.wait_task(run_id)
    assert server.get(f"/runs/{run_id}/status").json()["state"] == "RUNNING"
    server.stop(signal.SIGKILL)
    server.start()
    log = server.wait(run_id)
    assert log["state"] == "COMPLETE"
    outputs = log["outputs"]
    assert isinstance(outputs, dict)
    assert Path(outputs["marker"]["path"]).read_text() == "done\n"
    assert f"run {run_id}: re-attached to driver pid" in server.log.read_text()


def test_kill_9_of_server_and_driver_gives_system_error_with_reason(server: Server) -> None:
    run_id = server.submit_sleep(30)
    server.wait_task(run_id)
    pid_row = server.get(f"/runs/{run_id}").json()
    assert pid_row["state"] == "RUNNING"
    server.stop(signal.SIGKILL)
    # The whole machine "crashed": the driver and its step die too.
    import sqlite3

    db = sqlite3.connect(server.data_dir / "wes-bridge.sqlite")
    [(pid,)] = db.execute("select driver_pid from runs where id = ?", (run_id,)).fetchall()
    db.close()
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    server.start()
    log = server.wait(run_id)
    assert log["state"] == "SYSTEM_ERROR"
    run_log = log["run_log"]
    assert isinstance(run_log, dict)
    assert any(
        "was no longer running when wes-bridge restarted" in s for s in run_log["system_logs"]
    )
    [task] = server.get(f"/runs/{run_id}/tasks").json()["task_logs"]
    assert "state: SYSTEM_ERROR" in task["system_logs"]


def test_sigterm_is_a_clean_shutdown_and_runs_survive_it(server: Server) -> None:
    run_id = server.submit_sleep(3)
    server.wait_task(run_id)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, as a service manager expects.
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    text = server.log.read_text()
    assert "Application shutdown complete" in text
    assert "still executing; they are re-attached at the next start" in text
    time.sleep(4)  # the step ends while no server is up; the driver waits for its TES
    server.start()
    log = server.wait(run_id)
    assert log["state"] == "COMPLETE"
    assert f"run {run_id}: re-attached to driver pid" in server.log.read_text()
    [task] = server.get(f"/runs/{run_id}/tasks").json()["task_logs"]
    assert task["exit_code"] == 0
    assert "state: COMPLETE" in task["system_logs"]


def test_logs_one_line_per_request_and_state_change(server: Server) -> None:
    run_id = server.submit_sleep(0)
    server.wait(run_id)
    text = server.log.read_text()
    assert '"POST /ga4gh/wes/v1/runs HTTP/1.1" 200' in text
    for state in ("INITIALIZING", "RUNNING", "COMPLETE"):
        assert f"run {run_id} -> {state}" in text
    assert "127.0.0.1" in text
    assert "serving WES at http://127.0.0.1:" in text
