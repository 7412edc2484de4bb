"""Checks HTTP responses against the official GA4GH OpenAPI documents in ../shared/specs.

The documents are used as published. Their one remote ``$ref`` (GA4GH service-info) is served
from the copy beside them, since there is no network here.
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPECS_DIR = Path(__file__).resolve().parents[2] / "shared" / "specs"
SERVICE_INFO_URL = (
    "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
)

# Status codes the WES document leaves out for some operations although the case exists; each
# is a decision recorded here, not a silent pass. Bodies are still checked as ErrorResponse.
UNDECLARED_BUT_ALLOWED = {
    # A page_token that was tampered with, or a page_size < 1: WES declares 400 on ListRuns
    # but not on ListTasks.
    ("get", "/runs/{run_id}/tasks", 400),
    # Cancelling a run that has already ended: WES declares no 400/409 on CancelRun.
    ("post", "/runs/{run_id}/cancel", 400),
}


@dataclass(frozen=True)
class Api:
    name: str
    prefix: str
    document: dict[str, Any]
    uri: str
    registry: Registry

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """The (template, operation) a concrete request path matches, if any."""
        for template, item in self.document["paths"].items():
            pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path) and method.lower() in item:
                return template, item[method.lower()]
        return None


@cache
def load_api(filename: str, prefix: str) -> Api:
    path = SPECS_DIR / filename
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    service_info = yaml.safe_load((SPECS_DIR / "service-info-1.0.0.yaml").read_text())
    uri = f"urn:ga4gh:{filename}"
    registry: Registry = Registry().with_resources(
        [
            (uri, Resource(contents=document, specification=DRAFT4)),
            (SERVICE_INFO_URL, Resource(contents=service_info, specification=DRAFT4)),
        ]
    )
    return Api(filename, prefix, document, uri, registry)


def wes_api() -> Api:
    return load_api("wes-1.1.0.openapi.yaml", "/ga4gh/wes/v1")


def tes_api() -> Api:
    return load_api("tes-1.1.0.openapi.yaml", "/ga4gh/tes/v1")


def _absolute_refs(node: Any, base: str) -> Any:
    """``node`` with its document-relative ``$ref``s made absolute against ``base``."""
    if isinstance(node, dict):
        return {
            k: (
                base + v
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _absolute_refs(v, base)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_refs(v, base) for v in node]
    return node


@cache
def trs_api() -> Api:
    """The TRS 2.0.1 document. Its ``/service-info`` path item is a remote ``$ref`` to the
    service-info document; the copy beside it is put in its place (its own ``$ref``s made
    absolute, so they still resolve against the service-info document)."""
    api = load_api("trs-2.0.1.openapi.yaml", "/ga4gh/trs/v2")
    document = copy.deepcopy(api.document)
    service_info = yaml.safe_load((SPECS_DIR / "service-info-1.0.0.yaml").read_text())
    document["paths"]["/service-info"] = _absolute_refs(
        service_info["paths"]["/service-info"], SERVICE_INFO_URL
    )
    uri = api.uri.replace(".openapi.yaml", "-resolved.openapi.yaml")
    registry: Registry = api.registry.with_resource(
        uri, Resource(contents=document, specification=DRAFT4)
    )
    return Api(api.name, api.prefix, document, uri, registry)


@cache
def tes_api_minimal() -> Api:
    """The TES document with ``tesTask.required`` dropped, for MINIMAL views only.

    The document contradicts itself: the MINIMAL view "will include ONLY the fields id and
    state", while the tesTask schema requires ``executors``. A response in which every task
    has only ``id`` and ``state`` is checked against this variant; all others against the
    document as published.
    """
    api = tes_api()
    document = copy.deepcopy(api.document)
    document["components"]["schemas"]["tesTask"].pop("required", None)
    uri = api.uri.replace(".openapi.yaml", "-minimal-view.openapi.yaml")
    registry: Registry = api.registry.with_resource(
        uri, Resource(contents=document, specification=DRAFT4)
    )
    return Api(api.name + " (MINIMAL view)", api.prefix, document, uri, registry)


def _is_minimal(data: Any) -> bool:
    tasks = data.get("tasks") if isinstance(data, dict) and "tasks" in data else [data]
    return bool(tasks) and all(isinstance(t, dict) and set(t) <= {"id", "state"} for t in tasks)


# Error statuses the node may answer on any TES operation (TES itself declares none).
# 401 and 403 when authentication is on (TES declares no error responses at all).
TES_ERROR_STATUSES = frozenset({400, 401, 403, 404, 500})


class SpecViolation(AssertionError):
    pass


def check_response(
    api: Api,
    method: str,
    url_path: str,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """Validate one response; returns False for paths the document does not describe.

    For TRS, ``url_path`` is the path as sent (percent-encoded: tool ids hold ``/``), and
    ``headers`` (if given) are checked against the headers the operation declares.
    """
    if not url_path.startswith(api.prefix):
        return False
    if api.name == trs_api().name:
        return _check_trs_response(api, method, url_path, status, body, content_type, headers)
    path = url_path[len(api.prefix) :] or "/"
    found = api.operation(method, path)
    if found is None:
        return False
    template, operation = found
    responses = {str(k): v for k, v in operation["responses"].items()}
    declared = responses.get(str(status))
    if declared is None and api is tes_api() and status in TES_ERROR_STATUSES:
        # TES 1.1 declares no error responses at all; the node answers with the same
        # ErrorResponse shape as its WES endpoints.
        _check_error_body(method, template, status, body, content_type)
        return True
    if declared is None:
        if (method.lower(), template, status) not in UNDECLARED_BUT_ALLOWED:
            raise SpecViolation(
                f"{method} {template} answered {status}, which the {api.name} does not declare "
                f"(declared: {', '.join(sorted(responses))})"
            )
        declared = responses.get("400") or {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            }
        }
    content = declared.get("content", {}).get("application/json")
    if content is None:
        return True
    if not content_type.startswith("application/json"):
        raise SpecViolation(f"{method} {template} {status}: content-type {content_type!r}")
    data = json.loads(body)
    if (
        api is tes_api()
        and method.lower() == "get"
        and template in ("/tasks", "/tasks/{id}")
        and status == 200
        and _is_minimal(data)
    ):
        api = tes_api_minimal()
    schema = content["schema"]
    if "$ref" in schema:
        schema = {"$ref": api.uri + schema["$ref"]}
    validator = OAS30Validator(schema, registry=api.registry)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        detail = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        raise SpecViolation(f"{method} {template} {status} violates {api.name}: {detail}")
    # ErrorResponse has no required fields in the spec; we promise both.
    if status >= 400:
        _check_error_body(method, template, status, body, content_type)
    return True


def _check_error_body(method: str, template: str, status: int, body: bytes, ctype: str) -> None:
    if not ctype.startswith("application/json"):
        raise SpecViolation(f"{method} {template} {status}: content-type {ctype!r}")
    data = json.loads(body)
    if (
        not isinstance(data, dict)
        or set(data) != {"msg", "status_code"}
        or data["status_code"] != status
        or not isinstance(data["msg"], str)
        or not data["msg"]
    ):
        raise SpecViolation(f"{method} {template} {status}: error body {data!r}")


# -- TRS -------------------------------------------------------------------------------------
# Error statuses the node may answer on any TRS operation although the operation declares
# none: 400 for bad query parameters (TRS declares no 400 anywhere), 404 for an unknown tool on
# operations that declare no 404 (/tools/{id}/versions), 405 for another method, 500; 401 (no or
# bad credentials) when authentication is on: TRS declares a BEARER security scheme but no 401.
TRS_ERROR_STATUSES = frozenset({400, 401, 404, 405, 500})


@cache
def _trs_templates() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, template) of every TRS path, most specific first. A tool id may span
    segments (``/`` unencoded); a version id, a type and the other segments are one segment;
    a relative path is the rest of the path."""
    holes = {"{id}": ".+", "{version_id}": "[^/]+", "{type}": "[^/]+", "{relative_path}": ".+"}
    patterns = []
    for template in trs_api().document["paths"]:
        regex = re.escape(template)
        for hole, part in holes.items():
            regex = regex.replace(re.escape(hole), part)
        literals = len([p for p in template.split("/") if p and not p.startswith("{")])
        rank = ("{relative_path}" in template, literals, len(template))
        patterns.append((rank, re.compile(f"^{regex}$"), template))
    patterns.sort(key=lambda p: p[0], reverse=True)
    return [(pattern, template) for _, pattern, template in patterns]


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validate(api: Api, pointer: str, data: Any, what: str) -> None:
    validator = OAS30Validator({"$ref": api.uri + pointer}, registry=api.registry)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        detail = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        raise SpecViolation(f"{what} violates {api.name}: {detail}")


