"""The WES 1.1.0 router (``/ga4gh/wes/v1``).

Besides the spec's operations it serves the log and output files that the log objects link to
(``/runs/{id}/stdout``, ``/runs/{id}/tasks/{task_id}/stderr``, ``/runs/{id}/outputs/{path}``)
and takes two additive filters on ``GET /runs``: ``state`` and ``tag_key``/``tag_value``.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from .. import __version__
from ..audit import workflow_checksum
from ..auth import Principal, strings_in
from ..auth.api import WesPrincipal
from ..errors import BadRequest, NotFound
from ..models import (
    STATES,
    DefaultWorkflowEngineParameter,
    Log,
    Organization,
    RunId,
    RunListResponse,
    RunLog,
    RunRequest,
    RunStatus,
    RunSummary,
    ServiceInfo,
    ServiceType,
    TaskListResponse,
    TaskLog,
    WorkflowEngineVersion,
    WorkflowTypeVersion,
)
from ..node import Node
from ..plugin import RunSpec
from ..registry import describe_validation_error
from ..staging import Attachment
from ..store import RunRecord, TaskRecord
from ..tes.link import tes_endpoint
from ..trs.client import known_registries, self_registry_token
from .audit import audit_note

__all__ = ["router"]

router = APIRouter()

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_FIELD_PART_LIMIT = 64 << 20
_SCALAR_FIELDS = (
    "workflow_params",
    "workflow_type",
    "workflow_type_version",
    "tags",
    "workflow_engine",
    "workflow_engine_version",
    "workflow_engine_parameters",
    "workflow_url",
)


def get_node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


NodeDep = Annotated[Node, Depends(get_node)]


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _base_url(node: Node, request: Request) -> str:
    if node.settings.public_url:
        return node.settings.public_url.rstrip("/") + "/ga4gh/wes/v1"
    return str(request.base_url).rstrip("/") + "/ga4gh/wes/v1"


def _page_size(value: int | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    if value < 1:
        raise BadRequest("page_size must be a positive integer")
    return min(value, MAX_PAGE_SIZE)


# -- service-info ---------------------------------------------------------------------------
@router.get("/service-info", response_model=ServiceInfo, response_model_exclude_none=True)
def get_service_info(node: NodeDep) -> ServiceInfo:
    settings = node.settings
    registry = node.registry
    counts = dict.fromkeys(STATES, 0)
    counts.update(node.store.state_counts())
    defaults: list[DefaultWorkflowEngineParameter] = []
    tags: dict[str, str] = {
        "wes_bridge_version": __version__,
        "max_concurrent_runs": str(settings.max_concurrent_runs),
        "workflow_url_schemes": (
            "trs (approved registries only)"
            if settings.trs.approved_only
            else "relative attachment path, http, https, trs"
        ),
        "trs.approved_only": "yes" if settings.trs.approved_only else "no",
        "auth.mode": settings.auth.mode,
        "trs.registries": ", ".join(
            f"{r.name}={r.url}{'' if r.approved else ' (not approved)'}"
            for r in known_registries(settings)
        ),
    }
    # Where every step of every run executes: the node's TES, and how that TES runs tasks.
    tes = tes_endpoint(settings, "")
    tags["tes.url"] = tes.url
    tags["tes.execution"] = tes.description
    tags["tes.shared_filesystem"] = "yes" if tes.shared_filesystem else "no"
    for name, engine in sorted(registry.engines.items()):
        model = engine.adapter.parameters_model
        for field_name, info in model.model_fields.items():
            annotation = info.annotation
            type_name = getattr(annotation, "__name__", None) or str(annotation)
            default = info.get_default(call_default_factory=True)
            defaults.append(
                DefaultWorkflowEngineParameter(
                    name=field_name,
                    type=type_name,
                    default_value=json.dumps(default) if not isinstance(default, str) else default,
                )
            )
        tags[f"engine.{name}.parameters"] = ",".join(model.model_fields)
        availability = engine.adapter.availability()
        tags[f"engine.{name}.usable"] = "yes" if availability.usable else availability.reason
        execution = getattr(engine.adapter, "execution_description", None)
        if callable(execution):
            tags[f"engine.{name}.execution"] = str(execution())
    for failure in registry.failures:
        tags[f"engine.{failure.name}.load_error"] = failure.reason
    return ServiceInfo(
        id=settings.service_id,
        name=settings.service_name,
        type=ServiceType(group="org.ga4gh", artifact="wes", version="1.1.0"),
        description="wes-bridge: a GA4GH WES node with pluggable workflow engines",
        organization=Organization(name=settings.organization_name, url=settings.organization_url),
        contactUrl=settings.contact_url,
        documentationUrl="https://github.com/wes-bridge/wes-bridge#readme",
        environment=settings.environment,
        version=__version__,
        workflow_type_versions={
            t: WorkflowTypeVersion(workflow_type_version=v)
            for t, v in registry.workflow_type_versions().items()
        },
        supported_wes_versions=["1.1.0"],
        supported_filesystem_protocols=["file", "http", "https"],
        workflow_engine_versions={
            e: WorkflowEngineVersion(workflow_engine_version=v)
            for e, v in registry.engine_versions().items()
        },
        default_workflow_engine_parameters=defaults,
        system_state_counts=counts,
        auth_instructions_url=settings.auth_instructions_url,
        tags=tags,
    )


# -- submitting -----------------------------------------------------------------------------
def _json_field(name: str, raw: Any, default: Any) -> Any:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} is not valid JSON: {exc}") from exc


def _string_map(name: str, value: Any, scalars_ok: bool = False) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object")
    result: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            result[key] = item
        elif scalars_ok and item is None:
            # Command-line style parameters ({"--parallel": null}, as Toil's WES client sends
            # them) name a flag given without a value.
            result[key] = "true"
        elif scalars_ok and isinstance(item, bool | int | float):
            result[key] = json.dumps(item)
        else:
            raise BadRequest(f"{name}[{key!r}] must be a string")
    return result


def _text_field(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value.strip() or None


async def _read_request(request: Request, node: Node) -> tuple[dict[str, Any], list[Attachment]]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object (a RunRequest)")
        unknown = set(body) - set(_SCALAR_FIELDS)
        if unknown:
            raise BadRequest(f"unknown RunRequest fields: {', '.join(sorted(unknown))}")
        return body, []
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise BadRequest("POST /runs takes multipart/form-data (or a JSON RunRequest)")
    form: FormData = await request.form(
        max_files=node.settings.max_attachments,
        max_fields=1000,
        max_part_size=_FIELD_PART_LIMIT,
    )
    fields: dict[str, Any] = {}
    attachments: list[Attachment] = []
    for key, value in form.multi_items():
        if key == "workflow_attachment":
            if not isinstance(value, UploadFile):
                raise BadRequest("workflow_attachment parts must be files with a filename")
            attachments.append(Attachment(value.filename or "", value.file))
        elif key in _SCALAR_FIELDS:
            if isinstance(value, UploadFile):
                # Some clients send JSON fields as file parts; accept their content.
                value = (await value.read()).decode("utf-8", "replace")
            if key in fields:
                raise BadRequest(f"form field {key} is given more than once")
            fields[key] = value
        else:
            raise BadRequest(f"unknown form field {key!r}")
    return fields, attachments


@router.post("/runs", response_model=RunId)
async def run_workflow(request: Request, node: NodeDep, principal: WesPrincipal) -> RunId:
    fields, attachments = await _read_request(request, node)
    workflow_type = _text_field(fields, "workflow_type")
    workflow_type_version = _text_field(fields, "workflow_type_version")
    workflow_url = _text_field(fields, "workflow_url")
    engine_name = _text_field(fields, "workflow_engine")
    engine_version = _text_field(fields, "workflow_engine_version")
    if not workflow_type:
        raise BadRequest("workflow_type is required")
    if not workflow_type_version:
        raise BadRequest("workflow_type_version is required")
    params = _json_field("workflow_params", fields.get("workflow_params"), {})
    if not isinstance(params, dict):
        raise BadRequest("workflow_params must be a JSON object")
    tags = _string_map("tags", _json_field("tags", fields.get("tags"), {}))
    engine_params = _string_map(
        "workflow_engine_parameters",
        _json_field("workflow_engine_parameters", fields.get("workflow_engine_parameters"), {}),
        scalars_ok=True,
    )
    engine = node.registry.resolve(
        workflow_type, workflow_type_version, engine_name, engine_version
    )
    try:
        parsed_params = engine.adapter.parameters_model.model_validate(engine_params)
    except ValidationError as exc:
        raise BadRequest(
            f"workflow_engine_parameters for {engine.name}: {describe_validation_error(exc)}"
        ) from exc
    if not workflow_url:
        raise BadRequest("workflow_url is required")
    # Dataset access, before anything is written: the parameters and the workflow URL. The
    # staged workflow files are checked once staged, below.
    policy = node.policy
    note = audit_note(request)
    note["datasets"] = named = policy.datasets_named(
        [workflow_url, *strings_in(params), *strings_in(engine_params), *tags.values()]
    )
    policy.check(named, principal.grants)
    credential = None
    if node.settings.tes.url and node.settings.tes.forward_user_token and principal.token:
        credential = node.tokens.seal(principal.token.get_secret_value())

    run_request = RunRequest(
        workflow_params=params,
        workflow_type=workflow_type,
        workflow_type_version=workflow_type_version,
        tags=tags,
        workflow_engine_parameters=engine_params,
        workflow_engine=engine.engine,
        workflow_engine_version=engine.engine_version,
        workflow_url=workflow_url,
    )

    def admit() -> str:
        # Staging, the adapter's checks and the insert: one trip to the thread pool, since on
        # a busy node every hop between threads waits for the scheduler.
        run_id = node.store.new_run_id()
        note["target"] = run_id
        with self_registry_token(node.auth.node_credential()):
            staged = node.stager.stage(run_id, workflow_url, attachments, workflow_type)
        try:
            note["workflow_checksum"] = workflow_checksum(staged.workflow_dir)
            in_files = policy.datasets_in_files(staged.workflow_dir)
            note["datasets"] = named | in_files
            policy.check(in_files, principal.grants)
            spec = RunSpec(
                run_id=run_id,
                workflow_type=workflow_type,
                workflow_type_version=workflow_type_version,
                workflow_url=workflow_url,
                workflow_path=staged.workflow_path,
                workflow_fragment=staged.workflow_fragment,
                workflow_dir=staged.workflow_dir,
                params=params,
                engine_parameters=parsed_params,
                tags=tags,
            )
            problems = engine.adapter.validate(spec)
            if problems:
                raise BadRequest("; ".join(problems))
            node.store.create_run(
                run_id,
                engine.name,
                run_request.model_dump(mode="json"),
                tags,
                str(staged.run_dir),
                {
                    "workflow_path": str(staged.workflow_path.relative_to(staged.workflow_dir)),
                    "workflow_fragment": staged.workflow_fragment,
                    **({"trs": staged.trs} if staged.trs else {}),
                },
                subject=principal.subject,
                grants=dict(principal.grants),
                credential=credential,
            )
        except BaseException:
            node.stager.discard(run_id)
            raise
        return run_id

    run_id = await run_in_threadpool(admit)
    node.supervisor.notify()
    return RunId(run_id=run_id)


# -- listing and reading --------------------------------------------------------------------
def _summary(run: RunRecord) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        state=run.state,
        start_time=_iso(run.start_time),
        end_time=_iso(run.end_time),
        tags=run.tags,
    )


@router.get("/runs", response_model=RunListResponse, response_model_exclude_none=True)
def list_runs(
    node: NodeDep,
    principal: WesPrincipal,
    page_size: Annotated[int | None, Query()] = None,
    page_token: Annotated[str | None, Query()] = None,
    state: Annotated[str | None, Query()] = None,
    tag_key: Annotated[str | None, Query()] = None,
    tag_value: Annotated[str | None, Query()] = None,
) -> RunListResponse:
    size = _page_size(page_size)
    if state is not None and state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}")
    if tag_value is not None and tag_key is None:
        raise BadRequest("tag_value needs tag_key")
    everyone = principal.sees_all
    scope = json.dumps(["runs", state, tag_key, tag_value, None if everyone else principal.subject])
    before = node.page_tokens.decode(page_token, scope) if page_token else None
    runs = node.store.list_runs(
        size + 1,
        before,
        state,
        tag_key,
        tag_value,
        subject=principal.subject,
        everyone=everyone,
    )
    token = node.page_tokens.encode(runs[size - 1].seq, scope) if len(runs) > size else ""
    return RunListResponse(runs=[_summary(r) for r in runs[:size]], next_page_token=token)


def trs_name(staged: dict[str, Any]) -> str | None:
    """A TRS workflow's name in its run log: ``<tool id>:<version>``."""
    trs = staged.get("trs")
    if not isinstance(trs, dict):
        return None
    return f"{trs.get('tool_id')}:{trs.get('version_id')}"


