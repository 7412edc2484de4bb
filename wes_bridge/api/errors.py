"""Every error leaves as the spec's ``ErrorResponse {msg, status_code}``.

Request validation errors are 400 (never FastAPI's 422) and unexpected exceptions are a 500
with a reference to the server log, never the exception text.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import WesError

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_response(
    status_code: int, msg: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"msg": msg, "status_code": status_code}, status_code=status_code, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def wes_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WesError)
        if exc.status_code >= 500:
            log.error("%s", exc.msg)
        return error_response(exc.status_code, exc.msg, getattr(exc, "headers", None))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        msg = str(exc.detail) if exc.detail else "error"
        if status == 404 and msg == "Not Found":
            msg = "no such endpoint"
        if status == 422:
            status = 400
        return error_response(status, msg)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, _validation_message(exc))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error(
            "unhandled error (ref %s) on %s %s", ref, request.method, request.url.path, exc_info=exc
        )
        return error_response(500, f"internal server error (reference {ref} in the server log)")

    app.add_exception_handler(WesError, wes_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
