"""WES <-> TES: the TES tasks of a run, as ``GET /runs/{id}/tasks`` lists them, and their cancel.

Every TES task an engine adapter submits for a run carries the tags ``wes_run_id`` (and
``wes_step``, the step's name). The supervisor reads a running run's tasks back through a
link and stores them as the run's tasks, with ``tes_uri`` pointing at the task on the TES;
cancelling a run cancels its tasks that have not ended.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from .models import TERMINAL_TASK_STATES
from .scheduler import cancel_task
from .store import TaskRow, TesStore

__all__ = ["RUN_TAG", "STEP_TAG", "EmbeddedTesLink", "TesLink", "task_change"]

RUN_TAG = "wes_run_id"
STEP_TAG = "wes_step"
_MAX_TASKS_PER_RUN = 100_000


class TesLink(Protocol):
    def task_changes(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The run's TES tasks, as changes for :meth:`RunStore.upsert_tasks`."""
        ...

    def cancel_run(self, run_id: str) -> int:
        """Cancel the run's tasks that have not ended; returns how many were asked."""
        ...


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def task_change(task: dict[str, Any], tes_uri: str) -> tuple[str, dict[str, Any]]:
    """A tesTask document (FULL or BASIC view) as a change to the run's task list."""
    tags = task.get("tags") or {}
    logs = task.get("logs") or []
    last = logs[-1] if logs else {}
    executor_logs = last.get("logs") or []
    executors = task.get("executors") or []
    exit_code = None
    if executor_logs:
        exit_code = executor_logs[-1].get("exit_code")
    fields: dict[str, Any] = {
        "name": str(tags.get(STEP_TAG) or task.get("name") or task["id"]),
        "state": str(task.get("state") or "UNKNOWN"),
        "cmd": [str(c) for c in (executors[0].get("command") if executors else []) or []],
        "start_time": _time(last.get("start_time")),
        "end_time": _time(last.get("end_time")),
        "exit_code": exit_code,
        "tes_uri": tes_uri,
        "system_logs": [str(s) for s in last.get("system_logs") or []],
    }
    return str(task["id"]), fields


class EmbeddedTesLink:
    """The link to this node's own TES: its tasks are read from the shared database."""

    def __init__(
        self, tes: TesStore, base_url: str, notify: Callable[[], None] | None = None
    ) -> None:
        self.tes = tes
        self.base_url = base_url.rstrip("/")
        self._notify = notify

    def _rows(self, run_id: str) -> list[TaskRow]:
        return self.tes.list_tasks(_MAX_TASKS_PER_RUN, tags={RUN_TAG: run_id})

    def task_changes(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        changes = []
        for row in reversed(self._rows(run_id)):  # oldest first, as steps ran
            document = {**row.request, "id": row.id, "state": row.state, "logs": row.logs}
            changes.append(task_change(document, f"{self.base_url}/tasks/{row.id}"))
        return changes

    def cancel_run(self, run_id: str) -> int:
        asked = 0
        for row in self._rows(run_id):
            if row.state not in TERMINAL_TASK_STATES:
                cancel_task(self.tes, row.id)
                asked += 1
        if asked and self._notify is not None:
            self._notify()
        return asked
