"""Engine plugins are found through entry points; broken ones are reported and skipped."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.errors import BadRequest
from wes_bridge.registry import EngineRegistry

from .conftest import WES, SpecCheckedClient, free_port

PLUGIN_MODULE = textwrap.dedent(
    """
    from wes_bridge.plugin import DriverOutcome, EngineAdapter, EngineSettings

    class Good(EngineAdapter):
        engine = "toy"
        workflow_type = "TOY"
        workflow_type_versions = ("1.0",)
        def engine_version(self): return "0.0.1"
        def drive(self, ctx): return DriverOutcome("COMPLETE")

    class WrongApi(Good):
        engine = "wrong-api"
        api_version = 99

    class WrongName(Good):
        engine = "something-else"

    class StrictSettings(EngineSettings):
        threads: int = 1

    class NeedsSettings(Good):
        engine = "needs-settings"
        settings_model = StrictSettings

    NOT_A_CLASS = 42
    """
)
ENTRY_POINTS = textwrap.dedent(
    """
    [wes_bridge.engines]
    toy = toy_plugin:Good
    wrong-api = toy_plugin:WrongApi
    renamed = toy_plugin:WrongName
    not-a-class = toy_plugin:NOT_A_CLASS
    exploding = exploding_plugin:Adapter
    needs-settings = toy_plugin:NeedsSettings
    """
)


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real (if tiny) installed distribution with several broken engine plugins."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_plugin.py").write_text(PLUGIN_MODULE)
    (site / "exploding_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    dist = site / "toy_plugins-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("toy_plugin", "exploding_plugin"):
        sys.modules.pop(name, None)


def test_broken_plugins_are_reported_by_name_and_skipped(plugin_path: Path) -> None:
    registry = EngineRegistry.from_entry_points({"needs-settings": {"threads": "many"}})
    # The built-in adapters and the toy one (other installed plugins, e.g. wes-bridge-wdl, aside)
    ours = {
        n for n, e in registry.engines.items() if e.distribution in ("wes-bridge", "toy-plugins")
    }
    assert ours == {"cwltool", "nextflow", "snakemake", "toil", "toil-wdl", "toy"}
    assert registry.engines["toy"].distribution == "toy-plugins"
    reasons = {f.name: f.reason for f in registry.failures}
    assert "declares plugin api_version 99; this wes-bridge provides 1" in reasons["wrong-api"]
    assert "engine id is 'something-else'" in reasons["renamed"]
    assert (
        "expected a subclass of wes_bridge.plugin.EngineAdapter, found 42" in reasons["not-a-class"]
    )
    assert reasons["exploding"] == "import failed: RuntimeError: boom at import"
    assert "invalid settings: threads:" in reasons["needs-settings"]
    assert all(f.distribution == "toy-plugins" for f in registry.failures)


def test_node_starts_without_broken_plugins(plugin_path: Path, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", disabled_engines=["toy", "needs-settings"], port=free_port()
    )
    with SpecCheckedClient(create_app(settings)) as client:
        info = client.get(f"{WES}/service-info").json()
        assert set(info["workflow_type_versions"]) == {"CWL", "NFL", "SMK", "WDL"}
        assert "boom at import" in info["tags"]["engine.exploding.load_error"]
        run_id = client.submit("cwl/hello/hello.cwl").json()["run_id"]
        assert client.wait(run_id) == "COMPLETE"


def test_engines_command_lists_plugins_and_failures(plugin_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    out = subprocess.run(
        [sys.executable, "-m", "wes_bridge", "engines"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "CWL" in lines["cwltool"]
    assert "wes-bridge" in lines["cwltool"]
    assert lines["cwltool"].rstrip().endswith("yes")
    assert "toy-plugins 1.2.3" in lines["toy"]
    assert "exploding: NOT LOADED from toy-plugins" in out
    assert "boom at import" in lines["exploding:"]


def test_resolution_messages() -> None:
    registry = EngineRegistry.from_entry_points()
    assert registry.resolve("cwl", "1.2").name == "cwltool"  # case and "v" are forgiven
    with pytest.raises(BadRequest, match=r"supported: CWL \(v1.0, v1.1, v1.2\)"):
        registry.resolve("XYZ", "1.0")
    with pytest.raises(BadRequest, match=r"'22.10' of NFL is not supported here; supported: DSL2"):
        registry.resolve("NFL", "22.10")


def test_engine_options_in_command_line_form() -> None:
    """What Toil's WES client forwards: bare flags are null, node-decided ones are dropped."""
    from wes_bridge_cwltool import CwltoolParameters

    params = CwltoolParameters.model_validate(
        {"--outdir": "/x", "--quiet": None, "--parallel": None, "--non-strict": None}
    )
    assert (params.parallel, params.strict) == (True, False)
    assert CwltoolParameters.model_validate({"--parallel": "false"}).parallel is False
    with pytest.raises(ValidationError, match="bogus"):
        CwltoolParameters.model_validate({"--bogus": "1"})


