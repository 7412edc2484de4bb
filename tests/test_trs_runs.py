"""Runs whose workflow comes from a TRS registry, end to end through real `wes-bridge serve`s.

The node serves its own registry (test-workflows/, at /ga4gh/trs/v2); a run names a workflow in
it by ``trs://127.0.0.1:PORT/<id>/<version>``, by a Dockstore-style ``#workflow/...:version`` id
or by its descriptor URL, with no attachment at all. The node fetches it over HTTP like any
other registry's, checks every file's checksum, and the engine runs it on the node's TES. With
``trs.approved_only`` a second node runs only what comes from an approved registry.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from .conftest import WORKFLOWS, nextflow_command
from .live_server import Server, free_port
from .test_workflows_direct import _check_file, _expected

pytestmark = pytest.mark.integration

LANGUAGES = {"cwl": ("CWL", "v1.2"), "snakemake": ("SMK", "9"), "nextflow": ("NFL", "DSL2")}
VERSION = "1.0.0"


def tool_id(case: str) -> str:
    return f"#workflow/wes-bridge/{case}"


def trs_uri(server: Server, case: str, version: str = VERSION) -> str:
    return f"trs://127.0.0.1:{server.port}/{quote(tool_id(case), safe='')}/{version}"


def served_files(case: str) -> dict[str, bytes]:
    """What the registry serves for a test-workflow: every file but trs.yaml and expected.json."""
    folder = WORKFLOWS / case
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("trs.yaml", "expected.json")
    }


def request_for(case: str, workflow_url: str, **extra: str) -> dict[str, str]:
    expected = _expected(case)
    params = yaml.safe_load((WORKFLOWS / case / expected["params"]).read_text())
    workflow_type, version = LANGUAGES[case.split("/")[0]]
    return {
        "workflow_type": workflow_type,
        "workflow_type_version": version,
        "workflow_url": workflow_url,
        "workflow_params": json.dumps(params),
        **extra,
    }


def run_dirs(server: Server) -> set[str]:
    runs = server.data_dir / "runs"
    return {p.name for p in runs.iterdir()} if runs.is_dir() else set()


def submit(server: Server, data: dict[str, str], files: Any = None) -> str:
    response = server.request("POST", "/runs", data=data, files=files or [])
    assert response.status_code == 200, response.text
    return str(response.json()["run_id"])


def refused(server: Server, data: dict[str, str], status: int, files: Any = None) -> str:
    """POST /runs that must be refused with ``status``, leaving no run and no run directory."""
    before = run_dirs(server)
    listed = server.get("/runs").json()["runs"]
    response = server.request("POST", "/runs", data=data, files=files or [])
    assert response.status_code == status, response.text
    assert run_dirs(server) == before, "a refused run left something in the runs directory"
    assert server.get("/runs").json()["runs"] == listed
    return str(response.json()["msg"])


def check_outputs(case: str, log: dict[str, Any]) -> None:
    expected = _expected(case)
    assert log["state"] == expected["state"], log["run_log"]["system_logs"]
    for output_id, want in expected["outputs"].items():
        got = log["outputs"][output_id]
        assert (got["checksum"], got["size"]) == (want["checksum"], want["size"]), output_id
        _check_file(Path(got["path"]), want)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("trs-node")
    server = Server(base / "data", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def approved_node(tmp_path_factory: pytest.TempPathFactory, node: Server) -> Iterator[Server]:
    """A node with trs.approved_only that also knows the first node's registry, unapproved."""
    base = tmp_path_factory.mktemp("trs-approved-node")
    other = [
        {
            "name": "other",
            "url": f"http://127.0.0.1:{node.port}/ga4gh/trs/v2",
            "approved": False,
        }
    ]
    server = Server(
        base / "data",
        free_port(),
        {
            "WES_BRIDGE_TRS__APPROVED_ONLY": "true",
            "WES_BRIDGE_TRS__REGISTRIES": json.dumps(other),
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM)


@pytest.mark.parametrize("case", ["cwl/hello", "snakemake/hello", "nextflow/hello"])
def test_a_workflow_from_this_nodes_registry_runs_with_its_provenance(
    node: Server, case: str
) -> None:
    if case.startswith("nextflow"):
        nextflow_command()  # skips (fails in CI) without Nextflow
    run_id = submit(node, request_for(case, trs_uri(node, case)))
    log = node.wait(run_id, timeout=600)
    check_outputs(case, log)

    # Staged: exactly the registry's files, byte for byte.
    workflow_dir = node.data_dir / "runs" / run_id / "workflow"
    staged = {
        p.relative_to(workflow_dir).as_posix(): p.read_bytes()
        for p in workflow_dir.rglob("*")
        if p.is_file()
    }
    assert staged == served_files(case)

    # The run log says where the workflow came from, and every file's verified checksum.
    run_log = log["run_log"]
    assert run_log["name"] == f"{tool_id(case)}:{VERSION}"
    lines = run_log["system_logs"]
    assert any(
        "TRS registry 'self'" in line and repr(tool_id(case)) in line and repr(VERSION) in line
        for line in lines
    ), lines
    for path, data in served_files(case).items():
        digest = hashlib.sha256(data).hexdigest()
        assert any(repr(path) in line and digest in line for line in lines), (path, lines)


def test_dockstore_style_id_and_descriptor_url_resolve_to_the_same_workflow(node: Server) -> None:
    case = "cwl/hello"
    enc = quote(tool_id(case), safe="")
    urls = [
        f"{tool_id(case)}:{VERSION}",
        f"http://127.0.0.1:{node.port}/ga4gh/trs/v2/tools/{enc}/versions/{VERSION}/CWL/descriptor",
    ]
    ids = [submit(node, request_for(case, url)) for url in urls]
    for run_id in ids:
        log = node.wait(run_id, timeout=300)
        check_outputs(case, log)
        assert log["run_log"]["name"] == f"{tool_id(case)}:{VERSION}"


def test_bad_trs_references_are_refused_and_leave_nothing(node: Server) -> None:
    case = "cwl/hello"
    # The descriptor type must match workflow_type.
    msg = refused(node, request_for("snakemake/hello", trs_uri(node, case)), 400)
    assert "CWL" in msg, msg
    assert "SMK" in msg, msg
    # Unknown version and id: the registry's answer is passed on.
    msg = refused(node, request_for(case, trs_uri(node, case, "9.9.9")), 400)
    assert "9.9.9" in msg, msg
    unknown = f"trs://127.0.0.1:{node.port}/{quote('#workflow/wes-bridge/nope', safe='')}/1.0.0"
    msg = refused(node, request_for(case, unknown), 400)
    assert "nope" in msg, msg
    # An attachment may add to a fetched workflow but never replace one of its files.
    msg = refused(
        node,
        request_for(case, trs_uri(node, case)),
        400,
        files=[("workflow_attachment", ("hello.cwl", b"cwlVersion: v1.2\nclass: Workflow\n"))],
    )
    assert "hello.cwl" in msg, msg
    # A host that is not one of the node's registries is reached only at a public address.
    elsewhere = f"trs://127.0.0.1:{free_port()}/{quote(tool_id(case), safe='')}/{VERSION}"
    msg = refused(node, request_for(case, elsewhere), 403)
    assert "non-public address" in msg, msg


def test_approved_only_runs_approved_registries_and_refuses_the_rest(
    approved_node: Server, node: Server
) -> None:
    case = "cwl/hello"
    info = approved_node.get("/service-info").json()
    assert info["tags"]["trs.approved_only"] == "yes"
    assert "self=" in info["tags"]["trs.registries"]
    assert "other=http://127.0.0.1" in info["tags"]["trs.registries"]
    assert "(not approved)" in info["tags"]["trs.registries"]

    # Its own registry is approved: pinned by version, every file checksum-verified.
    run_id = submit(approved_node, request_for(case, trs_uri(approved_node, case)))
    check_outputs(case, approved_node.wait(run_id, timeout=300))

    # The same workflow as attachments, from a plain URL, or from an unapproved registry: 403.
    folder = WORKFLOWS / case
    attached = [("workflow_attachment", (name, data)) for name, data in served_files(case).items()]
    msg = refused(approved_node, request_for(case, "hello.cwl"), 403, files=attached)
    assert "approved_only" in msg, msg
    plain = f"http://127.0.0.1:{node.port}/{folder.name}/hello.cwl"
    msg = refused(approved_node, request_for(case, plain), 403)
    assert "approved_only" in msg, msg
    msg = refused(approved_node, request_for(case, trs_uri(node, case)), 403)
    assert "approved_only" in msg, msg
    assert "'other'" in msg, msg
