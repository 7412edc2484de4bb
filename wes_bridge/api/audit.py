"""The audit dependency: one audit record per WES, TES or TRS request (service-info aside).

Mounted on each router *before* the authentication dependency, so a request refused for its
credentials (401) is recorded too. The operation's outcome is what left the handler: allowed,
refused (401, 403, 404: with the client's message as the reason) or failed (any other
error). Handlers add what only they know (the new run's id, the workflow's checksum, the
datasets a submission names) with :func:`audit_note`. Polling by a run's engine driver and
the node's own TRS fetches (internal credentials) are not recorded unless they change
something: the user's submission is the record that matters. With ``auth.mode: none`` no
successful read is recorded (they are anonymous).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..audit import AuditEntry, Outcome
from ..auth import Principal
from ..errors import WesError

__all__ = ["audit_note", "audit_tes", "audit_trs", "audit_wes"]

log = logging.getLogger(__name__)

REFUSALS = (401, 403, 404)
_READS = ("read", "list", "fetch")
_PREFIX = re.compile(r"^/ga4gh/(?:wes|tes|trs)/v[0-9]+")


def _action(api: str, method: str, path: str) -> str | None:
    """The audited action of a route (its path below the API prefix), or None."""
    if path.endswith("/service-info"):
        return None
    if api == "wes":
        if path == "/runs":
            return "submit" if method == "POST" else "list"
        if path.endswith("/cancel"):
            return "cancel"
        return "read"
    if api == "tes":
        if path == "/tasks":
            return "create_task" if method == "POST" else "list"
        if path.endswith(":cancel"):
            return "cancel_task"
        return "read"
    if path in ("/tools", "/toolClasses"):
        return "list"
    return "fetch"


def audit_note(request: Request) -> dict[str, Any]:
    """What the handler adds to this request's record: ``target``, ``datasets`` (a set),
    ``workflow_checksum``."""
    note = getattr(request.state, "audit", None)
    if not isinstance(note, dict):
        note = {}
        request.state.audit = note
    return note


def _target(api: str, request: Request) -> str | None:
    params = request.path_params
    if api == "wes":
        return params.get("run_id")
    if api == "tes":
        return params.get("task_id")
    return params.get("path")


def _dependency(api: str) -> Callable[[Request], AsyncIterator[None]]:
    async def audited(request: Request) -> AsyncIterator[None]:
        path = _PREFIX.sub("", str(getattr(request.scope.get("route"), "path", "")))
        action = _action(api, request.method, path)
        if action is None:
            yield
            return
        async with _recording(request, api, action):
            yield

    return audited


@asynccontextmanager
async def _recording(request: Request, api: str, action: str) -> AsyncIterator[None]:
    note = audit_note(request)
    status, reason = 200, None
    try:
        yield
    except WesError as exc:
        status = exc.status_code
        reason = exc.msg if status in REFUSALS else type(exc).__name__
        raise
    except RequestValidationError:
        status, reason = 400, "invalid request"
        raise
    except HTTPException as exc:
        status, reason = exc.status_code, "error"
        raise
    except Exception:
        status, reason = 500, "internal error"
        raise
    finally:
        principal = getattr(request.state, "principal", None)
        # Successful reads are not recorded for a run's driver or the node itself, nor with
        # auth.mode none, where they are anonymous: nobody to attribute them to, and the
        # drivers' polls of the embedded TES would be a write per poll.
        if not (
            isinstance(principal, Principal)
            and principal.kind in ("run", "node", "anonymous")
            and action in _READS
            and status < 400
        ):
            outcome: Outcome = (
                "allowed" if status < 400 else "refused" if status in REFUSALS else "failed"
            )
            subject = None
            if isinstance(principal, Principal):
                subject = principal.subject or (
                    "anonymous" if principal.kind == "anonymous" else principal.kind
                )
            entry = AuditEntry(
                api=api,
                action=action,
                outcome=outcome,
                status_code=status,
                subject=subject,
                client=request.client.host if request.client else None,
                target=note.get("target") or _target(api, request),
                reason=reason,
                workflow_checksum=note.get("workflow_checksum"),
                datasets=sorted(note.get("datasets") or ()),
            )
            try:
                await run_in_threadpool(request.app.state.node.audit.record, entry)
            except Exception:
                log.exception("cannot write an audit record (%s %s)", api, action)


audit_wes = _dependency("wes")
audit_tes = _dependency("tes")
audit_trs = _dependency("trs")
