"""Settings: YAML file < WES_BRIDGE_* environment < command-line flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from wes_bridge.cli import main, uvicorn_log_config
from wes_bridge.config import ConfigFileError, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "port: 9000\nmax_concurrent_runs: 2\nhost: 0.0.0.0\n"
        "engines:\n  cwltool:\n    container_runtime: podman\n"
    )
    settings = load_settings(config)
    assert (settings.port, settings.max_concurrent_runs, settings.host) == (9000, 2, "0.0.0.0")
    assert settings.engines == {"cwltool": {"container_runtime": "podman"}}
    monkeypatch.setenv("WES_BRIDGE_PORT", "9100")
    monkeypatch.setenv("WES_BRIDGE_ENGINES__CWLTOOL__CONTAINER_RUNTIME", "singularity")
    settings = load_settings(config)
    assert settings.port == 9100
    assert settings.engines["cwltool"]["container_runtime"] == "singularity"
    assert load_settings(config, port=9200).port == 9200


def test_defaults_bind_loopback_and_use_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d")
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'd' / 'wes-bridge.sqlite'}"


@pytest.mark.parametrize("content", ["- a list\n", "port: [unclosed\n"])
def test_bad_config_file(tmp_path: Path, content: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(ConfigFileError):
        load_settings(config)


def test_cli_reports_invalid_settings(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("no_such_setting: 1\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert "invalid settings" in result.output
    assert "no_such_setting" in result.output


def test_engine_setting_typo_is_reported_not_ignored(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("engines:\n  cwltool:\n    container_runtme: docker\n")
    result = CliRunner().invoke(main, ["engines", "--config", str(config)])
    assert result.exit_code == 0
    assert "cwltool: NOT LOADED" in result.output
    assert "container_runtme" in result.output


@pytest.mark.parametrize(("level", "expected"), [("info", "INFO"), ("warning", "WARNING")])
def test_log_level_covers_request_lines(level: str, expected: str) -> None:
    # One line per request at "info"; "--log-level warning" silences them too.
    loggers = uvicorn_log_config(level)["loggers"]
    assert loggers["uvicorn.access"]["level"] == expected
    assert loggers["uvicorn"]["level"] == expected
