"""The miniwdl adapter beyond the contract: what WDL runs look like on a wes-bridge node."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wes_bridge_wdl

from wes_bridge.testing import ContractWorkflow, LiveNode

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows"
PACKAGE = Path(wes_bridge_wdl.__file__).parent
PUBLIC_API = {"wes_bridge.plugin", "wes_bridge.tes.client", "wes_bridge.testing"}
HELLO = ContractWorkflow(WORKFLOWS / "hello", "hello.wdl", params="inputs.json")
NESTED = ContractWorkflow(WORKFLOWS / "nested", "nested.wdl", params="inputs.json")


def test_the_package_uses_only_the_public_plugin_api() -> None:
    """An external plugin: every import of wes_bridge is of its public API."""
    used: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                used.add(node.module)
            elif isinstance(node, ast.Import):
                used.update(alias.name for alias in node.names)
    ours = {m for m in used if m == "wes_bridge" or m.startswith("wes_bridge.")}
    assert ours, "the adapter imports nothing of wes_bridge?"
    assert ours <= PUBLIC_API, sorted(ours - PUBLIC_API)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(
        tmp_path_factory.mktemp("miniwdl"),
        config={"engines": {"miniwdl": {"max_call_concurrency": 50}}},
    )
    live.start()
    try:
        yield live
    finally:
        live.cancel_unfinished()
        live.stop()


def _sha1(data: bytes) -> str:
    return "sha1$" + hashlib.sha1(data).hexdigest()  # noqa: S324 - the outputs' checksum format


def _refused(response: Any, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status_code"] == 400
    for word in words:
        assert word in body["msg"], body


def test_requests_the_adapter_refuses(node: LiveNode, tmp_path: Path) -> None:
    _refused(node.submit(HELLO, "WDL", "1.1", engine="miniwdl"), "version 1.0", "'1.1'")
    (tmp_path / "old.wdl").write_text(
        "task t { command { echo hi } }\nworkflow w { call t }\n", encoding="utf-8"
    )
    draft2 = ContractWorkflow(tmp_path, "old.wdl")
    _refused(node.submit(draft2, "WDL", "1.0", engine="miniwdl"), "no `version`")
    _refused(
        node.submit(
            HELLO, "WDL", "1.0", engine="miniwdl", engine_parameters={"call_concurrency": "51"}
        ),
        "call_concurrency may be at most 50",
    )
    _refused(
        node.submit(HELLO, "WDL", "1.0", engine="miniwdl", engine_parameters={"--as-root": "1"}),
        "as_root",
    )
    missing = ContractWorkflow(WORKFLOWS / "hello", "nope.wdl", files=("hello.wdl",))
    _refused(node.submit(missing, "WDL", "1.0", engine="miniwdl"), "nope.wdl")


def test_outputs_of_every_shape(node: LiveNode) -> None:
    response = node.submit(
        NESTED, "WDL", "1.0", engine="miniwdl", engine_parameters={"--verbose": "true"}
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    log = node.wait(run_id, 300)
    assert log["state"] == "COMPLETE", node.describe_run(run_id)
    out = log["outputs"]
    single = _sha1(b"single\n")
    assert out["nested.one"]["checksum"] == single
    assert out["nested.one"]["path"].endswith("/outputs/one/single.txt")
    assert [f["basename"] for f in out["nested.many"]] == ["a.txt", "b.txt"]
    assert [f["checksum"] for f in out["nested.many"]] == [_sha1(b"a\n"), _sha1(b"b\n")]
    assert out["nested.many"][1]["path"].endswith("/outputs/many/1/b.txt")
    assert out["nested.by_name"]["x"]["path"].endswith("/outputs/by_name/x/single.txt")
    assert out["nested.pair"]["left"]["checksum"] == single
    assert out["nested.pair"]["right"] == "right"
    assert out["nested.report"]["summary"]["path"].endswith("/outputs/report/summary/single.txt")
    assert out["nested.report"]["lines"] == 1
    assert out["nested.text"] == "not a file"
    # An input passed through is described where it is, never copied among the results.
    assert out["nested.passed"]["class"] == "File"
    assert "/outputs/" not in out["nested.passed"]["path"]
    for item in (out["nested.one"], out["nested.many"][0]):
        url = f"{node.wes_url}/runs/{run_id}/outputs/" + item["path"].split("/outputs/", 1)[1]
        fetched = node.http.get(url)
        assert fetched.status_code == 200
        assert _sha1(fetched.content) == item["checksum"]
    # Every WDL task was one TES task, its image recorded, run on the host as service-info says.
    tasks = node.tasks(run_id)
    assert len(tasks) == 3
    tes = node.tes_client()
    for task in tasks:
        full = tes.get_task(task["id"], view="FULL")
        assert full["state"] == "COMPLETE"
        assert full["tags"]["wes_run_id"] == run_id
        assert full["executors"][0]["image"] == "debian:12-slim"
        assert any("not used" in line for line in full["logs"][0]["system_logs"])
    # --verbose: miniwdl's verbose log (INFO lines, each task's inputs) in the run's stderr.
    assert ' INFO input :: name: "name"' in node.text(log["run_log"]["stderr"])


CAT_WDL = """version 1.0
task show {
  input {
    File data
  }
  command <<<
    cat '~{data}'
  >>>
  output {
    String text = read_string(stdout())
  }
}
workflow cat {
  input {
    File data
  }
  call show { input: data = data }
}
"""


def test_an_input_the_tes_may_not_read_fails_the_run_not_the_node(
    node: LiveNode, tmp_path: Path
) -> None:
    (tmp_path / "cat.wdl").write_text(CAT_WDL, encoding="utf-8")
    outside = ContractWorkflow(tmp_path, "cat.wdl", params={"cat.data": "/etc/hostname"})
    response = node.submit(outside, "WDL", "1.0", engine="miniwdl")
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    log = node.wait(run_id, 300)
    assert log["state"] == "EXECUTOR_ERROR", node.describe_run(run_id)
    logs = "\n".join(log["run_log"]["system_logs"])
    assert "outside the directories this TES may read inputs from" in logs


def test_disabling_the_plugin_by_name_leaves_the_rest(tmp_path: Path) -> None:
    live = LiveNode(tmp_path, config={"disabled_engines": ["miniwdl", "toil-wdl"]})
    live.start()
    try:
        info = live.wes("GET", "/service-info").json()
        assert "WDL" not in info["workflow_type_versions"]
        assert "miniwdl" not in info["workflow_engine_versions"]
        assert {"CWL", "SMK"} <= set(info["workflow_type_versions"])
        listing = live.engines_listing()
        assert "miniwdl: disabled by configuration" in listing
        assert not any(line.startswith("miniwdl ") for line in listing.splitlines())
        refused = live.submit(HELLO, "WDL", "1.0")
        assert refused.status_code == 400
        assert "WDL" in refused.json()["msg"]
    finally:
        live.stop()
