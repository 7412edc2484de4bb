"""A real `wes-bridge serve` process for tests, with every WES response spec-checked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import TERMINAL, WES, WORKFLOWS
from .spec_check import check_response, wes_api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = env or {}
        self.base = f"http://127.0.0.1:{port}{WES}"
        self.log = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "WES_BRIDGE_CANCEL_GRACE_SECONDS": "2", **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wes_bridge",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # so that SIGKILL can take the whole node down
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/service-info").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.log.read_text())

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = httpx.request(method, self.base + path, timeout=30, **kwargs)  # type: ignore[arg-type]
        check_response(
            wes_api(),
            method,
            WES + path.split("?")[0],
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
        )
        return response

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def submit_sleep(self, seconds: int) -> str:
        wf = (WORKFLOWS / "cwl/sleep/sleep.cwl").read_bytes()
        response = self.request(
            "POST",
            "/runs",
            data={
                "workflow_type": "CWL",
                "workflow_type_version": "v1.2",
                "workflow_url": "sleep.cwl",
                "workflow_params": json.dumps({"seconds": seconds}),
            },
            files=[("workflow_attachment", ("sleep.cwl", wf))],
        )
        assert response.status_code == 200, response.text
        return str(response.json()["run_id"])

    def wait_task(self, run_id: str) -> None:
        for _ in range(600):
            if self.get(f"/runs/{run_id}/tasks").json()["task_logs"]:
                return
            time.sleep(0.05)
        raise AssertionError("no task started")

    def wait(self, run_id: str, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.get(f"/runs/{run_id}").json()
            if log["state"] in TERMINAL:
                return dict(log)
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not finish")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """SIGTERM the server (a clean stop); SIGKILL kills the node's whole process group
        (server, supervisor, warm process), as a crash would. Engine drivers run in sessions
        of their own and survive both."""
        assert self.proc is not None
        if sig == signal.SIGKILL:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)
