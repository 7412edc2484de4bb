"""The supervisor on its own, in this process, with a driver launcher that can be made to fail."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wes_bridge.app import create_app
from wes_bridge.config import Settings, load_settings
from wes_bridge.drivers import DriverLauncher, DriverProcess
from wes_bridge.registry import EngineRegistry
from wes_bridge.staging import Attachment, RunStager
from wes_bridge.store import TERMINAL_STATES, RunStore
from wes_bridge.supervisor import Supervisor

from .conftest import WORKFLOWS, SpecCheckedClient, free_port


class FlakyLauncher:
    """The real launcher, after ``failures`` launches that raise ``error``."""

    def __init__(self, real: DriverLauncher, failures: int, error: Exception) -> None:
        self.real = real
        self.failures = failures
        self.error = error
        self.calls = 0

    def launch(self, *args: Any, **kwargs: Any) -> DriverProcess:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return self.real.launch(*args, **kwargs)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Settings, RunStore, EngineRegistry, DriverLauncher]]:
    settings = load_settings(data_dir=tmp_path / "data", max_concurrent_runs=2, port=free_port())
    settings.data_dir.mkdir(parents=True)
    store = RunStore(settings.effective_database_url)
    registry = EngineRegistry.from_entry_points(settings.engines, settings.disabled_engines)
    warm = sorted({m for e in registry.engines.values() for m in e.adapter.warm_modules})
    launcher = DriverLauncher(warm)
    # The runs' steps go to the node's TES: a TES-only server on the same data dir and port.
    with SpecCheckedClient(create_app(settings, wes=False)):
        yield settings, store, registry, launcher
    store.close()


def _queue_hello(settings: Settings, store: RunStore) -> str:
    run_id = store.new_run_id()
    tool = WORKFLOWS / "cwl/hello/hello.cwl"
    staged = RunStager(settings).stage(
        run_id, tool.name, [Attachment(tool.name, io.BytesIO(tool.read_bytes()))]
    )
    store.create_run(
        run_id,
        "cwltool",
        {
            "workflow_type": "CWL",
            "workflow_type_version": "v1.2",
            "workflow_url": tool.name,
            "workflow_params": {"message": "hello from the supervisor test"},
        },
        {},
        str(staged.run_dir),
        {"workflow_path": tool.name, "workflow_fragment": None},
    )
    return run_id


def _run_until_terminal(supervisor: Supervisor, store: RunStore, run_id: str) -> str:
    supervisor.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = store.get_state(run_id)
            if state in TERMINAL_STATES:
                return str(state)
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} still {store.get_state(run_id)}")
    finally:
        supervisor.stop()


def test_a_launcher_that_went_away_requeues_the_run_and_it_then_runs(
    parts: tuple[Settings, RunStore, EngineRegistry, DriverLauncher],
) -> None:
    settings, store, registry, real = parts
    run_id = _queue_hello(settings, store)
    launcher = FlakyLauncher(real, failures=2, error=EOFError("unexpected EOF"))
    supervisor = Supervisor(settings, store, registry, launcher)  # type: ignore[arg-type]
    assert _run_until_terminal(supervisor, store, run_id) == "COMPLETE"
    assert launcher.calls == 3
    states = [state for state, _, _ in store.run_events(run_id)]
    assert states == [
        "QUEUED",
        "INITIALIZING",
        "QUEUED",
        "INITIALIZING",
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "COMPLETE",
    ]


def test_a_launcher_that_keeps_failing_fails_the_run_with_the_reason(
    parts: tuple[Settings, RunStore, EngineRegistry, DriverLauncher],
) -> None:
    settings, store, registry, real = parts
    run_id = _queue_hello(settings, store)
    launcher = FlakyLauncher(real, failures=100, error=EOFError("unexpected EOF"))
    supervisor = Supervisor(settings, store, registry, launcher)  # type: ignore[arg-type]
    assert _run_until_terminal(supervisor, store, run_id) == "SYSTEM_ERROR"
    assert launcher.calls == 3
    run = store.get_run(run_id)
    assert run is not None
    assert run.system_logs == ["could not start the engine driver: EOFError"]


def test_a_launch_error_that_is_not_transient_fails_at_once(
    parts: tuple[Settings, RunStore, EngineRegistry, DriverLauncher],
) -> None:
    settings, store, registry, real = parts
    run_id = _queue_hello(settings, store)
    launcher = FlakyLauncher(real, failures=100, error=ValueError("bad launch"))
    supervisor = Supervisor(settings, store, registry, launcher)  # type: ignore[arg-type]
    assert _run_until_terminal(supervisor, store, run_id) == "SYSTEM_ERROR"
    assert launcher.calls == 1