# -- the public plugin API ------------------------------------------------------------------
PICKY_MODULE = textwrap.dedent(
    """
    from pydantic import field_validator

    from wes_bridge.plugin import (
        DriverOutcome, EngineAdapter, EngineParameters, InvalidRunRequest,
    )

    class Parameters(EngineParameters):
        level: int = 1

        @field_validator("level")
        @classmethod
        def _odd(cls, value):
            if value % 2 == 0:
                raise InvalidRunRequest("the level must be odd")
            return value

    class Picky(EngineAdapter):
        engine = "picky"
        workflow_type = "PICKY"
        workflow_type_versions = ("1",)
        parameters_model = Parameters
        def engine_version(self): return "1"
        def validate(self, run):
            if run.params.get("please") != "yes":
                raise InvalidRunRequest("say please")
            return []
        def drive(self, ctx): return DriverOutcome("COMPLETE", exit_code=0)
    """
)


@pytest.fixture
def picky_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "picky-site"
    site.mkdir()
    (site / "picky_plugin.py").write_text(PICKY_MODULE)
    dist = site / "picky-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: picky\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[wes_bridge.engines]\npicky = picky_plugin:Picky\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("picky_plugin", None)


def test_invalid_run_request_is_a_400(picky_plugin: Path, tmp_path: Path) -> None:
    """What an adapter raises from validate() or a parameter validator reaches the client."""
    settings = load_settings(data_dir=tmp_path / "data", port=free_port())
    with SpecCheckedClient(create_app(settings)) as client:

        def submit(params: dict[str, str], engine_params: dict[str, str]) -> Any:
            return client.submit(
                "cwl/hello/hello.cwl",
                params=params,
                workflow_type="PICKY",
                workflow_type_version="1",
                workflow_engine_parameters=json.dumps(engine_params),
            )

        refused = submit({}, {})
        assert refused.status_code == 400
        assert refused.json()["msg"] == "say please"
        refused = submit({"please": "yes"}, {"level": "2"})
        assert refused.status_code == 400
        assert refused.json()["msg"].startswith("workflow_engine_parameters for picky: level:")
        assert "the level must be odd" in refused.json()["msg"]
        assert client.get(f"{WES}/runs").json()["runs"] == []
        accepted = submit({"please": "yes"}, {"level": "3"})
        assert accepted.status_code == 200, accepted.text
        assert client.wait(accepted.json()["run_id"]) == "COMPLETE"


