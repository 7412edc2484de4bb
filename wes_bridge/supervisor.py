"""The run state machine: queue, launch, watch, cancel and recover runs.

::

    QUEUED -> INITIALIZING -> RUNNING -> COMPLETE | EXECUTOR_ERROR | SYSTEM_ERROR
       |            |             |
       +------------+-------------+--> CANCELING -> CANCELED   (QUEUED goes straight to CANCELED)

One supervisor thread per node claims QUEUED runs up to ``max_concurrent_runs`` and starts a
driver for each; a small thread per driver waits for it to exit and wakes the supervisor, which
collects the outcome. At start-up every run left INITIALIZING, RUNNING or CANCELING by an
earlier server is put in a true state: re-attached if its driver still runs, finished from its
``result.json`` if the driver completed meanwhile, re-queued if it never started, otherwise
SYSTEM_ERROR with the reason in ``system_logs``.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from .auth.core import run_credential
from .auth.sealed import TokenBox
from .config import Settings
from .drivers import DriverLauncher, DriverProcess, RunFiles, read_outcome
from .errors import InvalidTransition, NotFound
from .plugin import DriverOutcome, RunSpec
from .registry import EngineRegistry
from .store import ACTIVE_STATES, TERMINAL_STATES, RunRecord, RunStore
from .tes.link import TesLink, tes_endpoint

__all__ = ["Supervisor"]

log = logging.getLogger("wes_bridge.runs")

# A run that fails to start may meanwhile have been asked to cancel.
_STARTING = frozenset({"INITIALIZING", "CANCELING"})

# How often a running run's new task events are written to the store. Steps show up in
# GET /runs/{id}/tasks within this; what a run reports in its last moments is written with
# its final state, in the same transaction.
_INGEST_INTERVAL = 1.0

# Times a run's driver may fail to start for a transient reason before the run fails.
_LAUNCH_ATTEMPTS = 3


@dataclass
class _ActiveRun:
    run_id: str
    files: RunFiles
    process: DriverProcess
    events_offset: int = 0
    next_ingest: float = 0.0
    kill_at: float | None = None
    exited: bool = False
    tasks_seen: set[str] = field(default_factory=set)


class WakeEvent(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``: how the API wakes the supervisor."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def _move(
    store: RunStore,
    run_id: str,
    to_state: str,
    from_states: set[str] | frozenset[str],
    reason: str | None = None,
    **fields: Any,
) -> bool:
    moved = store.transition(run_id, to_state, from_states, reason=reason, **fields)
    if moved:
        log.info("run %s -> %s%s", run_id, to_state, f" ({reason})" if reason else "")
    return moved


def cancel_run(store: RunStore, run_id: str) -> str:
    """Ask for a run to be cancelled; returns its new state.

    QUEUED runs are cancelled at once; running ones move to CANCELING and the supervisor,
    which looks for CANCELING runs at every tick, stops their drivers. Raises for unknown runs
    and for runs that have already ended.
    """
    for _ in range(5):
        state = store.get_state(run_id)
        if state is None:
            raise NotFound(f"run {run_id} not found")
        if state in TERMINAL_STATES:
            raise InvalidTransition(
                f"run {run_id} has already ended ({state}); there is nothing to cancel"
            )
        if state == "CANCELING":
            return state
        if state == "QUEUED":
            if _move(store, run_id, "CANCELED", {"QUEUED"}, reason="cancelled before start"):
                return "CANCELED"
            continue
        if _move(
            store, run_id, "CANCELING", {"INITIALIZING", "RUNNING"}, reason="cancel requested"
        ):
            return "CANCELING"
    return store.get_state(run_id) or "UNKNOWN"


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        registry: EngineRegistry,
        launcher: DriverLauncher,
        wake: WakeEvent | None = None,
        tes_link: TesLink | None = None,
    ) -> None:
        self.settings = settings
        self.tes_link = tes_link
        self.store = store
        self.registry = registry
        self.launcher = launcher
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._active: dict[str, _ActiveRun] = {}
        self._launch_failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake: WakeEvent = wake if wake is not None else threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="wes-bridge-supervisor")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling. Running drivers go on; the next start re-attaches them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            still = list(self._active)
        if still:
            log.info(
                "stopping with %d run(s) still executing; they are re-attached at the "
                "next start: %s",
                len(still),
                ", ".join(still),
            )

    def notify(self) -> None:
        """A run was queued or cancelled: look now rather than at the next tick."""
        self._wake.set()

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    # -- state changes ----------------------------------------------------------------------
    def _move(
        self,
        run_id: str,
        to_state: str,
        from_states: set[str] | frozenset[str],
        reason: str | None = None,
        **fields: Any,
    ) -> bool:
        return _move(self.store, run_id, to_state, from_states, reason, **fields)

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._tick()
            except Exception:
                log.exception("supervisor tick failed; retrying")
            self._wake.wait(0.5)

    def _tick(self) -> None:
        with self._lock:
            active = list(self._active.values())
        cancelling = self.store.ids_in_state([a.run_id for a in active], "CANCELING")
        now = time.monotonic()
        for run in active:
            if run.exited:
                self._finish(run)
                continue
            if now >= run.next_ingest:
                self._ingest_events(run)
                run.next_ingest = now + _INGEST_INTERVAL
            if run.run_id in cancelling and run.kill_at is None:
                log.info(
                    "run %s: sending SIGTERM to driver process group %d",
                    run.run_id,
                    run.process.pid,
                )
                run.process.signal_group(signal.SIGTERM)
                run.kill_at = now + self.settings.cancel_grace_seconds
                self._cancel_tes_tasks(run.run_id)
            elif run.kill_at is not None and now >= run.kill_at:
                log.info(
                    "run %s: driver still alive after %.0f s; SIGKILL",
                    run.run_id,
                    self.settings.cancel_grace_seconds,
                )
                run.process.signal_group(signal.SIGKILL)
                run.kill_at = now + 3600
        if self._stop.is_set():
            return
        free = self.settings.max_concurrent_runs - self.active_count()
        for record in self.store.claim_queued(free, self.owner):
            log.info("run %s -> INITIALIZING", record.id)
            self._launch(record)

    # -- launching --------------------------------------------------------------------------
    def _spec(self, record: RunRecord) -> RunSpec:
        engine = self.registry.engines[record.engine]
        request = record.request
        params_model = engine.adapter.parameters_model
        engine_parameters = params_model.model_validate(
            request.get("workflow_engine_parameters") or {}
        )
        workflow_dir = Path(record.run_dir) / "workflow"
        return RunSpec(
            run_id=record.id,
            workflow_type=request["workflow_type"],
            workflow_type_version=request["workflow_type_version"],
            workflow_url=request["workflow_url"],
            workflow_path=workflow_dir / record.staged["workflow_path"],
            workflow_fragment=record.staged.get("workflow_fragment"),
            workflow_dir=workflow_dir,
            params=request.get("workflow_params") or {},
            engine_parameters=engine_parameters,
            tags=record.tags,
        )

    def _launch(self, record: RunRecord) -> None:
        engine = self.registry.engines.get(record.engine)
        if engine is None:
            self._move(
                record.id,
                "SYSTEM_ERROR",
                _STARTING,
                reason="engine unavailable",
                system_logs=[f"engine {record.engine!r} is not loaded on this node"],
            )
            return
        try:
            spec = self._spec(record)
        except (KeyError, ValidationError) as exc:
            self._move(
                record.id,
                "SYSTEM_ERROR",
                _STARTING,
                reason="bad stored request",
                system_logs=[f"cannot start run: {exc}"],
            )
            return
        files = RunFiles(Path(record.run_dir))
        try:
            process = self.launcher.launch(
                engine.target,
                engine.adapter.settings.model_dump(mode="json"),
                spec,
                files.run_dir,
                self.settings.driver_niceness,
                tes_endpoint(self.settings, record.id, token=self._tes_token(record)),
            )
        except Exception as exc:
            if self._requeue_after_launch_failure(record.id, exc):
                return
            log.exception("run %s: could not start the engine driver", record.id)
            self._move(
                record.id,
                "SYSTEM_ERROR",
                _STARTING,
                reason="driver start failed",
                system_logs=[f"could not start the engine driver: {type(exc).__name__}"],
            )
            return
        self._launch_failures.pop(record.id, None)
        driver: dict[str, Any] = {"driver_pid": process.pid, "driver_started": process.create_time}
        self._attach(record.id, files, process)
        if not self._move(
            record.id, "RUNNING", {"INITIALIZING"}, start_time=datetime.now(UTC), **driver
        ):
            # Cancelled while starting: record the driver so the next tick can stop it.
            self.store.update_run(record.id, **driver)

    def _tes_token(self, record: RunRecord) -> str | None:
        """The bearer token the run's driver uses on the node's TES, if not the node's own:
        with auth on, the embedded TES takes the run's credential (tasks then belong to the
        run's user); an external TES takes the user's own token if tes.forward_user_token."""
        if self.settings.tes.url is None:
            if self.settings.auth.mode == "none":
                return None
            return run_credential(self.store, record.id)
        if self.settings.tes.forward_user_token and record.credential:
            token = TokenBox(self.settings.data_dir / "auth.key").open(record.credential)
            if token is None:
                log.error("run %s: the user's token cannot be decrypted (auth.key)", record.id)
            return token
        return None

    def _requeue_after_launch_failure(self, run_id: str, exc: Exception) -> bool:
        """Put a run whose driver could not be started back in the queue, if that is right.

        The driver launcher (a forkserver) goes away when the node is stopped by signalling
        its whole process group, as service managers do; a run caught in that moment has not
        started and must run after the restart. A launcher that keeps failing fails the run.
        """
        attempts = self._launch_failures.get(run_id, 0) + 1
        transient = isinstance(exc, (EOFError, OSError)) and attempts < _LAUNCH_ATTEMPTS
        if not (self._stop.is_set() or transient):
            self._launch_failures.pop(run_id, None)
            return False
        self._launch_failures[run_id] = attempts
        log.warning(
            "run %s: could not start its driver (%s: %s); back in the queue",
            run_id,
            type(exc).__name__,
            exc,
        )
        return self._move(
            run_id, "QUEUED", {"INITIALIZING"}, reason="re-queued: the driver could not start"
        )

    def _attach(self, run_id: str, files: RunFiles, process: DriverProcess) -> None:
        active = _ActiveRun(run_id, files, process)
        with self._lock:
            self._active[run_id] = active

        def wait_for_exit() -> None:
            while not process.wait(timeout=5.0):
                if self._stop.is_set():
                    return
            active.exited = True
            self._wake.set()

        threading.Thread(target=wait_for_exit, name=f"driver-{run_id}", daemon=True).start()

    # -- progress and outcome ---------------------------------------------------------------
    def _ingest_events(self, run: _ActiveRun) -> None:
        changes, run.events_offset = read_task_events(run.files, run.events_offset)
        self.store.upsert_tasks(run.run_id, changes + self._tes_task_changes(run.run_id))

    def _tes_task_changes(self, run_id: str) -> TaskChanges:
        if self.tes_link is None:
            return []
        try:
            return self.tes_link.task_changes(run_id)
        except Exception:
            log.exception("run %s: could not read its TES tasks", run_id)
            return []

    def _settled_tes_tasks(self, run_id: str) -> TaskChanges:
        """The tasks of a cancelled run once the TES has ended them (CANCELING is not an end),
        waiting at most the TES's grace period and a little more."""
        deadline = time.monotonic() + min(self.settings.tes.cancel_grace_seconds + 2.0, 15.0)
        while True:
            changes = self._tes_task_changes(run_id)
            settled = all(fields.get("state") in TERMINAL_STATES for _, fields in changes)
            if settled or time.monotonic() >= deadline:
                return changes
            time.sleep(0.05)

    def _cancel_tes_tasks(self, run_id: str) -> None:
        if self.tes_link is None:
            return
        try:
            asked = self.tes_link.cancel_run(run_id)
        except Exception:
            log.exception("run %s: could not cancel its TES tasks", run_id)
            return
        if asked:
            log.info("run %s: asked the TES to cancel %d task(s)", run_id, asked)

    def _resume(self, run_id: str, files: RunFiles, engine_id: str, why: str) -> bool:
        """Queue a run whose driver was lost to start again, if its engine can resume and
        the run has attempts left; True if it was. The tasks the lost driver left on the TES
        are cancelled first (and waited for, a little), so the new driver starts alone."""
        engine = self.registry.engines.get(engine_id)
        if engine is None or not engine.adapter.supports_resume:
            return False
        done = files.resumes_done()
        if done >= self.settings.resume_attempts:
            return False
        self._cancel_tes_tasks(run_id)
        changes, _ = read_task_events(files, 0)
        changes += self._settled_tes_tasks(run_id)
        files.resumes.write_text(str(done + 1), encoding="ascii")
        log.warning(
            "run %s: %s; starting it again to resume (%d of %d)",
            run_id,
            why,
            done + 1,
            self.settings.resume_attempts,
        )
        return self._move(
            run_id,
            "QUEUED",
            {"INITIALIZING", "RUNNING"},
            reason=f"re-queued to resume: {why}",
            task_changes=changes,
            driver_pid=None,
            driver_started=None,
        )

    def _finish(self, run: _ActiveRun) -> None:
        if (
            run.kill_at is None
            and not run.files.result.exists()
            and self.store.get_state(run.run_id) in ("INITIALIZING", "RUNNING")
        ):
            record = self.store.get_run(run.run_id)
            code = run.process.exitcode
            if record is not None and self._resume(
                run.run_id,
                run.files,
                record.engine,
                f"its engine driver exited (code {code}) without leaving a result",
            ):
                with self._lock:
                    self._active.pop(run.run_id, None)
                self._wake.set()
                return
        changes, run.events_offset = read_task_events(run.files, run.events_offset)
        if run.kill_at is not None:
            self._cancel_tes_tasks(run.run_id)  # tasks submitted while the driver was stopping
            changes += self._settled_tes_tasks(run.run_id)
        else:
            changes += self._tes_task_changes(run.run_id)
        with self._lock:
            self._active.pop(run.run_id, None)
        finish_run(
            self.store,
            run.run_id,
            run.files,
            run.process.exitcode,
            self._move,
            task_changes=changes,
        )

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        for record in self.store.runs_in_states(ACTIVE_STATES):
            files = RunFiles(Path(record.run_dir))
            process = None
            if record.driver_pid:
                process = DriverProcess.attach(record.driver_pid, record.driver_started)
            if process is not None:
                log.info("run %s: re-attached to driver pid %d", record.id, process.pid)
                self._attach(record.id, files, process)
                if record.state == "INITIALIZING":
                    self._move(record.id, "RUNNING", {"INITIALIZING"}, reason="re-attached")
                continue
            if record.state == "INITIALIZING" and not record.driver_pid:
                self._move(
                    record.id,
                    "QUEUED",
                    {"INITIALIZING"},
                    reason="re-queued after restart; it had not started",
                )
                continue
            if (
                record.driver_pid
                and not files.result.exists()
                and record.state != "CANCELING"
                and self._resume(
                    record.id,
                    files,
                    record.engine,
                    f"its engine driver (pid {record.driver_pid}) was no longer running when "
                    "wes-bridge restarted",
                )
            ):
                continue
            changes, _ = read_task_events(files, 0)
            if record.driver_pid and not files.result.exists():
                # The driver died without a result: nobody waits for its steps any more.
                self._cancel_tes_tasks(record.id)
            changes += self._tes_task_changes(record.id)
            finish_run(
                self.store,
                record.id,
                files,
                None,
                self._move,
                recovering=True,
                pid=record.driver_pid,
                task_changes=changes,
            )


