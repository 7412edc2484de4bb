"""This node's TRS 2.0.1 registry (``/ga4gh/trs/v2``), read-only.

Tool ids such as ``#workflow/wes-bridge/cwl/hello`` hold ``#`` and ``/``, so clients send them
percent-encoded (``%23workflow%2Fwes-bridge%2Fcwl%2Fhello``). The server decodes ``%2F`` before
routing, so every ``/tools/{id}/...`` request is routed here on the raw path, one segment at a
time: an id (or version id) is either one encoded segment or, when unambiguous, the decoded
segments that spell a known id. Relative paths may use ``/`` or ``%2F``.

Every error under the prefix is the TRS ``Error {code, message}`` (:func:`install_trs_errors`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote, urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .. import __version__
from ..errors import BadRequest, NotFound
from ..trs.models import (
    DescriptorType,
    DescriptorTypeWithPlain,
    FileType,
    dump,
)
from ..trs.registry import (
    TOOL_CLASSES,
    Registry,
    RegistryTool,
    RegistryVersion,
    is_safe_relative_path,
)

__all__ = ["TRS_PREFIX", "install_trs_errors", "router", "trs_error"]

TRS_PREFIX = "/ga4gh/trs/v2"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 2**31 - 1  # int32

router = APIRouter()


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.trs_registry
    return registry


def _base(request: Request) -> str:
    public = request.app.state.node.settings.public_url
    if public:
        return str(public).rstrip("/") + TRS_PREFIX
    return str(request.base_url).rstrip("/") + TRS_PREFIX


def _json(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(data, BaseModel):
        data = dump(data)
    elif isinstance(data, list):
        data = [dump(d) if isinstance(d, BaseModel) else d for d in data]
    return JSONResponse(data, status_code=status_code, headers=headers)


# -- errors ---------------------------------------------------------------------------------
def trs_error(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"code": status_code, "message": message}, status_code=status_code, headers=headers
    )


Handler = Callable[[Request, Exception], Awaitable[Response] | Response]


def install_trs_errors(app: FastAPI) -> None:
    """Errors under ``/ga4gh/trs/v2`` leave as TRS ``Error {code, message}``.

    Wraps the node's handlers (installed first), so status codes and messages stay the same as
    on WES and TES (400 for bad parameters, a 500 with a log reference): only the shape
    differs. Paths elsewhere are left to the wrapped handler as they are.
    """

    def wrap(original: Handler) -> Handler:
        async def handler(request: Request, exc: Exception) -> Response:
            response = original(request, exc)
            if not isinstance(response, Response):
                response = await response
            if not request.url.path.startswith(TRS_PREFIX + "/"):
                return response
            try:
                body = json.loads(bytes(response.body))
                message = str(body.get("msg") or "error")
            except (ValueError, AttributeError):
                message = "error"
            headers = dict(getattr(exc, "headers", None) or {})
            return trs_error(response.status_code, message, headers or None)

        return handler

    for key, original in list(app.exception_handlers.items()):
        app.exception_handlers[key] = wrap(original)


# -- service-info and tool classes ----------------------------------------------------------
@router.get("/service-info")
def get_service_info(request: Request) -> Response:
    settings = request.app.state.node.settings
    registry = _registry(request)
    return _json(
        {
            "id": settings.service_id + ".trs",
            "name": settings.service_name + " TRS",
            "type": {"group": "org.ga4gh", "artifact": "trs", "version": "2.0.1"},
            "description": (
                f"The TRS registry of wes-bridge: {len(registry.tools)} tools read from a "
                "folder of workflows, every file with its sha-256 checksum"
            ),
            "organization": {"name": settings.organization_name, "url": settings.organization_url},
            "version": __version__,
            **({"contactUrl": settings.contact_url} if settings.contact_url else {}),
            **({"environment": settings.environment} if settings.environment else {}),
        }
    )


@router.get("/toolClasses")
def get_tool_classes() -> Response:
    return _json(list(TOOL_CLASSES.values()))


# -- /tools ---------------------------------------------------------------------------------
def _matches(
    tool: RegistryTool,
    *,
    id: str | None,
    alias: str | None,
    toolClass: str | None,
    descriptorType: DescriptorType | None,
    registry: str | None,
    organization: str | None,
    name: str | None,
    toolname: str | None,
    description: str | None,
    author: str | None,
    checker: bool | None,
) -> bool:
    images = [image for v in tool.versions.values() for image in v.images]
    checks = [
        id is None or tool.id == id,
        alias is None or alias in tool.aliases,
        toolClass is None or toolClass in (tool.toolclass.name, tool.toolclass.id),
        descriptorType is None or tool.descriptor_type == descriptorType,
        registry is None or any(i.registry_host == registry for i in images),
        organization is None or tool.organization == organization,
        name is None or tool.name == name or any(i.image_name == name for i in images),
        toolname is None or tool.name == toolname,
        description is None or description.casefold() in (tool.description or "").casefold(),
        author is None or author in tool.author,
        checker is None or checker is False,  # no tool here is a checker workflow
    ]
    return all(checks)


def _offset(value: str | None) -> int:
    if value is None:
        return 0
    try:
        offset = int(value)
    except ValueError:
        raise BadRequest(f"offset must be a non-negative integer, not {value!r}") from None
    if offset < 0:
        raise BadRequest(f"offset must be a non-negative integer, not {value!r}")
    return offset


@router.get("/tools")
def list_tools(
    request: Request,
    id: Annotated[str | None, Query()] = None,
    alias: Annotated[str | None, Query()] = None,
    toolClass: Annotated[str | None, Query()] = None,
    descriptorType: Annotated[str | None, Query()] = None,
    registry: Annotated[str | None, Query()] = None,
    organization: Annotated[str | None, Query()] = None,
    name: Annotated[str | None, Query()] = None,
    toolname: Annotated[str | None, Query()] = None,
    description: Annotated[str | None, Query()] = None,
    author: Annotated[str | None, Query()] = None,
    checker: Annotated[bool | None, Query()] = None,
    offset: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query()] = DEFAULT_LIMIT,
) -> Response:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit}")
    start = _offset(offset)
    wanted_type: DescriptorType | None = None
    if descriptorType is not None:
        try:
            wanted_type = DescriptorType(descriptorType)
        except ValueError:
            raise BadRequest(
                f"descriptorType must be one of {', '.join(DescriptorType)}, not {descriptorType!r}"
            ) from None
    tools = [
        tool
        for tool in _registry(request).tools.values()
        if _matches(
            tool,
            id=id,
            alias=alias,
            toolClass=toolClass,
            descriptorType=wanted_type,
            registry=registry,
            organization=organization,
            name=name,
            toolname=toolname,
            description=description,
            author=author,
            checker=checker,
        )
    ]
    base = _base(request)
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "limit")]

    def page_url(page_offset: int) -> str:
        query = urlencode([*kept, ("offset", str(page_offset)), ("limit", str(limit))])
        return f"{base}/tools?{query}"

    last_offset = ((len(tools) - 1) // limit) * limit if tools else 0
    headers = {
        "self_link": page_url(start),
        "last_page": page_url(last_offset),
        "current_offset": str(start),
        "current_limit": str(limit),
    }
    links = [f'<{headers["last_page"]}>; rel="last"']
    if start + limit < len(tools):
        headers["next_page"] = page_url(start + limit)
        links.insert(0, f'<{headers["next_page"]}>; rel="next"')
    headers["Link"] = ", ".join(links)
    page = tools[start : start + limit]
    return _json([tool.model(base) for tool in page], headers=headers)


# -- /tools/{id}/... on the raw path --------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    tool: RegistryTool
    kind: str  # tool, versions, version, containerfile, descriptor, tests, files
    version: RegistryVersion | None = None
    type: str | None = None
    relative_path: str | None = None
    canonical: bool = True  # the tool id and the version id were one segment each


def _raw_segments(request: Request) -> list[str]:
    """The segments of the request's path after ``/ga4gh/trs/v2/tools/``, still encoded."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else str(request.scope["path"])
    segments = path.split("?", 1)[0].split("/")
    marker = ["ga4gh", "trs", "v2", "tools"]
    for i in range(len(segments) - len(marker) + 1):
        if [unquote(s) for s in segments[i : i + len(marker)]] == marker:
            return segments[i + len(marker) :]
    raise NotFound("no such endpoint")  # pragma: no cover - the route matched this prefix


