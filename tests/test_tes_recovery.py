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


class _Crash(BaseException):  # a process death: nothing may catch it
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


def _crash_at_hand_over(scheduler: TesScheduler, sent: bool) -> None:
    """The server dies while handing a claimed task to its runner: before or after sending."""
    real = scheduler._hand_over

    def hand_over(runner: Any, launch: Any) -> None:
        if sent:
            real(runner, launch)
        raise _Crash("the server died here")

    scheduler._hand_over = hand_over  # type: ignore[method-assign]
    try:
        with pytest.raises(_Crash):
            scheduler._start_queued()
    finally:
        scheduler.stop()  # closes its idle runners' pipes, as a dying process would


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


@pytest.mark.parametrize("sent", [True, False])
def test_a_crash_while_starting_a_task_runs_it_once(
    parts: tuple[Settings, TesStore, DriverLauncher], tmp_path: Path, sent: bool
) -> None:
    settings, tes, launcher = parts
    marks = tmp_path / "marks"
    task_id = _queue(settings, tes, marks, 1.0)
    _crash_at_hand_over(TesScheduler(settings, tes, launcher), sent)
    row = tes.get(task_id)
    assert row is not None
    assert row.state == "INITIALIZING"
    assert row.runner_pid is not None
    # sent: the runner has the task and is found again through its lock. Not sent: the
    # runner never got it (and leaves); the task goes back to the queue and runs once.
    assert _finish(settings, tes, launcher, task_id) == "COMPLETE"
    time.sleep(1.5)  # a second run, had there been one, would have written by now
    assert marks.read_text() == "ran\n"


def test_a_runner_that_finds_its_claim_withdrawn_does_not_run(
    parts: tuple[Settings, TesStore, DriverLauncher], tmp_path: Path
) -> None:
    from wes_bridge.tes.runner import TaskFiles, probe_runner, take_claim

    files = TaskFiles(tmp_path / "task")
    files.task_dir.mkdir()
    files.claim.write_text("token-1")
    assert probe_runner(files) is None  # nobody holds it: the claim is withdrawn
    assert not files.claim.exists()
    assert take_claim(files, "token-1") is False
