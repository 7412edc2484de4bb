"""A crash between forking a task's runner and recording its pid runs the task once, not twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wes_bridge.config import Settings, load_settings
from wes_bridge.drivers import DriverLauncher
from wes_bridge.store import RunStore
from wes_bridge.tes.models import TERMINAL_TASK_STATES
from wes_bridge.tes.scheduler import TesScheduler
from wes_bridge.tes.store import TesStore


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Settings, TesStore, DriverLauncher]]:
    settings = load_settings(data_dir=tmp_path / "data", tes={"cpu_cores": 1})
    settings.data_dir.mkdir(parents=True)
    store = RunStore(settings.effective_database_url)
    yield settings, TesStore(store), DriverLauncher([])
    store.close()


class _Crash(Exception):
    pass


def _queue(settings: Settings, tes: TesStore, marks: Path, seconds: float) -> str:
    task_id = tes.new_task_id()
    command = f"echo ran >> {marks}; sleep {seconds}"
    tes.create_task(
        task_id,
        {"executors": [{"image": "alpine", "command": ["sh", "-c", command]}]},
        cpu_cores=1,
        ram_gb=0,
        task_dir=str(settings.tes_dir / "tasks" / task_id),
    )
    return task_id


def _crash_after_fork(scheduler: TesScheduler) -> None:
    real = scheduler.tes.update

    def update(task_id: str, **fields: Any) -> None:
        if "runner_pid" in fields:
            raise _Crash("the server died before it recorded the runner")
        real(task_id, **fields)

    scheduler.tes.update = update  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        scheduler._start_queued()
    scheduler.tes.update = real  # type: ignore[method-assign]


def _finish(settings: Settings, tes: TesStore, launcher: DriverLauncher, task_id: str) -> str:
    scheduler = TesScheduler(settings, tes, launcher)
    scheduler.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = tes.get_state(task_id)
            if state in TERMINAL_TASK_STATES:
                return str(state)
            time.sleep(0.05)
        raise AssertionError(f"task still {tes.get_state(task_id)}")
    finally:
        scheduler.stop()


@pytest.mark.parametrize("runner_started_first", [True, False])
def test_unrecorded_runner_is_found_or_withdrawn(
    parts: tuple[Settings, TesStore, DriverLauncher], tmp_path: Path, runner_started_first: bool
) -> None:
    settings, tes, launcher = parts
    marks = tmp_path / "marks"
    task_id = _queue(settings, tes, marks, 1.0)
    _crash_after_fork(TesScheduler(settings, tes, launcher))
    row = tes.get(task_id)
    assert row is not None
    assert row.state == "INITIALIZING"
    assert row.runner_pid is None
    if runner_started_first:
        # The runner got going before the restart: it is found through its lock.
        deadline = time.monotonic() + 30
        while not marks.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    # else: the restart may come before the runner takes the task; it then finds the claim
    # withdrawn and the task runs once, from the new launch.
    assert _finish(settings, tes, launcher, task_id) == "COMPLETE"
    time.sleep(1.5)  # a second run, had there been one, would have written by now
    assert marks.read_text() == "ran\n"
