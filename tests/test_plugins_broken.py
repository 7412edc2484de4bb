"""Engine plugins from outside: three real distributions, pip-installed into a directory that a
`wes-bridge serve` process has on its PYTHONPATH. One raises on import, one declares a plugin
API version this wes-bridge does not provide, and one is the worked example of docs/plugins.md
(tests/plugin_example). The node starts with the good one and the built-in engines, names the
broken ones with their reasons, and drops the good one when the config disables it by name.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from wes_bridge.testing import ContractWorkflow, LiveNode

from .spec_check import check_response, tes_api, wes_api
from .wheels import pip_install

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
BUILT_IN = {"CWL": {"cwltool", "toil"}, "SMK": {"snakemake"}, "NFL": {"nextflow"}, "WDL": {"toil"}}
# Engines of other plugins that may be installed beside the node (CI installs the WDL one).
OTHER_PLUGINS = {"miniwdl"}
BROKEN = {
    "wes-bridge-broken-import": (
        "broken-import",
        "wes_bridge_broken_import:Adapter",
        "raise RuntimeError('this plugin cannot be imported')\n",
    ),
    "wes-bridge-future-api": (
        "future-api",
        "wes_bridge_future_api:FutureAdapter",
        """
        from wes_bridge.plugin import DriverOutcome, EngineAdapter

        class FutureAdapter(EngineAdapter):
            api_version = 99
            engine = "future-api"
            workflow_type = "FUTURE"
            workflow_type_versions = ("1",)

            def engine_version(self):
                return "99.0"

            def drive(self, ctx):
                return DriverOutcome("COMPLETE")
        """,
    ),
}
IMPORT_ERROR = "import failed: RuntimeError: this plugin cannot be imported"
API_ERROR = "declares plugin api_version 99; this wes-bridge provides 1"


def _spec_check(
    api: str, method: str, path: str, status: int, body: bytes, content_type: str
) -> None:
    check_response(
        wes_api() if api == "wes" else tes_api(), method, path, status, body, content_type
    )


def _project(root: Path, dist: str, engine: str, target: str, source: str) -> Path:
    module = target.split(":")[0]
    folder = root / dist
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "{dist}"
            version = "1.0.0"
            dependencies = ["wes-bridge"]

            [project.entry-points."wes_bridge.engines"]
            {engine} = "{target}"

            [tool.setuptools]
            py-modules = ["{module}"]
            """
        )
    )
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return folder


@dataclass(frozen=True)
class Nodes:
    plain: LiveNode
    """The plugins as installed."""
    disabled: LiveNode
    """The example disabled in the config."""
    listings: dict[str, str]
    """What `wes-bridge engines` prints with each node's config and environment."""


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """Two nodes with the plugins on their path, and their `wes-bridge engines`, all started
    side by side."""
    root = tmp_path_factory.mktemp("plugins")
    projects = [_project(root / "src", dist, *spec) for dist, spec in BROKEN.items()]
    site = pip_install([*projects, EXAMPLE], root / "site")
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {"PYTHONPATH": path}
    plain = LiveNode(root / "plain", env=env, check=_spec_check)
    disabled = LiveNode(
        root / "disabled", config={"disabled_engines": ["shell"]}, env=env, check=_spec_check
    )
    both = (plain, disabled)
    with ThreadPoolExecutor(2) as pool:
        try:
            for node in both:
                node.launch()
            listings = [pool.submit(node.engines_listing) for node in both]
            for node in both:
                node.wait_ready()
            yield Nodes(
                plain, disabled, {"plain": listings[0].result(), "disabled": listings[1].result()}
            )
        finally:
            list(pool.map(LiveNode.stop, both))


def _offered(node: LiveNode) -> tuple[dict[str, list[str]], set[str], dict[str, str]]:
    response = node.wes("GET", "/service-info")
    assert response.status_code == 200
    info = response.json()
    types = {t: v["workflow_type_version"] for t, v in info["workflow_type_versions"].items()}
    return types, set(info["workflow_engine_versions"]), info["tags"]


def test_node_starts_without_the_broken_plugins(nodes: Nodes) -> None:
    node = nodes.plain
    types, engines, tags = _offered(node)
    assert types["SHELL"] == ["1"]
    assert set(types) == {"SHELL", *BUILT_IN}
    assert engines - OTHER_PLUGINS == {"shell", *set().union(*BUILT_IN.values())}
    assert tags["engine.shell.usable"] == "yes"
    # The broken ones, by name and with the reason, in service-info and in the node's log.
    assert tags["engine.broken-import.load_error"] == IMPORT_ERROR
    assert tags["engine.future-api.load_error"] == API_ERROR
    log = node.log()
    assert (
        f"engine plugin broken-import from wes-bridge-broken-import was not loaded: {IMPORT_ERROR}"
        in log
    )
    assert f"engine plugin future-api from wes-bridge-future-api was not loaded: {API_ERROR}" in log
    assert "engine shell 0.1.0 (wes-bridge-example-shell 0.1.0): usable" in log


def test_engines_command_shows_distributions_and_failures(
    nodes: Nodes,
) -> None:
    listing = nodes.listings["plain"]
    rows = {line.split()[0]: line for line in listing.splitlines()}
    assert rows["shell"].split() == [
        "shell",
        "SHELL",
        "1",
        "0.1.0",
        "wes-bridge-example-shell",
        "0.1.0",
        "yes",
    ]
    assert "wes-bridge 0.1.0" in rows["cwltool"]
    assert rows["broken-import:"] == (
        "broken-import: NOT LOADED from wes-bridge-broken-import "
        f"(wes_bridge_broken_import:Adapter): {IMPORT_ERROR}"
    )
    assert rows["future-api:"] == (
        "future-api: NOT LOADED from wes-bridge-future-api "
        f"(wes_bridge_future_api:FutureAdapter): {API_ERROR}"
    )


def test_disabling_the_external_engine_leaves_the_others(
    nodes: Nodes,
) -> None:
    node = nodes.disabled
    types, engines, tags = _offered(node)
    assert set(types) == set(BUILT_IN)
    assert engines - OTHER_PLUGINS == set().union(*BUILT_IN.values())
    assert "engine.shell.usable" not in tags
    assert "engine.broken-import.load_error" in tags  # the rest as before
    hello = ContractWorkflow(EXAMPLE / "tests/workflows/hello", "hello.sh", params="params.json")
    response = node.submit(hello, "SHELL", "1")
    assert response.status_code == 400
    assert "workflow_type 'SHELL' is not supported here" in response.json()["msg"]
    listing = nodes.listings["disabled"]
    assert "shell: disabled by configuration" in listing.splitlines()
    assert not [line for line in listing.splitlines() if line.startswith("shell ")]
