"""WES <-> TES: the TES tasks of a run, as ``GET /runs/{id}/tasks`` lists them, and their cancel.

Every TES task an engine adapter submits for a run carries the tags ``wes_run_id`` (and
``wes_step``, the step's name). The supervisor reads a running run's tasks back through a
link and stores them as the run's tasks, with ``tes_uri`` pointing at the task on the TES;
cancelling a run cancels its tasks that have not ended.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..config import Settings
from ..plugin import RUN_TAG, STEP_TAG, TesEndpoint
from .backends import PathMap, declared_paths, in_place_paths, make_backend
from .client import TesClient, TesError
from .models import TERMINAL_TASK_STATES, TesTask
from .runner import TaskFiles, progress_log
from .scheduler import cancel_task
from .store import ACTIVE_TASK_STATES, TaskRow, TesStore

__all__ = [
    "RUN_TAG",
    "STEP_TAG",
    "EmbeddedTesLink",
    "ExternalTesLink",
    "TesLink",
    "embedded_tes_url",
    "link_for",
    "task_change",
    "tes_client",
    "tes_endpoint",
]

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


def _stream_paths(row: TaskRow, host_backend: bool) -> dict[str, str]:
    """Where the last executor of an embedded task writes its stdout and stderr (in full;
    the task document keeps only their tails), so WES serves them while the task runs."""
    executors = row.request.get("executors") or []
    if not executors:
        return {}
    files = TaskFiles(Path(row.task_dir))
    index = len(executors) - 1
    paths: dict[str, str] = {}
    mapped: PathMap | None = None
    for stream in ("stdout", "stderr"):
        declared = executors[index].get(stream)
        kept = files.executor_stream(index, stream)
        if declared and not kept.exists():  # still running: the file it writes
            if mapped is None:
                task = TesTask.model_validate(row.request)
                same = in_place_paths(task) if host_backend else set()
                mapped = PathMap(files.root, declared_paths(task), same)
            where = mapped.host(str(declared))
        else:
            where = kept
        paths[f"{stream}_path"] = str(where)
    return paths


class EmbeddedTesLink:
    """The link to this node's own TES: its tasks are read from the shared database."""

    def __init__(
        self,
        tes: TesStore,
        base_url: str,
        notify: Callable[[], None] | None = None,
        host_backend: bool = True,
    ) -> None:
        self.tes = tes
        self.base_url = base_url.rstrip("/")
        self._notify = notify
        self._host_backend = host_backend

    def _rows(self, run_id: str) -> list[TaskRow]:
        return self.tes.list_tasks(_MAX_TASKS_PER_RUN, tags={RUN_TAG: run_id})

    def task_changes(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        changes = []
        for row in reversed(self._rows(run_id)):  # oldest first, as steps ran
            logs = row.logs
            if not logs and row.state in ACTIVE_TASK_STATES:
                so_far = progress_log(Path(row.task_dir), 0)
                logs = [so_far] if so_far else []
            document = {**row.request, "id": row.id, "state": row.state, "logs": logs}
            task_id, fields = task_change(document, f"{self.base_url}/tasks/{row.id}")
            fields.update(_stream_paths(row, self._host_backend))
            changes.append((task_id, fields))
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


class ExternalTesLink:
    """The link to an external TES (Funnel, TESK, ...), through the node's TES client."""

    def __init__(self, client: TesClient) -> None:
        self.client = client

    def _uri(self, task_id: str) -> str:
        base = self.client.api_url or self.client.base_url
        return f"{base.rstrip('/')}/tasks/{task_id}"

    def task_changes(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        tasks = list(self.client.iter_tasks(view="BASIC", tags={RUN_TAG: run_id}))
        return [task_change(t, self._uri(str(t["id"]))) for t in reversed(tasks)]

    def cancel_run(self, run_id: str) -> int:
        asked = 0
        for task in self.client.iter_tasks(view="MINIMAL", tags={RUN_TAG: run_id}):
            if task.get("state") in TERMINAL_TASK_STATES:
                continue
            try:
                self.client.cancel_task(str(task["id"]))
            except TesError as exc:
                if exc.status_code not in (400, 404):  # ended or gone meanwhile
                    raise
            asked += 1
        return asked


def link_for(
    settings: Settings, tes: TesStore | None, notify: Callable[[], None] | None
) -> TesLink:
    """The node's link: to its embedded TES, or to ``tes.url`` through a TES client."""
    if settings.tes.url is None:
        assert tes is not None
        return EmbeddedTesLink(
            tes,
            embedded_tes_url(settings),
            notify,
            settings.tes.backend in ("host", "host-sandbox"),
        )
    return ExternalTesLink(tes_client(settings))


def tes_client(settings: Settings) -> TesClient:
    """A client for the node's TES (``tes.url``, or the embedded one), with its credentials."""
    tes = settings.tes
    return TesClient(
        tes.url or embedded_tes_url(settings),
        token=tes.token,
        username=tes.username,
        password=tes.password,
    )


def tes_endpoint(settings: Settings, run_id: str, token: str | None = None) -> TesEndpoint:
    """The node's TES as the driver of ``run_id`` sees it; ``token``, if given, is the bearer
    token the driver uses there (the run's credential on the embedded TES, or its user's token
    on an external one) instead of the node's own ``tes.token``."""
    tes = settings.tes
    if tes.url is None:
        backend = make_backend(
            tes.backend, tes.container_binary, sandbox_network=tes.sandbox_network
        )
        shared = True if tes.shared_filesystem is None else tes.shared_filesystem
        return TesEndpoint(
            url=embedded_tes_url(settings),
            run_id=run_id,
            shared_filesystem=shared,
            uses_containers=backend.uses_images,
            description=f"the node's embedded TES; {backend.describe()}",
            token=token,
        )
    return TesEndpoint(
        url=tes.url,
        run_id=run_id,
        shared_filesystem=bool(tes.shared_filesystem),
        uses_containers=tes.uses_containers,
        description=f"the external TES at {tes.url}",
        token=token or (tes.token.get_secret_value() if tes.token else None),
        username=None if token else tes.username,
        password=None if token else (tes.password.get_secret_value() if tes.password else None),
    )


def embedded_tes_url(settings: Settings) -> str:
    """Where clients reach the embedded TES: the public URL, else the bound address."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/ga4gh/tes/v1"
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/ga4gh/tes/v1"
