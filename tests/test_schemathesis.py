"""Property-based tests of the WES and TES endpoints against the official documents
(schemathesis): with authentication on, no generated request gets a 5xx, and every response
is valid for the document.

The node runs for real (uvicorn on loopback), with OIDC on and a real signed token in every
generated request. The documents are used as published (``../shared/specs``), their remote
service-info ``$ref`` pointed at the local copy. Hypothesis is derandomized and bounded, so a
CI run is repeatable and short (about 20 s here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from wes_bridge.app import create_app
from wes_bridge.config import load_settings

from .conftest import WES, SpecCheckedClient, free_port
from .spec_check import (
    SERVICE_INFO_URL,
    SPECS_DIR,
    _is_minimal,
    check_response,
    tes_api,
    wes_api,
)
from .test_auth import TES, IdentityProvider, _auth, _submit, idp

__all__ = ["idp"]  # the identity provider fixture, shared with test_auth

# Per operation and generation mode; WES_BRIDGE_SCHEMATHESIS_EXAMPLES searches harder.
MAX_EXAMPLES = int(os.environ.get("WES_BRIDGE_SCHEMATHESIS_EXAMPLES", "20"))
SERVICE_INFO_PREFIX = "GA4GHServiceInfo_"


def local_document(filename: str) -> dict[str, Any]:
    """The document with the service-info schemas it refers to by URL copied in, as JSON
    (YAML reads the unquoted timestamps of its examples as datetime objects)."""
    document = json.loads(
        json.dumps(yaml.safe_load((SPECS_DIR / filename).read_text("utf-8")), default=str)
    )
    service_info = yaml.safe_load((SPECS_DIR / "service-info-1.0.0.yaml").read_text("utf-8"))
    remote = SERVICE_INFO_URL + "#/components/schemas/"
    local = "#/components/schemas/"

    def rewrite(node: Any, inside_service_info: bool) -> Any:
        if isinstance(node, dict):
            result = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    if value.startswith(remote):
                        value = local + SERVICE_INFO_PREFIX + value[len(remote) :]
                    elif inside_service_info and value.startswith(local):
                        value = local + SERVICE_INFO_PREFIX + value[len(local) :]
                result[key] = rewrite(value, inside_service_info)
            return result
        if isinstance(node, list):
            return [rewrite(item, inside_service_info) for item in node]
        return node

    document = rewrite(document, False)
    schemas = document["components"]["schemas"]
    for name, schema in service_info["components"]["schemas"].items():
        schemas[SERVICE_INFO_PREFIX + name] = rewrite(schema, True)
    return document


@pytest.fixture(scope="module")
def node_app(tmp_path_factory: pytest.TempPathFactory, idp: IdentityProvider) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("schemathesis")
    datasets = root / "datasets"
    (datasets / "EGAD1").mkdir(parents=True)
    (datasets / "EGAD2").mkdir(parents=True)
    node_settings = load_settings(
        data_dir=root / "data", port=free_port(), auth=_auth(idp, datasets)
    )
    app = create_app(node_settings)
    # Generated TES tasks are accepted but never run: their commands are arbitrary strings.
    app.state.node.tes_backend_available = (False, "the schemathesis tests run no task")
    with SpecCheckedClient(app) as client:
        # A run and a task of the user's, so that the lists are not empty.
        token = idp.token("alice")
        assert _submit(client, token).status_code == 200
        headers = {"Authorization": f"Bearer {token}"}
        task = {"executors": [{"image": "alpine", "command": ["true"]}], "tags": {"k": "v"}}
        assert client.post(f"{TES}/tasks", json=task, headers=headers).status_code == 200
        yield app


@pytest.fixture(scope="module")
def live_node(node_app: Any, idp: IdentityProvider) -> tuple[str, str]:
    port = node_app.state.node.settings.port
    return f"http://127.0.0.1:{port}", idp.token("alice", lifetime=3600)


def _conforms_to(api: Any) -> Any:
    """A check: the response is valid for the document as tests/spec_check.py reads it (which
    also checks error bodies where the document declares no error response)."""

    def spec_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
        path = api.prefix + case.formatted_path
        check_response(
            api,
            case.method,
            path,
            response.status_code,
            response.content,
            (response.headers.get("content-type") or [""])[0],
        )
        return None

    return spec_conformance


HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

wes = schemathesis.openapi.from_dict(local_document("wes-1.1.0.openapi.yaml"))
tes = schemathesis.openapi.from_dict(local_document("tes-1.1.0.openapi.yaml"))


def schema_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' response schema check, except on TES MINIMAL views.

    The TES document contradicts itself there: the MINIMAL view "will include ONLY the fields
    id and state", while its tesTask schema requires ``executors``. Such a response is still
    checked, by spec_conformance, against tesTask without ``required`` (tests/spec_check.py).
    """
    if case.path in ("/tasks", "/tasks/{id}") and case.method == "GET":
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if response.status_code == 200 and _is_minimal(data):
            return None
    return response_schema_conformance(ctx, response, case)  # type: ignore[no-any-return]


def _call(case: Any, live_node: tuple[str, str], prefix: str, api: Any) -> None:
    base, token = live_node
    case.call_and_validate(
        base_url=base + prefix,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error],
        additional_checks=[schema_conformance, _conforms_to(api)],
    )


@wes.parametrize()
@HYPOTHESIS
def test_wes(case: Any, live_node: tuple[str, str]) -> None:
    _call(case, live_node, WES, wes_api())


@tes.parametrize()
@HYPOTHESIS
def test_tes(case: Any, live_node: tuple[str, str]) -> None:
    _call(case, live_node, TES, tes_api())


def test_the_documents_resolve_locally() -> None:
    for name in ("wes-1.1.0.openapi.yaml", "tes-1.1.0.openapi.yaml"):
        assert SERVICE_INFO_URL not in yaml.safe_dump(local_document(name)), name


def test_the_generated_requests_were_made_as_the_user(node_app: Any) -> None:
    """The audit log of the node holds the requests above: all made with the token."""
    entries = node_app.state.node.audit.query()
    assert len(entries) >= MAX_EXAMPLES
    assert {e.subject for e in entries} == {"alice"}
    assert not [e for e in entries if e.status_code >= 500]
