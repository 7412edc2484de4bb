"""The embedded TES 1.1.0 endpoints (``/ga4gh/tes/v1``).

TES declares no error responses; errors here use the same ``{msg, status_code}`` shape and
status codes as the node's WES endpoints (400 bad request, 404 unknown task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from .. import __version__
from ..auth import Principal, strings_in
from ..auth.api import TesPrincipal
from ..config import Settings
from ..errors import BadRequest, Forbidden, InvalidTransition, NotFound
from ..node import Node
from ..plugin import RUN_TAG
from ..registry import describe_validation_error
from ..tes.models import TASK_STATES, TesCreateTaskResponse, TesTask, View
from ..tes.paths import local_path, within
from ..tes.runner import progress_log
from ..tes.scheduler import cancel_task, cannot_fit, note_log, task_needs
from ..tes.store import ACTIVE_TASK_STATES, TaskRow
from .audit import audit_note
from .wes import get_node

__all__ = ["router"]

router = APIRouter()
NodeDep = Annotated[Node, Depends(get_node)]

DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047  # "Must be less than 2048."
MAX_TASK_BYTES = 16 << 20
SUPPORTED_INPUT_SCHEMES = ("file", "http", "https")
BACKEND_PARAMETERS: list[str] = []


def _tes(node: Node) -> Any:
    if node.tes is None:  # pragma: no cover - the router is mounted only with the embedded TES
        raise NotFound("this node has no embedded TES")
    return node.tes


# -- service-info ---------------------------------------------------------------------------
@router.get("/service-info")
def get_service_info(node: NodeDep) -> dict[str, Any]:
    settings = node.settings
    backend = node.tes_backend
    assert backend is not None
    usable, why = node.tes_backend_available
    description = backend.describe()
    if not usable:
        description += f"; NOT usable here: {why}"
    capacity = node.tes_capacity
    assert capacity is not None
    return {
        "id": settings.service_id + ".tes",
        "name": settings.service_name + " TES",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": (
            f"Embedded TES of wes-bridge: {description}. Capacity {capacity.cpu_cores} CPU "
            f"cores, {capacity.ram_gb:.1f} GB RAM."
        ),
        "organization": {"name": settings.organization_name, "url": settings.organization_url},
        "version": __version__,
        "storage": sorted({p.as_uri() for p in [settings.data_dir, *settings.tes.output_roots]}),
        "tesResources_backend_parameters": BACKEND_PARAMETERS,
        **({"contactUrl": settings.contact_url} if settings.contact_url else {}),
        **({"environment": settings.environment} if settings.environment else {}),
    }


# -- create ---------------------------------------------------------------------------------
def _local(url: str) -> Path | None:
    try:
        return local_path(url)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _check_locations(task: TesTask, settings: Settings) -> None:
    input_roots = [settings.data_dir, *settings.tes.input_roots]
    output_roots = [settings.data_dir, *settings.tes.output_roots]
    for item in task.inputs or []:
        if item.content is not None or item.url is None:
            continue
        scheme = urlsplit(item.url).scheme if not item.url.startswith("/") else "file"
        if scheme not in SUPPORTED_INPUT_SCHEMES:
            raise BadRequest(
                f"input {item.path}: URL scheme {scheme!r} is not supported here "
                f"(supported: {', '.join(SUPPORTED_INPUT_SCHEMES)}, or inline content)"
            )
        local = _local(item.url)
        if local is not None and not within(local, input_roots):
            raise BadRequest(
                f"input {item.path}: {local} is outside the directories this TES may read "
                "inputs from (tes.input_roots)"
            )
    for out in task.outputs or []:
        local = _local(out.url)
        if local is None:
            raise BadRequest(
                f"output {out.path}: only file:// output URLs are supported here, not {out.url!r}"
            )
        if not within(local, output_roots):
            raise BadRequest(
                f"output {out.path}: {local} is outside the directories this TES may write "
                "outputs to (tes.output_roots)"
            )


def _visible(tes: Any, task_id: str, principal: Principal) -> TaskRow:
    """The task, if ``principal`` may see it: another user's task is a 404, as an unknown one
    is."""
    row: TaskRow | None = tes.get(task_id)
    if row is None or not principal.owns(row.owner, row.tags):
        raise NotFound(f"task {task_id} not found")
    return row


@router.post("/tasks")
async def create_task(
    request: Request, node: NodeDep, principal: TesPrincipal
) -> TesCreateTaskResponse:
    body = await request.body()
    if len(body) > MAX_TASK_BYTES:
        raise BadRequest(f"a task document may be at most {MAX_TASK_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the task is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the task must be a JSON object (a tesTask)")
    try:
        task = TesTask.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"invalid task: {describe_validation_error(exc)}") from exc
    settings = node.settings
    _check_locations(task, settings)
    # A run's driver creates the tasks of that run only; they are its user's.
    if principal.kind == "run" and (task.tags or {}).get(RUN_TAG) != principal.run_id:
        raise Forbidden(f"a run's credential creates only tasks tagged {RUN_TAG}=<that run>")
    # Dataset access: every string of the task (inputs, outputs, commands, environment).
    note = audit_note(request)
    note["datasets"] = named = node.policy.datasets_named(strings_in(data))
    node.policy.check(named, principal.grants, what="this task")
    resources = task.resources
    system_logs: list[str] = []
    if resources and resources.backend_parameters:
        unsupported = sorted(k for k in resources.backend_parameters if k not in BACKEND_PARAMETERS)
        if unsupported and resources.backend_parameters_strict:
            raise BadRequest(
                "backend_parameters not supported by this TES: " + ", ".join(unsupported)
            )
        if unsupported:
            system_logs.append("ignored unsupported backend_parameters: " + ", ".join(unsupported))
            resources.backend_parameters = {
                k: v for k, v in resources.backend_parameters.items() if k in BACKEND_PARAMETERS
            } or None
    cores, ram = task_needs(settings, resources.model_dump() if resources else None)
    assert node.tes_capacity is not None
    why = cannot_fit(node.tes_capacity, cores, ram)
    usable, unusable_reason = node.tes_backend_available
    if why is None and not usable:
        why = f"the {settings.tes.backend} backend is not usable here: {unusable_reason}"
    tes = _tes(node)
    task_id = tes.new_task_id()
    note["target"] = task_id
    task_dir = settings.tes_dir / "tasks" / task_id
    stored = task.model_dump(mode="json", exclude_none=True)
    logs: list[dict[str, Any]] = []
    state = "QUEUED"
    if why is not None:
        state = "SYSTEM_ERROR"
        logs = [note_log(f"this task can never run here: {why}")]
        logs[0]["system_logs"][:0] = system_logs
    elif system_logs:
        stored.setdefault("_notes", system_logs)

    def insert() -> None:
        tes.create_task(
            task_id,
            stored,
            cpu_cores=cores,
            ram_gb=ram,
            task_dir=str(task_dir),
            state=state,
            logs=logs,
            owner=principal.subject,
        )

    await run_in_threadpool(insert)
    if state == "QUEUED":
        node.supervisor.notify_tes()
    return TesCreateTaskResponse(id=task_id)


# -- read -----------------------------------------------------------------------------------
def render(row: TaskRow, view: str, tail_bytes: int = 10_000) -> dict[str, Any]:
    """The tesTask document of a stored task, in the given view (a running task's log so far
    is read from its runner's events)."""
    if view == "MINIMAL":
        return {"id": row.id, "state": row.state}
    task = {k: v for k, v in row.request.items() if not k.startswith("_")}
    task["id"] = row.id
    task["state"] = row.state
    task["creation_time"] = row.creation_time.isoformat()
    logs = [dict(entry) for entry in row.logs]
    if not logs and row.state in ACTIVE_TASK_STATES:
        so_far = progress_log(Path(row.task_dir), tail_bytes)
        if so_far is not None:
            logs = [so_far]
    notes = row.request.get("_notes") or []
    if notes and logs:
        logs[0] = {**logs[0], "system_logs": [*notes, *(logs[0].get("system_logs") or [])]}
    if view == "BASIC":
        for item in task.get("inputs") or []:
            item.pop("content", None)
        stripped = []
        for entry in logs:
            entry = {k: v for k, v in entry.items() if k != "system_logs"}
            entry["logs"] = [
                {k: v for k, v in ex.items() if k not in ("stdout", "stderr")}
                for ex in entry.get("logs") or []
            ]
            stripped.append(entry)
        logs = stripped
    if logs:
        task["logs"] = logs
    return task


def _view(value: str | None) -> str:
    view = value or "MINIMAL"
    if view not in ("MINIMAL", "BASIC", "FULL"):
        raise BadRequest("view must be MINIMAL, BASIC or FULL")
    return view


@router.get("/tasks")
def list_tasks(
    node: NodeDep,
    principal: TesPrincipal,
    name_prefix: Annotated[str | None, Query()] = None,
    state: Annotated[str | None, Query()] = None,
    tag_key: Annotated[list[str] | None, Query()] = None,
    tag_value: Annotated[list[str] | None, Query()] = None,
    page_size: Annotated[int | None, Query()] = None,
    page_token: Annotated[str | None, Query()] = None,
    view: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    chosen: View = _view(view)  # type: ignore[assignment]
    if page_size is not None and not 1 <= page_size <= MAX_PAGE_SIZE:
        raise BadRequest(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
    size = page_size or DEFAULT_PAGE_SIZE
    if state is not None and state not in TASK_STATES:
        raise BadRequest(f"state must be one of {', '.join(TASK_STATES)}")
    keys = tag_key or []
    values = tag_value or []
    if len(values) > len(keys):
        raise BadRequest("more tag_value than tag_key parameters")
    tags = {key: (values[i] if i < len(values) else "") for i, key in enumerate(keys)}
    everyone = principal.sees_all
    scope = json.dumps(
        ["tes", name_prefix, state, sorted(tags.items()), None if everyone else principal.subject]
    )
    before = node.page_tokens.decode(page_token, scope) if page_token else None
    query_tags = dict(tags)
    if principal.kind == "run":  # a run's driver sees the tasks of its run only
        if tags.get(RUN_TAG) not in (None, "", principal.run_id):
            return {"tasks": []}
        query_tags[RUN_TAG] = principal.run_id or ""
    rows = _tes(node).list_tasks(
        size + 1,
        before,
        name_prefix=name_prefix,
        state=state,
        tags=query_tags,
        owner=principal.subject,
        everyone=everyone,
    )
    tail = node.settings.tes.log_tail_bytes
    response: dict[str, Any] = {"tasks": [render(r, chosen, tail) for r in rows[:size]]}
    if len(rows) > size:
        response["next_page_token"] = node.page_tokens.encode(rows[size - 1].seq, scope)
    return response


@router.get("/tasks/{task_id}")
def get_task(
    task_id: str,
    node: NodeDep,
    principal: TesPrincipal,
    view: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    chosen = _view(view)
    if chosen == "MINIMAL" and principal.sees_all:
        # The view clients poll: one column, no JSON to decode.
        state = _tes(node).get_state(task_id)
        if state is None:
            raise NotFound(f"task {task_id} not found")
        return {"id": task_id, "state": state}
    row = _visible(_tes(node), task_id, principal)
    return render(row, chosen, node.settings.tes.log_tail_bytes)


@router.post("/tasks/{task_id}:cancel")
def cancel(task_id: str, node: NodeDep, principal: TesPrincipal) -> dict[str, Any]:
    tes = _tes(node)
    if not principal.sees_all:
        _visible(tes, task_id, principal)
    state = cancel_task(tes, task_id)
    if state is None:
        raise NotFound(f"task {task_id} not found")
    if state not in ("CANCELED", "CANCELING"):
        raise InvalidTransition(
            f"task {task_id} has already ended ({state}); there is nothing to cancel"
        )
    node.supervisor.notify_tes()
    return {}
