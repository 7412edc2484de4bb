"""A real `wes-bridge tes serve` process for tests, with every TES response spec-checked.

Also the process look-ups the crash tests need. The API does not expose a task's runner, so it
is found the way an operator would find it: with psutil, as the process that has files open (or
its working directory) under the task's directory in the data dir. A runner is the leader of a
session of its own, so its process group is the runner and every executor process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from .spec_check import check_response, tes_api

__all__ = [
    "TERMINAL",
    "TES",
    "TesServer",
    "find_task_dir",
    "free_port",
    "kill_groups",
    "process_groups_under",
    "processes_under",
    "wait_groups_gone",
]

TES = "/ga4gh/tes/v1"
TERMINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TesServer:
    """``wes-bridge tes serve`` on a data dir under ``root``, started in a session of its own.

    ``settings`` are ``WES_BRIDGE_*`` environment variables; those of the calling environment
    are not passed on, so a developer's shell cannot change what a test sees. The server's
    working directory is ``root/server-cwd``: every process it forks (its supervisor, the warm
    forkserver, the task runners) inherits it, which is how a test finds them all again.
    """

    def __init__(self, root: Path, settings: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.workdir = root / "server-cwd"
        self.log = root / "server.log"
        self.settings = dict(settings or {})
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """What a TES client is given: the server, without the TES path."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return self.url + TES

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # start_new_session: the server leads its own group

    # -- life cycle -------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._start_once(timeout):
                return
            self.port = free_port()  # someone else took the port meanwhile
        raise AssertionError("server could not bind a port:\n" + self.log_text())

    def _start_once(self, timeout: float) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WES_BRIDGE_")}
        env.update(self.settings)
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            log.write(f"--- test: starting the server on port {self.port} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wes_bridge",
                    "tes",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,  # SIGKILL of the group takes the whole server down
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log_text(since_start=True).lower():
                    return False
                raise AssertionError("server exited while starting:\n" + self.log_text())
            try:
                if self.get("/service-info").status_code == 200:
                    return True
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not answer within {timeout} s:\n" + self.log_text())

    def log_text(self, since_start: bool = False) -> str:
        if not self.log.exists():
            return ""
        data = self.log.read_bytes()
        return data[self._log_offset if since_start else 0 :].decode("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """SIGTERM the server process (a clean stop), or SIGKILL its whole process group (the
        server, its supervisor and forkserver), as a crash would. Task runners are sessions of
        their own and survive both. Returns the server's exit status."""
        assert self.proc is not None
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
        else:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Whatever is left of the server's process group (for teardown)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    # -- HTTP, spec-checked -----------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, self.base + path, timeout=60, **kwargs)
        described = check_response(
            tes_api(),
            method,
            TES + path.split("?")[0],
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
        )
        assert described, f"{method} {path} is not an operation of the TES document"
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def create(self, task: dict[str, Any]) -> str:
        response = self.request("POST", "/tasks", json=task)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def task(self, task_id: str, view: str = "FULL") -> dict[str, Any]:
        response = self.get(f"/tasks/{task_id}", params={"view": view})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def state(self, task_id: str) -> str:
        return str(self.task(task_id, "MINIMAL")["state"])

    def states(self, task_ids: Iterable[str]) -> dict[str, str]:
        return {task_id: self.state(task_id) for task_id in task_ids}

    def cancel(self, task_id: str) -> httpx.Response:
        return self.request("POST", f"/tasks/{task_id}:cancel")

    def wait(
        self, task_id: str, states: Iterable[str] = TERMINAL, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll until the task is in one of ``states``; returns its FULL view."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            state = self.state(task_id)
            if state in wanted:
                return self.task(task_id)
            time.sleep(0.05)
        raise AssertionError(
            f"task {task_id} still {state} after {timeout} s, not {sorted(wanted)}; "
            f"server log:\n{self.log_text()}"
        )


# -- processes ------------------------------------------------------------------------------
def _under(path: str, root: Path) -> bool:
    candidate = Path(path)
    return candidate == root or root in candidate.parents


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose working directory or an open file is under ``root``."""
    root = root.resolve()
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if _under(proc.cwd(), root) or any(_under(f.path, root) for f in proc.open_files()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def process_groups_under(root: Path) -> set[int]:
    """The process groups of :func:`processes_under`, never the test's own."""
    groups = set()
    for proc in processes_under(root):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(proc.pid))
    groups.discard(os.getpgid(0))
    return groups


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of one process group."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def wait_groups_gone(groups: Iterable[int], timeout: float = 15) -> None:
    pending = set(groups)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = {g for g in pending if group_members(g)}
        if pending:
            time.sleep(0.1)
    if pending:
        left = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for g in pending for p in group_members(g)]
        raise AssertionError(f"process groups {sorted(pending)} still alive: {left}")


def kill_groups(groups: Iterable[int]) -> None:
    own = os.getpgid(0)
    for pgid in groups:
        if pgid in (own, 0, 1):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def find_task_dir(data_dir: Path, task_id: str, timeout: float = 30) -> Path:
    """The task's directory somewhere under the data dir (the layout is not the test's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in data_dir.rglob(task_id):
            if path.is_dir():
                return path
        time.sleep(0.1)
    raise AssertionError(f"no directory for task {task_id} under {data_dir}")