def _tail(
    tool: RegistryTool, version: RegistryVersion, tail: list[str], canonical: bool
) -> _Target | str:
    """The target of what follows ``/versions/{version_id}``, or an error message."""
    if not tail:
        return _Target(tool, "version", version, canonical=canonical)
    if tail == ["containerfile"]:
        return _Target(tool, "containerfile", version, canonical=canonical)
    if len(tail) == 2 and tail[1] in ("descriptor", "tests", "files"):
        return _Target(tool, tail[1], version, type=tail[0], canonical=canonical)
    if len(tail) >= 3 and tail[1] == "descriptor":
        relative = "/".join(tail[2:])
        return _Target(tool, "descriptor", version, tail[0], relative, canonical)
    return "no such endpoint"


def _resolve(registry: Registry, raw: list[str]) -> _Target:
    decoded = [unquote(s) for s in raw]  # invalid UTF-8 becomes U+FFFD: no id has it
    found: list[_Target] = []
    misses: list[tuple[int, str]] = []  # (depth, message) of the nearest misses
    for k in range(1, len(decoded) + 1):
        tool = registry.get("/".join(decoded[:k]))
        if tool is None:
            continue
        rest = decoded[k:]
        if not rest:
            found.append(_Target(tool, "tool", canonical=k == 1))
            continue
        if rest[0] != "versions":
            misses.append((1, "no such endpoint"))
            continue
        if len(rest) == 1:
            found.append(_Target(tool, "versions", canonical=k == 1))
            continue
        for m in range(1, len(rest)):
            version = tool.versions.get("/".join(rest[1 : 1 + m]))
            if version is None:
                continue
            target = _tail(tool, version, rest[1 + m :], k == 1 and m == 1)
            if isinstance(target, _Target):
                found.append(target)
            else:
                misses.append((3, target))
        misses.append((2, f"tool {tool.id!r} has no version {rest[1]!r}"))
    if len(found) > 1:
        found = [t for t in found if t.canonical]
    if len(found) == 1:
        return found[0]
    if found:
        raise NotFound(
            "this path names more than one tool or version of this registry; "
            "percent-encode the tool id and the version id (/ as %2F)"
        )
    if misses:
        raise NotFound(max(misses, key=lambda m: m[0])[1])
    if not decoded or not decoded[0]:
        raise NotFound("no tool id in the path")
    raise NotFound(f"no tool {decoded[0]!r} in this registry (percent-encode ids: / as %2F)")


