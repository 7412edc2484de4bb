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

import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from ..config import Settings
from ..drivers import DriverLauncher, DriverProcess
from ..plugin import RUN_TAG
from .backends import SandboxPolicy
from .models import TERMINAL_TASK_STATES
from .runner import (
    FetchPolicy,
    TaskFailure,
    TaskFiles,
    TaskLaunch,
    idle_runner_main,
    now_rfc3339,
    probe_runner,
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
            if tes.transition(task_id, "CANCELED", {"QUEUED"}, logs=[note_log()]):
                return "CANCELED"
            continue
        if tes.transition(task_id, "CANCELING", {"INITIALIZING", "RUNNING"}):
            return "CANCELING"
    return tes.get_state(task_id)


def note_log(note: str = "cancelled before it started") -> dict[str, Any]:
    """The log of a task that ends without running anything: times and a system note."""
    now = now_rfc3339()
    return {"logs": [], "outputs": [], "start_time": now, "end_time": now, "system_logs": [note]}


# How long after an idle runner was taken its replacement is forked.
_REFILL_DELAY = 0.05


@dataclass
class _Idle:
    process: DriverProcess
    tasks: Connection  # where its TaskLaunch is sent


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
        sandbox_read_only: tuple[Path, ...] = (),
    ) -> None:
        self.settings = settings
        self.sandbox_read_only = sandbox_read_only
        """Paths the loaded engines' tasks read (their ``sandbox_read_only``), shown read-only
        in the sandbox besides ``tes.sandbox_read_only``."""
        self.tes = tes
        self.launcher = launcher
        self.capacity = capacity_of(settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # What wakes the loop: the API's pipe (a task was queued or cancelled), our own
        # notify pipe, and the runners' "done" pipe (a result was written).
        self._external = wake
        self._notify_r, self._notify_w = multiprocessing.Pipe(duplex=False)
        self._done_r, self._done_w = multiprocessing.Pipe(duplex=False)
        os.set_blocking(self._notify_w.fileno(), False)
        os.set_blocking(self._done_w.fileno(), False)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._thread: threading.Thread | None = None
        # Runners forked ahead of need (a fork from the forkserver costs ~20 ms).
        self._idle: list[_Idle] = []
        self._idle_lock = threading.Lock()
        self._refill = threading.Event()
        self._filler: threading.Thread | None = None
        self.input_roots = [settings.data_dir, *settings.tes.input_roots]
        self.output_roots = [settings.data_dir, *settings.tes.output_roots]

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="tes-scheduler", daemon=True)
        self._thread.start()
        self._filler = threading.Thread(target=self._fill, name="tes-runner-pool", daemon=True)
        self._filler.start()

    def stop(self) -> None:
        self._stop.set()
        self.notify()
        self._refill.set()
        for thread in (self._thread, self._filler):
            if thread is not None:
                thread.join(10)
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for runner in idle:  # end of file on its pipe: it exits without running anything
            runner.tasks.close()

    def notify(self) -> None:
        with contextlib.suppress(OSError):
            self._notify_w.send_bytes(b"!")

    def _wait(self, timeout: float) -> None:
        pipes = [self._notify_r, self._done_r]
        external = getattr(self._external, "reader", None)
        if external is not None:
            pipes.append(external)
        for ready in multiprocessing.connection.wait(pipes, timeout):
            with contextlib.suppress(OSError, EOFError):
                while ready.poll(0):  # type: ignore[union-attr]
                    ready.recv_bytes()  # type: ignore[union-attr]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("TES scheduler tick failed; retrying")
            # Short: a running task's RUNNING state is read from its events file.
            self._wait(0.2)

    # -- the pool of idle runners -----------------------------------------------------------
    def _pool_size(self) -> int:
        return min(2, self.capacity.cpu_cores)

    def _fill(self) -> None:
        while not self._stop.is_set():
            with self._idle_lock:
                missing = self._pool_size() - len(self._idle)
            if missing <= 0:
                self._refill.wait(1.0)
                self._refill.clear()
                # Fork the replacement once the task just handed over is under way: the fork
                # would otherwise compete with that task's start for the CPU.
                self._stop.wait(_REFILL_DELAY)
                continue
            try:
                runner = self._spawn_idle()
            except Exception:
                log.exception("could not fork an idle task runner; retrying")
                self._stop.wait(1.0)
                continue
            with self._idle_lock:
                self._idle.append(runner)

    def _spawn_idle(self) -> _Idle:
        tasks_r, tasks_w = multiprocessing.Pipe(duplex=False)
        try:
            process = self.launcher.spawn(idle_runner_main, (tasks_r, self._done_w))
        finally:
            tasks_r.close()
        return _Idle(process, tasks_w)

    def _take_idle(self) -> _Idle:
        while True:
            with self._idle_lock:
                runner = self._idle.pop(0) if self._idle else None
            self._refill.set()
            if runner is None:
                return self._spawn_idle()
            if runner.process.wait(timeout=0):  # it died meanwhile
                runner.tasks.close()
                continue
            return runner

    def _give_back(self, runner: _Idle) -> None:
        with self._idle_lock:
            self._idle.insert(0, runner)

    # -- one pass ---------------------------------------------------------------------------
    def _tick(self) -> None:
        with self._lock:
            active = list(self._active.values())
        going = []
        for task in active:
            if task.exited or task.files.result.exists():
                # Its result is written: the cores are free even before the runner is reaped.
                self._finish(task)
            else:
                going.append(task)
        states = self.tes.states_of([a.task_id for a in going]) if going else {}
        now = time.monotonic()
        for task in going:
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
            if self._launch(row):
                free_cores -= row.cpu_cores
                free_ram -= row.ram_gb
            if free_cores <= 0:
                return

    def _sandbox_policy(self, row: TaskRow) -> SandboxPolicy:
        """What a sandboxed task may see besides its own directory: the directory of the
        run it is tagged with, if that run is its user's."""
        tes = self.settings.tes
        run_dir: Path | None = None
        run_id = (row.tags or {}).get(RUN_TAG)
        if run_id:
            record = self.tes.store.get_run(run_id)
            if record is not None and record.subject == row.owner:
                candidate = Path(record.run_dir)
                runs = self.settings.runs_dir.resolve()
                if candidate.resolve().parent == runs:
                    run_dir = candidate
        return SandboxPolicy(
            data_dir=self.settings.data_dir,
            hidden=tuple([*tes.input_roots, *tes.output_roots]),
            run_dir=run_dir,
            network=tes.sandbox_network,
            read_only=(*tes.sandbox_read_only, *self.sandbox_read_only),
        )

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
            sandbox=self._sandbox_policy(row) if tes.backend == "host-sandbox" else None,
        )
        try:
            runner = self._take_idle()
        except Exception as exc:
            log.exception("task %s: could not start a runner", row.id)
            self._end(
                row.id,
                "SYSTEM_ERROR",
                {"QUEUED"},
                note_log(f"could not start the task runner: {type(exc).__name__}"),
            )
            return False
        process = runner.process
        # One write claims the task and records its runner: after a crash, a recorded runner
        # that never took the task (see runner.take_claim) means the task had not started.
        if not self.tes.transition(
            row.id,
            "INITIALIZING",
            {"QUEUED"},
            claimed_by=self.owner,
            runner_pid=process.pid,
            runner_started=process.create_time,
        ):
            self._give_back(runner)
            return False  # cancelled, or claimed by another scheduler
        try:
            files.task_dir.mkdir(parents=True, exist_ok=True)
            files.claim.write_text(launch.claim, encoding="ascii")
            self._hand_over(runner, launch)
        except Exception as exc:
            log.exception("task %s: could not hand it to its runner", row.id)
            runner.tasks.close()
            self._end(
                row.id,
                "SYSTEM_ERROR",
                ACTIVE_TASK_STATES,
                note_log(f"could not start the task runner: {type(exc).__name__}"),
            )
            return False
        self._attach(row, files, process)
        return True

    @staticmethod
    def _hand_over(runner: _Idle, launch: TaskLaunch) -> None:
        runner.tasks.send(launch)
        runner.tasks.close()

    def _attach(self, row: TaskRow, files: TaskFiles, process: DriverProcess) -> None:
        task = _Active(row.id, files, process, row.cpu_cores, row.ram_gb)
        with self._lock:
            self._active[row.id] = task

        def wait_for_exit() -> None:
            while not process.wait(timeout=5.0):
                if self._stop.is_set():
                    return
            task.exited = True
            self.notify()

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

    def _finish(self, task: _Active) -> None:
        with self._lock:
            self._active.pop(task.task_id, None)
        result = _read_result(task.files)
        if result is not None:
            # No read first: the common end is one conditional write; a task cancelled
            # meanwhile (CANCELING) fails that write and ends CANCELED instead.
            state, log_ = str(result["state"]), result["log"]
            if self.tes.transition(task.task_id, state, {"INITIALIZING", "RUNNING"}, logs=[log_]):
                log.info("task %s -> %s", task.task_id, state)
                return
        self._collect(task.task_id, task.files, self.tes.get_state(task.task_id), recovering=False)

    def _collect(self, task_id: str, files: TaskFiles, state: str | None, recovering: bool) -> None:
        result = _read_result(files)
        if state == "CANCELING":
            log_ = result["log"] if result else note_log("cancelled while running")
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
            self._end(task_id, "SYSTEM_ERROR", ACTIVE_TASK_STATES, note_log(why))
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
            # Who holds the task's lock is its runner; when nobody does, the claim is withdrawn
            # so that no runner forked before the crash can take the task afterwards.
            try:
                pid = probe_runner(files)
            except TaskFailure as exc:
                log.error("task %s: left as it is: %s", row.id, exc.message)
                continue
            process = DriverProcess.attach(pid, None) if pid else None
            if process is not None:
                if process.pid != row.runner_pid:
                    self.tes.update(
                        row.id, runner_pid=process.pid, runner_started=process.create_time
                    )
                log.info("task %s: re-attached to runner pid %d", row.id, process.pid)
                self._attach(row, files, process)
                continue
            if files.result.exists() or files.pid.exists():
                # It ran: finished while we were down, or its runner died without a result.
                self._collect(row.id, files, row.state, recovering=True)
                continue
            # It never started (the crash came between its claim and its runner taking it).
            if row.state == "CANCELING":
                self._end(row.id, "CANCELED", {"CANCELING"}, note_log())
            else:
                self.tes.transition(
                    row.id,
                    "QUEUED",
                    {"INITIALIZING", "RUNNING"},
                    claimed_by=None,
                    runner_pid=None,
                    runner_started=None,
                )


def _read_result(files: TaskFiles) -> dict[str, Any] | None:
    try:
        data = json.loads(files.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "state" not in data or "log" not in data:
        return None
    return data
