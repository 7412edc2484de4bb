"""The supervisor in a process of its own, next to the HTTP server.

The HTTP process only validates, stages and records runs; everything that follows (claiming,
forking engine drivers, watching them, collecting results, recovery) happens in this child, so
a burst of submissions and a burst of finishing runs do not compete for one interpreter. The
two share nothing but the database and two events: *wake* (a run was queued or cancelled) and
*stop*. The child also stops when the server process disappears; engine drivers, being their
own sessions, go on and are re-attached by the next supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .config import Settings
from .drivers import DriverLauncher
from .registry import EngineRegistry
from .store import RunStore
from .supervisor import Supervisor, cancel_run
from .tes.link import link_for
from .tes.scheduler import TesScheduler
from .tes.store import TesStore

__all__ = ["LOG_FORMAT", "SupervisorProcess"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
log = logging.getLogger(__name__)


def _supervisor_main(
    settings: Settings,
    wake: PipeWake | None,
    tes_wake: PipeWake | None,
    stop: PipeWake,
    parent_pid: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    # The server process has already reported plugins that failed to load.
    logging.getLogger("wes_bridge.registry").setLevel(logging.CRITICAL)
    store = RunStore(settings.effective_database_url)
    registry = EngineRegistry.from_entry_points(
        settings.engines, settings.disabled_engines, settings.default_engines
    )
    # A TES-only server starts no engine drivers: its forkserver need not import the engines.
    warm = (
        sorted({m for e in registry.engines.values() for m in e.adapter.warm_modules})
        if wake is not None
        else []
    )
    launcher = DriverLauncher(warm)
    launcher.warm_up()
    scheduler = (
        TesScheduler(
            settings,
            TesStore(store),
            launcher,
            wake=tes_wake,
            sandbox_read_only=engine_sandbox_paths(registry),
        )
        if tes_wake is not None
        else None
    )
    link = link_for(
        settings,
        scheduler.tes if scheduler is not None else None,
        scheduler.notify if scheduler is not None else None,
    )
    supervisor = (
        Supervisor(settings, store, registry, launcher, wake=wake, tes_link=link)
        if wake is not None
        else None
    )
    if scheduler is not None:
        scheduler.start()
    if supervisor is not None:
        supervisor.start()
    try:
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                log.warning("the wes-bridge server process is gone; supervisor stopping")
                break
    finally:
        if supervisor is not None:
            supervisor.stop()
        if scheduler is not None:
            scheduler.stop()
        store.close()


def engine_sandbox_paths(registry: EngineRegistry) -> tuple[Path, ...]:
    """What the loaded engines' tasks read outside the sandbox's system paths (see
    :meth:`wes_bridge.plugin.EngineAdapter.sandbox_read_only`)."""
    paths: list[Path] = []
    for engine in registry.engines.values():
        try:
            found = engine.adapter.sandbox_read_only()
        except Exception:
            log.exception("engine %s: sandbox_read_only failed; nothing shown for it", engine.name)
            continue
        paths += [Path(p) for p in found if Path(p) not in paths]
    return tuple(paths)


class PipeWake:
    """A wake-up signal across processes that never blocks the one who sends it.

    (``multiprocessing.Event.set`` waits until every waiter has woken: far too slow to call
    on each ``POST /runs`` from the event loop.) Sending writes one byte to a non-blocking
    pipe; waiting polls the other end and drains it.
    """

    def __init__(self, ctx: Any) -> None:
        self._reader, self._writer = ctx.Pipe(duplex=False)
        os.set_blocking(self._writer.fileno(), False)

    def set(self) -> None:
        # A full pipe already holds a wake-up; a closed one means nobody is listening.
        with contextlib.suppress(OSError):
            self._writer.send_bytes(b"!")

    def clear(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            while self._reader.poll(0):
                self._reader.recv_bytes()

    def wait(self, timeout: float | None = None) -> bool:
        try:
            return bool(self._reader.poll(timeout))
        except (OSError, EOFError):
            return False

    @property
    def reader(self) -> Any:
        """The receiving end, for ``multiprocessing.connection.wait`` on several pipes."""
        return self._reader


class SupervisorProcess:
    """Handle, in the HTTP process, on the supervisor child."""

    def __init__(
        self, settings: Settings, store: RunStore, *, wes: bool = True, tes: bool = False
    ) -> None:
        self.settings = settings
        self.store = store
        self._ctx = multiprocessing.get_context("spawn")
        self._wake = PipeWake(self._ctx) if wes else None
        self._tes_wake = PipeWake(self._ctx) if tes else None
        # A pipe, not a multiprocessing.Event: setting an Event blocks on a lock the other side
        # may hold, which must never happen in a signal handler or at shutdown.
        self._stop = PipeWake(self._ctx)
        self._process: Any = None

    def start(self) -> None:
        self._process = self._ctx.Process(
            target=_supervisor_main,
            args=(self.settings, self._wake, self._tes_wake, self._stop, os.getpid()),
            name="wes-bridge-supervisor",
            daemon=False,
        )
        self._process.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._process is None:
            return
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            log.error("supervisor did not stop within %.0f s; terminating it", timeout)
            self._process.terminate()
            self._process.join(5)

    def is_alive(self) -> bool:
        return self._process is not None and bool(self._process.is_alive())

    def notify(self) -> None:
        """A run was queued or cancelled: the supervisor looks now, not at its next tick."""
        if self._wake is not None:
            self._wake.set()

    def notify_tes(self) -> None:
        """A TES task was queued or cancelled: the scheduler looks now."""
        if self._tes_wake is not None:
            self._tes_wake.set()

    def cancel(self, run_id: str) -> str:
        state = cancel_run(self.store, run_id)
        self.notify()
        return state