def test_importing_wes_bridge_does_not_import_pytest() -> None:
    """pytest is a test dependency: only wes_bridge.testing may need it."""
    code = (
        "import sys, wes_bridge, wes_bridge.plugin, wes_bridge.app, wes_bridge.cli\n"
        "import wes_bridge.tes.client, wes_bridge.tes.models\n"
        "assert 'pytest' not in sys.modules, 'pytest was imported'\n"
        "import wes_bridge.testing\n"
        "assert 'pytest' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
IDENTIFIER = re.compile(r"`([A-Za-z_]\w*)`")


def _paragraph(doc: str, start: str) -> str:
    """The text from the line starting with ``start`` to the next blank line."""
    at = doc.index("\n" + start) + 1
    end = doc.find("\n\n", at)
    return doc[at : end if end >= 0 else None]


def test_plugin_guide_lists_the_public_api() -> None:
    import wes_bridge.plugin
    import wes_bridge.tes.client
    import wes_bridge.tes.models
    import wes_bridge.testing

    doc = DOCS.read_text(encoding="utf-8")
    table = doc[doc.index("**`wes_bridge.plugin`**") :]
    table = _paragraph(table, "| name |")
    listed = {n for row in table.splitlines()[2:] for n in IDENTIFIER.findall(row.split("|")[1])}
    assert listed == set(wes_bridge.plugin.__all__)
    for name in wes_bridge.plugin.__all__:
        value = getattr(wes_bridge.plugin, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert (value.__doc__ or "").strip(), f"wes_bridge.plugin.{name} has no docstring"
    for module, start in (
        (wes_bridge.tes.client, "**`wes_bridge.tes.client`**"),
        (wes_bridge.tes.models, "**`wes_bridge.tes.models`**"),
    ):
        names = set(IDENTIFIER.findall(_paragraph(doc, start))) - {"create_task"}
        assert names, start
        assert names <= set(module.__all__), names - set(module.__all__)
    testing = set(IDENTIFIER.findall(_paragraph(doc, "**`wes_bridge.testing`**")))
    assert testing == set(wes_bridge.testing.__all__)


def test_plugin_guide_shows_the_tested_example() -> None:
    """The worked example is tests/plugin_example, which the suite installs and runs."""
    doc = DOCS.read_text(encoding="utf-8")
    fences = {".toml": "toml", ".py": "python", ".sh": "sh"}
    files = [
        "pyproject.toml",
        "wes_bridge_example_shell.py",
        "tests/test_contract.py",
        "tests/workflows/hello/hello.sh",
        "tests/workflows/fail/fail.sh",
        "tests/workflows/sleep/sleep.sh",
    ]
    for name in files:
        path = EXAMPLE / name
        assert f"`tests/plugin_example/{name}`" in doc, name
        assert f"```{fences[path.suffix]}\n{path.read_text(encoding='utf-8')}```" in doc, name
    params = (EXAMPLE / "tests/workflows/hello/params.json").read_text(encoding="utf-8").strip()
    assert f"`params.json`: `{params}`" in doc


# -- one engine, several workflow types ---------------------------------------------------------
SHARED_MODULE = textwrap.dedent(
    """
    from wes_bridge.plugin import DriverOutcome, EngineAdapter

    class DuoA(EngineAdapter):
        engine = "duo"
        workflow_type = "DUOA"
        workflow_type_versions = ("1.0",)
        def engine_version(self): return "2.0"
        def drive(self, ctx): return DriverOutcome("COMPLETE", outputs={"type": "DUOA"})

    class DuoB(DuoA):
        workflow_type = "DUOB"
        def drive(self, ctx): return DriverOutcome("COMPLETE", outputs={"type": "DUOB"})
    """
)
SHARED_ENTRY_POINTS = textwrap.dedent(
    """
    [wes_bridge.engines]
    duo = duo_plugin:DuoA
    duo-again = duo_plugin:DuoA
    duo-b = duo_plugin:DuoB
    duob = duo_plugin:DuoB
    """
)


@pytest.fixture
def shared_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution with one engine ("duo") for two workflow types, and two bad entries."""
    site = tmp_path / "shared-site"
    site.mkdir()
    (site / "duo_plugin.py").write_text(SHARED_MODULE)
    dist = site / "duo_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: duo-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(SHARED_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("duo_plugin", None)


def test_one_engine_offers_several_workflow_types(shared_engine: Path) -> None:
    registry = EngineRegistry.from_entry_points()
    duo = {name: e for name, e in registry.engines.items() if e.engine == "duo"}
    assert sorted(duo) == ["duo", "duo-b"]
    assert (duo["duo"].adapter.workflow_type, duo["duo-b"].adapter.workflow_type) == (
        "DUOA",
        "DUOB",
    )
    reasons = {f.name: f.reason for f in registry.failures}
    # The later adapter of an engine for a type it already runs is refused, named.
    assert "engine 'duo' already runs DUOA here (adapter 'duo')" in reasons["duo-again"]
    # An id must be the engine name, or the engine name and a dash.
    assert "must be 'duo' or start with 'duo-'" in reasons["duob"]
    # workflow_engine names the engine; the adapter follows from the workflow type.
    assert registry.resolve("DUOA", "1.0", "duo").name == "duo"
    assert registry.resolve("DUOB", "1.0", "duo").name == "duo-b"
    assert registry.resolve("duob", "v1.0").name == "duo-b"
    # The adapter's id is accepted too, for its own type only.
    assert registry.resolve("DUOB", "1.0", "duo-b").name == "duo-b"
    with pytest.raises(BadRequest, match=r"workflow_engine 'duo-b' cannot run DUOA 1.0 here; "):
        registry.resolve("DUOA", "1.0", "duo-b")
    with pytest.raises(BadRequest, match=r"'3.0' of duo is not available here; available: 2.0"):
        registry.resolve("DUOB", "1.0", "duo", "3.0")
    # Versions are by engine name: one entry for both adapters.
    versions = registry.engine_versions()
    assert versions["duo"] == ["2.0"]
    assert "duo-b" not in versions


def test_default_engine_by_engine_name_or_id(
    shared_engine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for default in ("duo", "duo-b"):
        caplog.clear()
        registry = EngineRegistry.from_entry_points(default_engines={"DUOB": default})
        assert registry.resolve("DUOB", "1.0").name == "duo-b"
        assert "is not a loaded engine of that type" not in caplog.text
    EngineRegistry.from_entry_points(default_engines={"DUOA": "duo-b"})
    assert "default engine 'duo-b' for workflow type duoa is not a loaded engine" in caplog.text


def test_settings_and_disabling_go_by_adapter_id(shared_engine: Path) -> None:
    registry = EngineRegistry.from_entry_points(disabled=["duo-b"])
    assert "duo" in registry.engines
    assert "duo-b" not in registry.engines
    with pytest.raises(BadRequest, match="workflow_type 'DUOB' is not supported here"):
        registry.resolve("DUOB", "1.0", "duo")
    registry = EngineRegistry.from_entry_points({"duo-b": {"bogus": 1}})
    assert "duo" in registry.engines
    assert "invalid settings: bogus:" in {f.name: f.reason for f in registry.failures}["duo-b"]


def test_node_runs_each_type_with_the_engine_name(shared_engine: Path, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", port=free_port())
    with SpecCheckedClient(create_app(settings)) as client:
        info = client.get(f"{WES}/service-info").json()
        assert info["workflow_engine_versions"]["duo"] == {"workflow_engine_version": ["2.0"]}
        assert "duo-b" not in info["workflow_engine_versions"]
        assert {"DUOA", "DUOB"} <= set(info["workflow_type_versions"])
        assert info["tags"]["engine.duo-b.usable"] == "yes"
        for workflow_type in ("DUOA", "DUOB"):
            response = client.submit(
                "cwl/hello/hello.cwl",
                workflow_type=workflow_type,
                workflow_type_version="1.0",
                workflow_engine="duo",
            )
            assert response.status_code == 200, response.text
            run_id = response.json()["run_id"]
            assert client.wait(run_id) == "COMPLETE"
            log = client.get(f"{WES}/runs/{run_id}").json()
            # The request keeps the engine name the client sent; the adapter of the type ran.
            assert log["request"]["workflow_engine"] == "duo"
            assert log["outputs"] == {"type": workflow_type}
