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
from typing import Any

from .config import Settings
from .drivers import DriverLauncher
from .registry import EngineRegistry
from .store import RunStore
from .supervisor import Supervisor, cancel_run

__all__ = ["LOG_FORMAT", "SupervisorProcess"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
log = logging.getLogger(__name__)


def _supervisor_main(settings: Settings, wake: PipeWake, stop: PipeWake, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    # The server process has already reported plugins that failed to load.
    logging.getLogger("wes_bridge.registry").setLevel(logging.CRITICAL)
    store = RunStore(settings.effective_database_url)
    registry = EngineRegistry.from_entry_points(settings.engines, settings.disabled_engines)
    warm = sorted({m for e in registry.engines.values() for m in e.adapter.warm_modules})
    launcher = DriverLauncher(warm)
    launcher.warm_up()
    supervisor = Supervisor(settings, store, registry, launcher, wake=wake)
    supervisor.start()
    try:
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                log.warning("the wes-bridge server process is gone; supervisor stopping")
                break
    finally:
        supervisor.stop()
        store.close()


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


class SupervisorProcess:
    """Handle, in the HTTP process, on the supervisor child."""

    def __init__(self, settings: Settings, store: RunStore) -> None:
        self.settings = settings
        self.store = store
        self._ctx = multiprocessing.get_context("spawn")
        self._wake = PipeWake(self._ctx)
        # A pipe, not a multiprocessing.Event: setting an Event blocks on a lock the other side
        # may hold, which must never happen in a signal handler or at shutdown.
        self._stop = PipeWake(self._ctx)
        self._process: Any = None

    def start(self) -> None:
        self._process = self._ctx.Process(
            target=_supervisor_main,
            args=(self.settings, self._wake, self._stop, os.getpid()),
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
        self._wake.set()

    def cancel(self, run_id: str) -> str:
        state = cancel_run(self.store, run_id)
        self.notify()
        return state