def trs_log_lines(staged: dict[str, Any]) -> list[str]:
    """Where a TRS workflow came from, for the run log: registry, id, version, and each file
    with the checksum it was verified against."""
    trs = staged.get("trs")
    if not isinstance(trs, dict):
        return []
    lines = [
        f"workflow from TRS registry {trs.get('registry')!r} ({trs.get('registry_url')}): "
        f"tool {trs.get('tool_id')!r} version {trs.get('version_id')!r}, "
        f"{trs.get('descriptor_type')} primary descriptor {trs.get('primary_descriptor')!r}"
    ]
    for item in trs.get("files") or []:
        checksum = (
            f"{item.get('checksum_type')}:{item.get('checksum')} verified"
            if item.get("checksum")
            else "no checksum given by the registry"
        )
        lines.append(
            f"TRS file {item.get('path')!r} ({item.get('file_type')}, "
            f"{item.get('size')} bytes): {checksum}"
        )
    return lines


def _run_or_404(node: Node, run_id: str, principal: Principal) -> RunRecord:
    """The run, if it exists and ``principal`` may see it: another user's run is a 404, as
    an unknown one is, so run ids do not tell who has runs."""
    run = node.store.get_run(run_id)
    if run is None or not principal.owns(run.subject):
        raise NotFound(f"run {run_id} not found")
    return run


