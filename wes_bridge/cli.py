"""The ``wes-bridge`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from . import __version__
from .config import ConfigFileError, Settings, load_settings
from .registry import EngineRegistry
from .supervisor_process import LOG_FORMAT

__all__ = ["main"]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except (ConfigFileError, ValidationError) as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc


@click.group()
@click.version_option(__version__, prog_name="wes-bridge")
def main() -> None:
    """wes-bridge: a GA4GH WES node with pluggable workflow engines."""


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's loggers at the node's level, in the node's format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": LOG_FORMAT}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {
                "handlers": ["default"],
                "level": level.upper(),
                "propagate": False,
            },
            # One line per request at "info" and "debug"; none at "warning" or "error".
            "uvicorn.access": {
                "handlers": ["default"],
                "level": level.upper(),
                "propagate": False,
            },
        },
    }


def _server_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--host", help="Address to bind (default 127.0.0.1)."),
            click.option("--port", type=int, help="Port (default 8080)."),
            click.option(
                "--data-dir",
                type=click.Path(path_type=Path),
                help="Database, run and task directories (default ./wes-bridge-data).",
            ),
            click.option(
                "--config",
                "config",
                type=click.Path(path_type=Path, exists=True, dir_okay=False),
                help="YAML file of settings; WES_BRIDGE_* env vars and flags override it.",
            ),
            click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"])),
        ]
    ):
        func = option(func)
    return func


def _serve(settings: Settings, *, wes: bool) -> None:
    import uvicorn

    from .app import TES_PREFIX, WES_PREFIX, create_app

    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    app = create_app(settings, wes=wes)
    base = f"http://{settings.host}:{settings.port}"
    served = [f"WES at {base}{WES_PREFIX}"] if wes else []
    if settings.tes.url is None:
        served.append(f"TES at {base}{TES_PREFIX}")
    else:
        served.append(f"tasks go to the external TES {settings.tes.url}")
    logging.getLogger("wes_bridge").info(
        "wes-bridge %s serving %s (data dir %s)",
        __version__,
        "; ".join(served),
        settings.data_dir,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        timeout_graceful_shutdown=10,
    )


@main.command()
@_server_options
@click.option("--max-concurrent-runs", type=int, help="Runs executing at once (default 4).")
@click.option(
    "--tes-url",
    help="Send tasks to this external TES (Funnel, TESK, ...) instead of the embedded one.",
)
def serve(config: Path | None, tes_url: str | None, **flags: Any) -> None:
    """Start a node: WES at /ga4gh/wes/v1 and the embedded TES at /ga4gh/tes/v1."""
    overrides: dict[str, Any] = dict(flags)
    if tes_url:
        overrides["tes"] = {"url": tes_url}
    _serve(_settings(config, **overrides), wes=True)


@main.group()
def tes() -> None:
    """The embedded GA4GH TES on its own."""


@tes.command("serve")
@_server_options
def tes_serve(config: Path | None, **flags: Any) -> None:
    """Start only the embedded TES, at http://HOST:PORT/ga4gh/tes/v1."""
    settings = _settings(config, **flags)
    if settings.tes.url is not None:
        raise click.ClickException(
            "tes.url names an external TES; `wes-bridge tes serve` runs the embedded one"
        )
    _serve(settings, wes=False)


@main.command()
@click.option("--config", "config", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def engines(config: Path | None) -> None:
    """List the engine adapters, their versions, and whether each can run here."""
    settings = _settings(config)
    logging.basicConfig(level="CRITICAL")
    registry = EngineRegistry.from_entry_points(
        settings.engines, settings.disabled_engines, settings.default_engines
    )
    rows = [("ENGINE", "TYPE", "VERSIONS", "ENGINE VERSION", "DISTRIBUTION", "USABLE")]
    for name, engine in sorted(registry.engines.items()):
        adapter = engine.adapter
        availability = adapter.availability()
        rows.append(
            (
                name,
                adapter.workflow_type,
                ",".join(adapter.workflow_type_versions),
                engine.engine_version,
                f"{engine.distribution} {engine.distribution_version}",
                "yes" if availability.usable else f"no: {availability.reason}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    for failure in registry.failures:
        click.echo(
            f"{failure.name}: NOT LOADED from {failure.distribution} "
            f"({failure.target}): {failure.reason}"
        )
    for name in settings.disabled_engines:
        click.echo(f"{name}: disabled by configuration")