def _json_body(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SpecViolation(f"{what}: the body is not JSON ({exc})") from exc


def check_trs_error(what: str, status: int, body: bytes, content_type: str) -> None:
    """A TRS ``Error``: JSON with exactly ``code`` (the status) and a non-empty ``message``."""
    if not content_type.startswith("application/json"):
        raise SpecViolation(f"{what} {status}: content-type {content_type!r}")
    data = _json_body(body, f"{what} {status}")
    _validate(trs_api(), "#/components/schemas/Error", data, f"{what} {status}")
    if (
        not isinstance(data, dict)
        or set(data) != {"code", "message"}
        or data["code"] != status
        or not isinstance(data["message"], str)
        or not data["message"]
    ):
        raise SpecViolation(f"{what} {status}: error body {data!r}")


def _check_trs_response(
    api: Api,
    method: str,
    url_path: str,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None,
) -> bool:
    if method.upper() == "HEAD":
        return False  # no body to check
    path = url_path[len(api.prefix) :].split("?", 1)[0] or "/"
    template = next((t for pattern, t in _trs_templates() if pattern.match(path)), None)
    operation = api.document["paths"][template].get(method.lower()) if template else None
    what = f"{method} {template or path}"
    if status >= 400:
        # Every error under the prefix, described or not, is a TRS Error.
        if operation is not None:
            declared = {str(k) for k in operation["responses"]}
            if str(status) not in declared and status not in TRS_ERROR_STATUSES:
                raise SpecViolation(f"{what} answered {status}, which TRS does not declare")
        check_trs_error(what, status, body, content_type)
        return True
    if operation is None or template is None:
        return False
    responses = {str(k): v for k, v in operation["responses"].items()}
    declared = responses.get(str(status))
    if declared is None:
        raise SpecViolation(
            f"{what} answered {status}, which the {api.name} does not declare "
            f"(declared: {', '.join(sorted(responses))})"
        )
    media = content_type.split(";", 1)[0].strip().lower()
    content = declared.get("content", {})
    if media not in content:
        raise SpecViolation(
            f"{what} {status}: content-type {content_type!r} is not one of {sorted(content)}"
        )
    pointer = _pointer(
        "paths", template, method.lower(), "responses", str(status), "content", media, "schema"
    )
    schema = content[media]["schema"]
    if media == "application/json" or (media == "text/plain" and schema.get("type") == "array"):
        # text/plain with an array schema (the tests of a PLAIN_ type): the array, as text.
        _validate(api, pointer, _json_body(body, f"{what} {status}"), f"{what} {status}")
    elif media == "text/plain":
        if "charset=utf-8" in content_type.lower().replace(" ", ""):
            body.decode("utf-8")
    elif media == "application/zip":
        # The document gives a zip the schema of the JSON list; a zip is checked as a zip.
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                damaged = archive.testzip()
        except zipfile.BadZipFile as exc:
            raise SpecViolation(f"{what} {status}: not a zip ({exc})") from exc
        if damaged is not None:
            raise SpecViolation(f"{what} {status}: a damaged zip ({damaged})")
    for name, header in (declared.get("headers") or {}).items():
        if headers is None or name not in headers:
            continue
        value: Any = headers[name]
        if header.get("schema", {}).get("type") == "integer":
            if not re.fullmatch(r"-?[0-9]+", value):
                raise SpecViolation(f"{what} {status}: header {name} {value!r} is no integer")
            value = int(value)
        _validate(
            api,
            _pointer(
                "paths",
                template,
                method.lower(),
                "responses",
                str(status),
                "headers",
                name,
                "schema",
            ),
            value,
            f"{what} {status} header {name}",
        )
    return True


def check_trs(response: Any) -> bool:
    """Validate an ``httpx.Response`` of a TRS request against the TRS document (the path as
    it was sent, percent-encoded)."""
    raw_path = response.request.url.raw_path.decode("ascii").split("?", 1)[0]
    return check_response(
        trs_api(),
        response.request.method,
        raw_path,
        response.status_code,
        response.content,
        response.headers.get("content-type", ""),
        response.headers,
    )