@router.get("/runs/{run_id}", response_model=RunLog, response_model_exclude_none=True)
def get_run_log(run_id: str, node: NodeDep, request: Request, principal: WesPrincipal) -> RunLog:
    run = _run_or_404(node, run_id, principal)
    base = _base_url(node, request)
    req = RunRequest.model_validate(run.request)
    return RunLog(
        run_id=run.id,
        request=req,
        state=run.state,
        run_log=Log(
            name=trs_name(run.staged)
            or Path(req.workflow_url.partition("#")[0]).name
            or req.workflow_url,
            cmd=run.cmd,
            start_time=_iso(run.start_time),
            end_time=_iso(run.end_time),
            stdout=f"{base}/runs/{run.id}/stdout",
            stderr=f"{base}/runs/{run.id}/stderr",
            exit_code=run.exit_code,
            system_logs=[*trs_log_lines(run.staged), *run.system_logs],
        ),
        task_logs_url=f"{base}/runs/{run.id}/tasks",
        outputs=run.outputs,
    )


@router.get("/runs/{run_id}/status", response_model=RunStatus)
def get_run_status(run_id: str, node: NodeDep, principal: WesPrincipal) -> RunStatus:
    found = node.store.get_state_and_subject(run_id)
    if found is None or not principal.owns(found[1]):
        raise NotFound(f"run {run_id} not found")
    return RunStatus(run_id=run_id, state=found[0])


