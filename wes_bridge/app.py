"""The ASGI application, built by :func:`create_app` (no import-time singletons)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .api import install_error_handlers, wes_router
from .api.audit import audit_tes, audit_trs, audit_wes
from .api.errors import error_response
from .api.tes import router as tes_router
from .api.trs import TRS_PREFIX, install_trs_errors, trs_error
from .api.trs import router as trs_router
from .auth.api import tes_user, trs_user, wes_user
from .config import Settings
from .errors import UploadTooLarge
from .node import Node, build_node
from .registry import EngineRegistry
from .trs.registry import Registry

__all__ = ["TES_PREFIX", "TRS_PREFIX", "WES_PREFIX", "create_app"]

WES_PREFIX = "/ga4gh/wes/v1"
TES_PREFIX = "/ga4gh/tes/v1"


class BodySizeLimit:
    """Refuses request bodies over ``limit`` bytes, declared or streamed, with a 400."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is larger than this node's limit of {self.limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                if scope.get("path", "").startswith(TRS_PREFIX + "/"):
                    await trs_error(400, message)(scope, receive, send)
                else:
                    await error_response(400, message)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge(message)
            return msg

        await self.app(scope, limited_receive, send)


def create_app(
    settings: Settings, registry: EngineRegistry | None = None, *, wes: bool = True
) -> FastAPI:
    """A node for ``settings``; its supervisor runs while the app's lifespan does.

    It serves WES (unless ``wes=False``) and, unless the node is pointed at an external TES,
    the embedded TES at ``/ga4gh/tes/v1``. A full node (``wes=True``) also serves its TRS
    registry at ``/ga4gh/trs/v2`` unless ``trs.serve`` is off; a malformed registry raises
    :class:`wes_bridge.trs.registry.RegistryError` (naming the file) before anything starts.
    """
    trs_registry = Registry.from_settings(settings) if wes and settings.trs.serve else None
    node: Node = build_node(settings, registry, wes=wes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        node.start()
        try:
            yield {}
        finally:
            node.stop()

    app = FastAPI(
        title="wes-bridge",
        version=__version__,
        lifespan=lifespan,
        docs_url=f"{WES_PREFIX}/ui",
        openapi_url=f"{WES_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.state.node = node
    install_error_handlers(app)
    # Every operation of each API needs credentials when auth is on (service-info excepted),
    # and leaves one audit record (the audit dependency comes first, to see 401s too).
    if wes:
        app.include_router(
            wes_router,
            prefix=WES_PREFIX,
            dependencies=[Depends(audit_wes, scope="function"), Depends(wes_user)],
        )
    if node.tes is not None:
        app.include_router(
            tes_router,
            prefix=TES_PREFIX,
            dependencies=[Depends(audit_tes, scope="function"), Depends(tes_user)],
        )
    app.state.trs_registry = trs_registry
    if trs_registry is not None:
        app.include_router(
            trs_router,
            prefix=TRS_PREFIX,
            dependencies=[Depends(audit_trs, scope="function"), Depends(trs_user)],
        )
    install_trs_errors(app)  # served or not, errors under the TRS prefix are TRS Errors
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    return app