TaskChanges = list[tuple[str, dict[str, Any]]]


def read_task_events(files: RunFiles, offset: int) -> tuple[TaskChanges, int]:
    """The task changes in the run's events file after ``offset``, and the new offset.

    Only whole lines count: a line the driver is still writing is read next time.
    """
    try:
        if os.stat(files.events).st_size <= offset:
            return [], offset
        with open(files.events, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    changes: TaskChanges = []
    for line in data[: end + 1].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        change = _task_change(event)
        if change is not None:
            changes.append(change)
    return changes, offset + end + 1


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value is not None else None


def _task_change(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    task_id = str(event.get("id", ""))[:255]
    if not task_id:
        return None
    if event.get("event") == "started":
        return task_id, {
            "name": str(event.get("name") or task_id),
            "state": "RUNNING",
            "cmd": [str(c) for c in event.get("cmd") or []],
            "start_time": _ts(event.get("time")),
            "stdout_path": event.get("stdout"),
            "stderr_path": event.get("stderr"),
            "tes_uri": event.get("tes_uri"),
        }
    if event.get("event") == "finished":
        return task_id, {
            "state": str(event.get("state") or "COMPLETE"),
            "exit_code": event.get("exit_code"),
            "end_time": _ts(event.get("time")),
            "system_logs": [str(s) for s in event.get("system_logs") or []],
        }
    return None


def finish_run(
    store: RunStore,
    run_id: str,
    files: RunFiles,
    driver_exit_code: int | None,
    move: Any,
    recovering: bool = False,
    pid: int | None = None,
    task_changes: TaskChanges | None = None,
) -> None:
    """Record how a run ended, from its driver's result file and the run's current state.

    The final state, the task events not yet stored and the closing of tasks that never
    reported their end are one transaction.
    """
    state = store.get_state(run_id)
    outcome: DriverOutcome | None = read_outcome(files)
    changes = task_changes or []
    if state == "CANCELING":
        move(
            run_id,
            "CANCELED",
            {"CANCELING"},
            reason="cancelled",
            system_logs=["cancelled on request; the engine driver was stopped"],
            task_changes=changes,
            close_open_tasks=("CANCELED", _UNFINISHED_TASK),
        )
        return
    if outcome is None:
        if recovering:
            why = (
                f"the engine driver (pid {pid}) was no longer running when wes-bridge "
                "restarted, and it left no result"
            )
        else:
            why = f"the engine driver exited (code {driver_exit_code}) without leaving a result"
        move(
            run_id,
            "SYSTEM_ERROR",
            ACTIVE_STATES,
            reason="driver lost",
            system_logs=[why],
            task_changes=changes,
            close_open_tasks=("SYSTEM_ERROR", _UNFINISHED_TASK),
        )
        return
    logs = list(outcome.system_logs)
    if recovering:
        logs.append("the run finished while wes-bridge was down; result collected at restart")
    move(
        run_id,
        outcome.state,
        ACTIVE_STATES,
        reason="engine finished",
        outputs=outcome.outputs,
        exit_code=outcome.exit_code,
        cmd=outcome.cmd,
        system_logs=logs,
        task_changes=changes,
        close_open_tasks=(
            "SYSTEM_ERROR" if outcome.state != "CANCELED" else "CANCELED",
            _UNFINISHED_TASK,
        ),
    )


# A step still marked RUNNING when its run has ended did not report its own end.
_UNFINISHED_TASK = "the run ended before this step reported its end"