@router.post("/runs/{run_id}/cancel", response_model=RunId)
def cancel_run(run_id: str, node: NodeDep, principal: WesPrincipal) -> RunId:
    found = node.store.get_state_and_subject(run_id)
    if found is None or not principal.owns(found[1]):
        raise NotFound(f"run {run_id} not found")
    node.supervisor.cancel(run_id)
    return RunId(run_id=run_id)


def _task_log(task: TaskRecord, base: str) -> TaskLog:
    task_url = f"{base}/runs/{task.run_id}/tasks/{task.id}"
    return TaskLog(
        id=task.id,
        name=task.name,
        cmd=task.cmd,
        start_time=_iso(task.start_time),
        end_time=_iso(task.end_time),
        stdout=f"{task_url}/stdout" if task.stdout_path else None,
        stderr=f"{task_url}/stderr" if task.stderr_path else None,
        exit_code=task.exit_code,
        system_logs=[f"state: {task.state}", *task.system_logs],
        tes_uri=task.tes_uri,
    )


@router.get(
    "/runs/{run_id}/tasks", response_model=TaskListResponse, response_model_exclude_none=True
)
def list_tasks(
    run_id: str,
    node: NodeDep,
    request: Request,
    principal: WesPrincipal,
    page_size: Annotated[int | None, Query()] = None,
    page_token: Annotated[str | None, Query()] = None,
) -> TaskListResponse:
    _run_or_404(node, run_id, principal)
    size = _page_size(page_size)
    scope = json.dumps(["tasks", run_id])
    after = node.page_tokens.decode(page_token, scope) if page_token else None
    tasks = node.store.list_tasks(run_id, size + 1, after)
    token = node.page_tokens.encode(tasks[size - 1].seq, scope) if len(tasks) > size else ""
    base = _base_url(node, request)
    return TaskListResponse(
        task_logs=[_task_log(t, base) for t in tasks[:size]], next_page_token=token
    )


