"""The embedded TES scheduler: queued tasks start when their cores and RAM are free.

One scheduler thread runs in the supervisor process. It starts queued tasks in submission order
as long as the head of the queue fits in what is free (``cpu_cores``, ``ram_gb``; a task that
asks for none counts the configured defaults), so a burst never oversubscribes the machine and a
big task is not starved by small ones behind it. Each task gets a runner process
(:mod:`wes_bridge.tes.runner`); a thread per runner wakes the scheduler when it exits, and the
task's final state and log are taken from the runner's ``result.json``.

After a restart every task left INITIALIZING, RUNNING or CANCELING is re-attached if its runner
still runs, finished from its result if it ended meanwhile, and otherwise failed with the reason;
queued tasks simply run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..config import Settings
from ..drivers import DriverLauncher, DriverProcess
from .models import TERMINAL_TASK_STATES
from .runner import (
    FetchPolicy,
    TaskFiles,
    TaskLaunch,
    now_rfc3339,
    probe_runner,
    runner_main,
)
from .store import ACTIVE_TASK_STATES, TaskRow, TesStore

__all__ = ["Capacity", "TesScheduler", "cancel_task", "capacity_of"]

log = logging.getLogger("wes_bridge.tes")


@dataclass(frozen=True)
class Capacity:
    cpu_cores: int
    ram_gb: float


def capacity_of(settings: Settings) -> Capacity:
    """What the embedded TES may use: the configured limits, else the whole machine."""
    cores = settings.tes.cpu_cores or os.cpu_count() or 1
    ram = settings.tes.ram_gb or psutil.virtual_memory().total / 1e9
    return Capacity(cores, ram)


def task_needs(settings: Settings, resources: dict[str, Any] | None) -> tuple[int, float]:
    resources = resources or {}
    cores = resources.get("cpu_cores") or settings.tes.default_cpu_cores
    ram = resources.get("ram_gb")
    return int(cores), float(ram if ram is not None else settings.tes.default_ram_gb)


def cannot_fit(capacity: Capacity, cores: int, ram_gb: float) -> str | None:
    """Why a task can never run here, or None."""
    if cores > capacity.cpu_cores:
        return (
            f"the task asks for {cores} CPU cores; this TES has {capacity.cpu_cores} "
            "(tes.cpu_cores)"
        )
    if ram_gb > capacity.ram_gb:
        return (
            f"the task asks for {ram_gb:g} GB of RAM; this TES has {capacity.ram_gb:.1f} GB "
            "(tes.ram_gb)"
        )
    return None


def cancel_task(tes: TesStore, task_id: str) -> str | None:
    """Ask for a task to be cancelled; returns its new state, or None if it is unknown.

    Queued tasks are cancelled at once; running ones move to CANCELING and the scheduler stops
    their runner. A finished task keeps its state (the caller reports that).
    """
    for _ in range(5):
        state = tes.get_state(task_id)
        if state is None or state in TERMINAL_TASK_STATES or state == "CANCELING":
            return state
        if state == "QUEUED":
            if tes.transition(task_id, "CANCELED", {"QUEUED"}, logs=[_cancelled_log()]):
                return "CANCELED"
            continue
        if tes.transition(task_id, "CANCELING", {"INITIALIZING", "RUNNING"}):
            return "CANCELING"
    return tes.get_state(task_id)


def _cancelled_log(note: str = "cancelled before it started") -> dict[str, Any]:
    now = now_rfc3339()
    return {"logs": [], "outputs": [], "start_time": now, "end_time": now, "system_logs": [note]}


@dataclass
class _Active:
    task_id: str
    files: TaskFiles
    process: DriverProcess
    cpu_cores: int
    ram_gb: float
    events_size: int = 0
    running: bool = False
    kill_at: float | None = None
    exited: bool = False


class TesScheduler:
    def __init__(
        self,
        settings: Settings,
        tes: TesStore,
        launcher: DriverLauncher,
        wake: Any = None,
    ) -> None:
        self.settings = settings
        self.tes = tes
        self.launcher = launcher
        self.capacity = capacity_of(settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake: Any = wake if wake is not None else threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._thread: threading.Thread | None = None
        self.input_roots = [settings.data_dir, *settings.tes.input_roots]
        self.output_roots = [settings.data_dir, *settings.tes.output_roots]

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="tes-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def notify(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._tick()
            except Exception:
                log.exception("TES scheduler tick failed; retrying")
            # Short: a running task's RUNNING state is read from its events file.
            self._wake.wait(0.2)

    # -- one pass ---------------------------------------------------------------------------
    def _tick(self) -> None:
        with self._lock:
            active = list(self._active.values())
        states = self.tes.states_of([a.task_id for a in active]) if active else {}
        now = time.monotonic()
        for task in active:
            if task.exited:
                self._finish(task, states.get(task.task_id))
                continue
            state = states.get(task.task_id)
            if state == "CANCELING" and task.kill_at is None:
                log.info("task %s: cancelling; SIGTERM to its runner", task.task_id)
                task.process.signal_group(signal.SIGTERM)
                task.kill_at = now + self.settings.tes.cancel_grace_seconds
            elif task.kill_at is not None and now >= task.kill_at:
                task.process.signal_group(signal.SIGKILL)
                task.kill_at = now + 3600
            elif not task.running and state == "INITIALIZING":
                self._look_for_running(task)
        if not self._stop.is_set():
            self._start_queued()

    def _free(self) -> tuple[int, float]:
        with self._lock:
            cores = sum(a.cpu_cores for a in self._active.values())
            ram = sum(a.ram_gb for a in self._active.values())
        return self.capacity.cpu_cores - cores, self.capacity.ram_gb - ram

    def _start_queued(self) -> None:
        free_cores, free_ram = self._free()
        if free_cores <= 0:
            return
        for row in self.tes.queued(limit=max(free_cores, 1) * 4):
            if row.cpu_cores > free_cores or row.ram_gb > free_ram + 1e-9:
                return  # first come, first served: the head waits for room
            if not self.tes.transition(row.id, "INITIALIZING", {"QUEUED"}, claimed_by=self.owner):
                continue  # cancelled, or claimed by another scheduler
            if self._launch(row):
                free_cores -= row.cpu_cores
                free_ram -= row.ram_gb
            if free_cores <= 0:
                return

    def _launch(self, row: TaskRow) -> bool:
        files = TaskFiles(Path(row.task_dir))
        tes = self.settings.tes
        launch = TaskLaunch(
            task_id=row.id,
            task_dir=files.task_dir,
            task=row.request,
            backend=tes.backend,
            container_binary=tes.container_binary,
            input_roots=self.input_roots,
            output_roots=self.output_roots,
            fetch=FetchPolicy(
                allowed_hosts=self.settings.url_fetch_allowed_hosts,
                allow_private=self.settings.url_fetch_allow_private,
                max_bytes=tes.fetch_max_bytes,
                timeout_seconds=tes.fetch_timeout_seconds,
            ),
            tail_bytes=tes.log_tail_bytes,
            niceness=self.settings.driver_niceness,
            claim=uuid.uuid4().hex,
        )
        try:
            files.task_dir.mkdir(parents=True, exist_ok=True)
            files.claim.write_text(launch.claim, encoding="ascii")
            process = self.launcher.spawn(runner_main, launch)
        except Exception as exc:
            log.exception("task %s: could not start its runner", row.id)
            self._end(
                row.id,
                "SYSTEM_ERROR",
                ACTIVE_TASK_STATES,
                _cancelled_log(f"could not start the task runner: {type(exc).__name__}"),
            )
            return False
        self._attach(row, files, process)
        self.tes.update(row.id, runner_pid=process.pid, runner_started=process.create_time)
        return True

    def _attach(self, row: TaskRow, files: TaskFiles, process: DriverProcess) -> None:
        task = _Active(row.id, files, process, row.cpu_cores, row.ram_gb)
        with self._lock:
            self._active[row.id] = task

        def wait_for_exit() -> None:
            while not process.wait(timeout=5.0):
                if self._stop.is_set():
                    return
            task.exited = True
            self._wake.set()

        threading.Thread(target=wait_for_exit, name=f"task-{row.id}", daemon=True).start()

    def _look_for_running(self, task: _Active) -> None:
        try:
            size = os.stat(task.files.events).st_size
        except FileNotFoundError:
            return
        if size == task.events_size:
            return
        task.events_size = size
        with open(task.files.events, encoding="utf-8") as fh:
            for line in fh:
                if '"RUNNING"' in line:
                    task.running = True
                    self.tes.transition(task.task_id, "RUNNING", {"INITIALIZING"})
                    return

    def _finish(self, task: _Active, state: str | None) -> None:
        with self._lock:
            self._active.pop(task.task_id, None)
        self._collect(task.task_id, task.files, state, recovering=False)

    def _collect(self, task_id: str, files: TaskFiles, state: str | None, recovering: bool) -> None:
        result = _read_result(files)
        if state == "CANCELING":
            log_ = result["log"] if result else _cancelled_log("cancelled while running")
            if result:
                log_.setdefault("system_logs", []).append("cancelled while running")
            self._end(task_id, "CANCELED", {"CANCELING"}, log_)
            return
        if result is None:
            why = (
                "the task runner was no longer running when the TES restarted and left no result"
                if recovering
                else "the task runner exited without leaving a result"
            )
            self._end(task_id, "SYSTEM_ERROR", ACTIVE_TASK_STATES, _cancelled_log(why))
            return
        self._end(task_id, str(result["state"]), ACTIVE_TASK_STATES, result["log"])

    def _end(
        self, task_id: str, state: str, from_states: set[str] | frozenset[str], log_: Any
    ) -> None:
        if self.tes.transition(task_id, state, from_states, logs=[log_]):
            log.info("task %s -> %s", task_id, state)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        for row in self.tes.in_states(ACTIVE_TASK_STATES):
            files = TaskFiles(Path(row.task_dir))
            process = (
                DriverProcess.attach(row.runner_pid, row.runner_started) if row.runner_pid else None
            )
            if process is None and not row.runner_pid:
                # Claimed, but the runner's pid was never recorded: ask the task's lock.
                pid = probe_runner(files)
                process = DriverProcess.attach(pid, None) if pid else None
                if process is not None:
                    self.tes.update(
                        row.id, runner_pid=process.pid, runner_started=process.create_time
                    )
                elif not files.result.exists():
                    if row.state == "CANCELING":
                        self._end(row.id, "CANCELED", {"CANCELING"}, _cancelled_log())
                    else:
                        self.tes.transition(
                            row.id, "QUEUED", {"INITIALIZING", "RUNNING"}, claimed_by=None
                        )
                    continue
            if process is not None:
                log.info("task %s: re-attached to runner pid %d", row.id, process.pid)
                self._attach(row, files, process)
                continue
            self._collect(row.id, files, row.state, recovering=True)


def _read_result(files: TaskFiles) -> dict[str, Any] | None:
    try:
        data = json.loads(files.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "state" not in data or "log" not in data:
        return None
    return data
