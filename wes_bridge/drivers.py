"""Engine-driver processes, forked from a warm process per run.

Starting a fresh Python and importing an engine costs most of a second for every run. Instead,
the node keeps one multiprocessing *forkserver* in which every adapter's ``warm_modules`` were
imported once; each run's driver is forked from it, so it starts with the engine already loaded.

A driver makes itself a session and process-group leader (so cancelling signals the engine and
every tool it started), points its stdout/stderr at the run's log files, calls the adapter's
``drive`` and writes the outcome to ``result.json`` atomically. The outcome file, not the
process, is the source of truth: a driver that outlives a crashed server still leaves its
result for the next server to collect.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from .plugin import (
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    RunSpec,
    TaskReporter,
    TesEndpoint,
)

__all__ = ["DriverLauncher", "DriverProcess", "RunFiles", "read_outcome"]


@dataclass(frozen=True)
class RunFiles:
    """The files the core and a driver share in a run directory."""

    run_dir: Path

    @property
    def stdout(self) -> Path:
        return self.run_dir / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.run_dir / "stderr.log"

    @property
    def events(self) -> Path:
        return self.run_dir / "events.jsonl"

    @property
    def result(self) -> Path:
        return self.run_dir / "result.json"

    @property
    def outputs_dir(self) -> Path:
        return self.run_dir / "outputs"

    @property
    def work_dir(self) -> Path:
        return self.run_dir / "work"

    @property
    def resumes(self) -> Path:
        """How many times the run was started again after its driver was lost (absent: 0)."""
        return self.run_dir / "resumes"

    def resumes_done(self) -> int:
        try:
            return int(self.resumes.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            return 0


@dataclass(frozen=True)
class DriverLaunch:
    """What a driver process needs; pickled across to the forked child."""

    adapter_target: str
    adapter_settings: dict[str, Any]
    run: RunSpec
    run_dir: Path
    niceness: int = 0
    tes: TesEndpoint | None = None


def read_outcome(files: RunFiles) -> DriverOutcome | None:
    try:
        data = json.loads(files.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return DriverOutcome(
        state=data.get("state", "SYSTEM_ERROR"),
        outputs=data.get("outputs") or {},
        exit_code=data.get("exit_code"),
        cmd=data.get("cmd") or [],
        system_logs=data.get("system_logs") or [],
    )


def _write_outcome(files: RunFiles, outcome: DriverOutcome) -> None:
    tmp = files.result.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(outcome), default=str), encoding="utf-8")
    os.replace(tmp, files.result)


def _load_adapter_class(target: str) -> type[EngineAdapter]:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, type)
    assert issubclass(obj, EngineAdapter)
    return obj


def lower_priority(niceness: int) -> None:
    """Lower this process's priority, and that of the session it leads, by ``niceness``.

    With Linux's scheduler autogroups (on by default on desktops and many servers) every
    session is scheduled as one unit, and nice values count only inside it; a process that
    starts its own session would otherwise get as much CPU as the whole server. Raising the
    niceness of one's own autogroup needs no privilege; without autogroups that part does
    nothing.
    """
    if not niceness:
        return
    os.nice(niceness)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w", encoding="ascii") as fh:
        fh.write(str(niceness))


def _driver_main(launch: DriverLaunch) -> None:
    """Entry point of a driver process (runs in the forked child)."""
    os.setsid()
    lower_priority(launch.niceness)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    files = RunFiles(launch.run_dir)
    for fd, path in ((1, files.stdout), (2, files.stderr)):
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(log_fd, fd)
        os.close(log_fd)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)  # noqa: SIM115
    os.chdir(launch.run_dir)
    files.outputs_dir.mkdir(exist_ok=True)
    files.work_dir.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(files.work_dir)
    try:
        cls = _load_adapter_class(launch.adapter_target)
        adapter = cls(cls.settings_model.model_validate(launch.adapter_settings))
        ctx = DriverContext(
            run=launch.run,
            run_dir=launch.run_dir,
            outputs_dir=files.outputs_dir,
            work_dir=files.work_dir,
            tasks=TaskReporter(files.events),
            tes=launch.tes,
            resumed=files.resumes_done(),
        )
        outcome = adapter.drive(ctx)
    except BaseException as exc:  # the run must end with a result, whatever happened
        traceback.print_exc()
        outcome = DriverOutcome(
            state="SYSTEM_ERROR",
            system_logs=[f"engine driver failed: {type(exc).__name__}: {exc}"],
        )
    sys.stdout.flush()
    sys.stderr.flush()
    _write_outcome(files, outcome)


class DriverProcess:
    """A running (or re-attached) driver, identified by pid and process start time."""

    def __init__(self, pid: int, create_time: float, process: Any = None) -> None:
        self.pid = pid
        self.create_time = create_time
        self._process = process  # multiprocessing.Process when we started it, else None

    @classmethod
    def attach(cls, pid: int, create_time: float | None) -> DriverProcess | None:
        """The driver with this pid if it is still the same process and alive, else None."""
        try:
            proc = psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return cls(pid, proc.create_time())

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the driver to exit; True if it has."""
        if self._process is not None:
            self._process.join(timeout)
            return self._process.exitcode is not None
        # Not our child (re-attached after a restart): it can end as a zombie that only its
        # parent (often an init that reaps slowly) clears, so look at its status every 0.5 s.
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05:
                return True
            while True:
                step = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                try:
                    proc.wait(max(step, 0.0))
                    return True
                except psutil.TimeoutExpired:
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        return True
                    if deadline is not None and time.monotonic() >= deadline:
                        return False
        except psutil.Error:
            return True

    def is_zombie(self) -> bool:
        try:
            return psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode if self._process is not None else None

    def signal_group(self, sig: int) -> None:
        """Signal the driver's process group: the engine and every tool it started."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # Not (yet) a group leader: signal the process itself.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class DriverLauncher:
    """Starts driver processes from a warm forkserver."""

    def __init__(self, warm_modules: list[str]) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        # multiprocessing re-runs the main script in every forked child; when that is the
        # `wes-bridge` command, its imports must already be loaded or each run pays ~0.5 s
        # for them. (Preloading "__main__" itself does not take effect on Python 3.11.)
        self._ctx.set_forkserver_preload(
            [
                "__main__",
                "wes_bridge.cli",
                "wes_bridge.drivers",
                "wes_bridge.tes.runner",
                *warm_modules,
            ]
        )

    def warm_up(self) -> None:
        """Start the forkserver now (it imports the engines), not at the first run."""
        multiprocessing.forkserver.ensure_running()

    def launch(
        self,
        adapter_target: str,
        adapter_settings: dict[str, Any],
        run: RunSpec,
        run_dir: Path,
        niceness: int = 0,
        tes: TesEndpoint | None = None,
    ) -> DriverProcess:
        launch = DriverLaunch(adapter_target, adapter_settings, run, run_dir, niceness, tes)
        return self.spawn(_driver_main, launch)

    def spawn(self, target: Callable[[Any], None], argument: Any) -> DriverProcess:
        """Fork ``target(argument)`` from the warm forkserver, as a process that may outlive us."""
        process = self._ctx.Process(target=target, args=(argument,), daemon=False)
        process.start()
        assert process.pid is not None
        # Drivers outlive a server that stops (they are re-attached at the next start), so
        # multiprocessing's exit hook must not join or terminate them.
        multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        try:
            create_time = psutil.Process(process.pid).create_time()
        except psutil.Error:
            create_time = 0.0
        return DriverProcess(process.pid, create_time, process)