@router.get(
    "/runs/{run_id}/tasks/{task_id}", response_model=TaskLog, response_model_exclude_none=True
)
def get_task(
    run_id: str, task_id: str, node: NodeDep, request: Request, principal: WesPrincipal
) -> TaskLog:
    _run_or_404(node, run_id, principal)
    task = node.store.get_task(run_id, task_id)
    if task is None:
        raise NotFound(f"task {task_id} of run {run_id} not found")
    return _task_log(task, _base_url(node, request))


# -- files the logs link to -----------------------------------------------------------------
def _inside(root: Path, candidate: Path) -> Path:
    """``candidate`` resolved, if it stays inside ``root`` (symlinks included)."""
    root_real = root.resolve()
    real = candidate.resolve()
    if real != root_real and root_real not in real.parents:
        raise NotFound("no such file for this run")
    return real


def _text_file(path: Path) -> Response:
    if not path.is_file():
        # Not written yet: an empty log, not an error.
        return Response(b"", media_type="text/plain; charset=utf-8")
    return FileResponse(path, media_type="text/plain; charset=utf-8")


@router.get("/runs/{run_id}/stdout", include_in_schema=False)
def run_stdout(run_id: str, node: NodeDep, principal: WesPrincipal) -> Response:
    run = _run_or_404(node, run_id, principal)
    return _text_file(Path(run.run_dir) / "stdout.log")


@router.get("/runs/{run_id}/stderr", include_in_schema=False)
def run_stderr(run_id: str, node: NodeDep, principal: WesPrincipal) -> Response:
    run = _run_or_404(node, run_id, principal)
    return _text_file(Path(run.run_dir) / "stderr.log")


@router.get("/runs/{run_id}/tasks/{task_id}/{stream}", include_in_schema=False)
def task_stream(
    run_id: str, task_id: str, stream: str, node: NodeDep, principal: WesPrincipal
) -> Response:
    run = _run_or_404(node, run_id, principal)
    if stream not in ("stdout", "stderr"):
        raise NotFound("no such endpoint")
    task = node.store.get_task(run_id, task_id)
    if task is None:
        raise NotFound(f"task {task_id} of run {run_id} not found")
    recorded = task.stdout_path if stream == "stdout" else task.stderr_path
    if not recorded:
        raise NotFound(f"task {task_id} has no {stream} file")
    # A step's own log file (in the run directory) or its TES task's (in the embedded TES).
    roots = [Path(run.run_dir), node.settings.tes_dir]
    for root in roots:
        with contextlib.suppress(NotFound):
            return _text_file(_inside(root, Path(recorded)))
    raise NotFound("no such file for this run")


@router.get("/runs/{run_id}/outputs/{path:path}", include_in_schema=False)
def run_output_file(run_id: str, path: str, node: NodeDep, principal: WesPrincipal) -> FileResponse:
    run = _run_or_404(node, run_id, principal)
    root = Path(run.run_dir) / "outputs"
    target = _inside(root, root / path)
    if not target.is_file():
        raise NotFound("no such output file")
    return FileResponse(target, filename=os.path.basename(target))
