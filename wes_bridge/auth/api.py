"""FastAPI dependencies: the principal of a WES, TES or TRS request.

Mounted on each router as a dependency, so no operation is left open by mistake; only the
service-info endpoints stay public. The result is kept on the request, so operations that
take the principal as a parameter do not verify the credentials twice.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .core import ANONYMOUS, Api, Principal

__all__ = ["TesPrincipal", "TrsPrincipal", "WesPrincipal", "tes_user", "trs_user", "wes_user"]


def _principal(request: Request, api: Api) -> Principal:
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    route = request.scope.get("route")
    if str(getattr(route, "path", "")).endswith("/service-info"):
        return ANONYMOUS  # public; nothing there depends on who asks
    principal = request.app.state.node.auth.authenticate(request.headers.get("authorization"), api)
    assert isinstance(principal, Principal)
    request.state.principal = principal
    return principal


# Plain functions: FastAPI runs them in its thread pool, since verifying may fetch keys, ask
# the issuer's userinfo endpoint or check a bcrypt hash.
def wes_user(request: Request) -> Principal:
    return _principal(request, "wes")


def tes_user(request: Request) -> Principal:
    return _principal(request, "tes")


def trs_user(request: Request) -> Principal:
    return _principal(request, "trs")


WesPrincipal = Annotated[Principal, Depends(wes_user)]
TesPrincipal = Annotated[Principal, Depends(tes_user)]
TrsPrincipal = Annotated[Principal, Depends(trs_user)]