def _descriptor_type(
    tool: RegistryTool, value: str | None, *, plain_allowed: bool = True
) -> DescriptorTypeWithPlain:
    try:
        wanted = DescriptorTypeWithPlain(value or "")
    except ValueError:
        raise NotFound(
            f"unknown descriptor type {value!r} (one of {', '.join(DescriptorTypeWithPlain)})"
        ) from None
    if wanted.plain and not plain_allowed:
        raise NotFound(
            f"the files of a version are listed by descriptor type "
            f"({wanted.descriptor_type.value}), not {wanted.value}"
        )
    if wanted.descriptor_type != tool.descriptor_type:
        raise NotFound(
            f"tool {tool.id!r} has no {wanted.descriptor_type.value} descriptor "
            f"(its descriptor type is {tool.descriptor_type.value})"
        )
    return wanted


@router.get("/tools/{path:path}")
def tool_path(request: Request, path: str) -> Response:
    target = _resolve(_registry(request), _raw_segments(request))
    base = _base(request)
    tool, version = target.tool, target.version
    if target.kind == "tool":
        return _json(tool.model(base))
    if target.kind == "versions":
        return _json([tool.version_model(base, v) for v in tool.versions.values()])
    assert version is not None
    if target.kind == "version":
        return _json(tool.version_model(base, version))
    if target.kind == "containerfile":
        files = version.of_type(FileType.CONTAINERFILE)
        if not files:
            raise NotFound(
                f"version {version.id!r} of tool {tool.id!r} has no container specification"
            )
        return _json([tool.file_wrapper(base, version, f) for f in files])
    if target.kind == "files":
        _descriptor_type(tool, target.type, plain_allowed=False)
        return _files(request, tool, version)
    wanted = _descriptor_type(tool, target.type)
    if target.kind == "tests":
        wrappers = [
            dump(tool.file_wrapper(base, version, f)) for f in version.of_type(FileType.TEST_FILE)
        ]
        if wanted.plain:
            return Response(json.dumps(wrappers), media_type="text/plain")
        return _json(wrappers)
    # descriptor: the primary one, or the file at a relative path
    if target.relative_path is None:
        file = version.primary
    else:
        relative = target.relative_path
        candidate = version.files.get(relative) if is_safe_relative_path(relative) else None
        if candidate is None:
            raise NotFound(f"version {version.id!r} of tool {tool.id!r} has no file {relative!r}")
        file = candidate
    if wanted.plain:
        data = file.read()
        try:
            data.decode("utf-8")
            media_type = "text/plain; charset=utf-8"
        except UnicodeDecodeError:
            media_type = "text/plain"
        return Response(data, headers={"content-type": media_type})
    return _json(tool.file_wrapper(base, version, file))


def _files(request: Request, tool: RegistryTool, version: RegistryVersion) -> Response:
    fmt = request.query_params.get("format")
    if fmt is None:
        return _json([tool.file_model(f) for f in version.files.values()])
    if fmt != "zip":
        raise BadRequest(f"format may only be zip, not {fmt!r}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(version.files.values(), key=lambda f: f.path):
            info = zipfile.ZipInfo(file.path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file.read())
    stem = "".join(c if c.isalnum() or c in "-._" else "_" for c in f"{tool.name}-{version.id}")
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="{stem}.zip"'},
    )
