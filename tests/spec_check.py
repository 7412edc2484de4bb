"""Checks HTTP responses against the official GA4GH OpenAPI documents in ../shared/specs.

The documents are used as published. Their one remote ``$ref`` (GA4GH service-info) is served
from the copy beside them, since there is no network here.
"""

from __future__ import annotations

import copy
import json
import re
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
TES_ERROR_STATUSES = frozenset({400, 404, 500})


class SpecViolation(AssertionError):
    pass


def check_response(
    api: Api, method: str, url_path: str, status: int, body: bytes, content_type: str
) -> bool:
    """Validate one response; returns False for paths the document does not describe."""
    if not url_path.startswith(api.prefix):
        return False
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
