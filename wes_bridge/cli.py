"""The ``wes-bridge`` command."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from . import __version__
from .config import ConfigFileError, Settings, load_settings
from .errors import WesError
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


def _is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_bind(settings: Settings) -> None:
    """A node without authentication listens on loopback only, unless the operator insists."""
    if (
        settings.auth.mode == "none"
        and not settings.auth.allow_insecure_bind
        and not _is_loopback(settings.host)
    ):
        raise click.ClickException(
            f"refusing to listen on {settings.host} without authentication (auth.mode none): "
            "anyone who reaches it could run workflows and read every run. Set auth.mode to "
            "oidc or basic, bind to 127.0.0.1, or set auth.allow_insecure_bind: true"
        )


def _serve(settings: Settings, *, wes: bool) -> None:
    import uvicorn

    from .app import TES_PREFIX, TRS_PREFIX, WES_PREFIX, create_app
    from .tes.backends import BackendUnavailable
    from .trs.registry import RegistryError

    _check_bind(settings)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    try:
        app = create_app(settings, wes=wes)
    except RegistryError as exc:
        raise click.ClickException(f"this node's TRS registry cannot be served: {exc}") from exc
    except BackendUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    base = f"http://{settings.host}:{settings.port}"
    served = [f"WES at {base}{WES_PREFIX}"] if wes else []
    if wes and settings.trs.serve:
        served.append(f"TRS at {base}{TRS_PREFIX}")
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


# -- wes-bridge auth ------------------------------------------------------------------------
@main.group()
def auth() -> None:
    """Authentication helpers."""


@auth.command("hash-password")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)
def hash_password(password_stdin: bool) -> None:
    """Print the bcrypt hash of a password, for auth.basic.users."""
    import bcrypt

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.ClickException("the password is empty")
    if len(password.encode("utf-8")) > 72:
        raise click.ClickException("bcrypt uses at most 72 bytes of a password; use a shorter one")
    click.echo(bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii"))


# -- wes-bridge trs -------------------------------------------------------------------------
def _table(rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell (the last one is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


@contextlib.contextmanager
def _trs_errors() -> Iterator[None]:
    """A refused or failed request: its message, exit status 1, no traceback."""
    try:
        yield
    except WesError as exc:
        raise click.ClickException(exc.msg) from None


_trs_config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="YAML file of settings (trs.registries, trs.serve, host, port, public_url, limits).",
)
_trs_registry_option = click.option(
    "--registry",
    "registry_name",
    metavar="NAME_OR_URL",
    help="A configured registry's name ('self': this node's own) or a TRS base URL "
    "(https://.../ga4gh/trs/v2). Default: this node's own, else the first configured.",
)


@main.group()
def trs() -> None:
    """GA4GH TRS registries: list and show their workflows, fetch one as a run would."""


@trs.command("list")
@_trs_config_option
@_trs_registry_option
@click.option(
    "--descriptor-type",
    type=click.Choice(["CWL", "SMK", "NFL", "WDL", "GALAXY"], case_sensitive=False),
    help="Only tools with this descriptor type.",
)
@click.option("--name", help="Only tools of this name.")
@click.option("--organization", help="Only tools of this organization.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many tools.")
@click.option("--json", "as_json", is_flag=True, help="The registry's Tool objects as JSON.")
def trs_list(
    config: Path | None,
    registry_name: str | None,
    descriptor_type: str | None,
    name: str | None,
    organization: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List a registry's tools (every page): id, name, organization, versions, types."""
    from .trs.client import TrsClient, registry_for

    settings = _settings(config)
    with _trs_errors():
        registry = registry_for(registry_name, settings)
        with TrsClient(registry, settings) as client:
            tools = client.tools(
                descriptor_type=descriptor_type.upper() if descriptor_type else None,
                name=name,
                organization=organization,
                limit=limit,
            )
    if as_json:
        click.echo(json.dumps(tools, indent=2))
        return
    rows = [("ID", "NAME", "ORGANIZATION", "VERSIONS", "DESCRIPTOR TYPES")]
    for tool in tools:
        versions = [v for v in tool.get("versions") or [] if isinstance(v, dict)]
        types = sorted({str(t) for v in versions for t in v.get("descriptor_type") or []})
        rows.append(
            (
                str(tool.get("id", "")),
                str(tool.get("name") or ""),
                str(tool.get("organization") or ""),
                ",".join(str(v.get("id", "")) for v in versions),
                ",".join(types),
            )
        )
    _table(rows)
    if not tools:
        click.echo(f"no tools in TRS registry {registry.name!r} ({registry.url})", err=True)


def _checksum_text(entry: dict[str, Any]) -> str:
    checksum = entry.get("checksum")
    items = checksum if isinstance(checksum, list) else [checksum]
    shown = [
        f"{item.get('type')}:{item.get('checksum')}" for item in items if isinstance(item, dict)
    ]
    return " ".join(shown) or "-"


@trs.command("show")
@click.argument("reference", metavar="ID_OR_TRS_URL")
@_trs_config_option
@_trs_registry_option
@click.option("--json", "as_json", is_flag=True, help="The tool and its file listings as JSON.")
def trs_show(reference: str, config: Path | None, registry_name: str | None, as_json: bool) -> None:
    """Show one tool: its versions and, for each descriptor type, its files with checksums.

    ID_OR_TRS_URL is a tool id in --registry (e.g. '#workflow/wes-bridge/cwl/hello'), a
    trs://HOST/ID[/VERSION] URI (id percent-encoded) or a TRS descriptor URL; with a version,
    only that version is shown.
    """
    from .trs.client import TrsClient, parse_tool_reference, registry_for

    settings = _settings(config)
    with _trs_errors():
        chosen = registry_for(registry_name, settings) if registry_name else None
        registry, tool_id, version_id = parse_tool_reference(reference, settings, chosen)
        with TrsClient(registry, settings) as client:
            tool = client.tool(tool_id)
            versions = [v for v in tool.get("versions") or [] if isinstance(v, dict)]
            if version_id is not None:
                versions = [v for v in versions if v.get("id") == version_id]
                if not versions:
                    raise click.ClickException(
                        f"TRS registry {registry.name!r} has no version {version_id!r} of tool "
                        f"{tool_id!r}"
                    )
            files: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for version in versions:
                vid = str(version.get("id", ""))
                files[vid] = {
                    str(t): client.files(tool_id, vid, str(t))
                    for t in version.get("descriptor_type") or []
                }
    if as_json:
        shown = {**tool, "versions": versions}
        record = {"registry": {"name": registry.name, "url": registry.url}, "tool": shown}
        click.echo(json.dumps({**record, "files": files}, indent=2))
        return
    click.echo(f"tool          {tool.get('id', tool_id)}")
    for key in ("name", "organization", "description"):
        if tool.get(key):
            click.echo(f"{key:<14}{str(tool[key]).strip().splitlines()[0]}")
    click.echo(f"registry      {registry.name} ({registry.url})")
    for version in versions:
        vid = str(version.get("id", ""))
        types = ",".join(str(t) for t in version.get("descriptor_type") or []) or "-"
        flags = [
            flag for flag in ("is_production", "verified", "signed") if version.get(flag) is True
        ]
        extra = f" ({', '.join(flags)})" if flags else ""
        click.echo(f"version       {vid}  {types}{extra}")
        for descriptor_type, listing in files[vid].items():
            rows = [
                (
                    f"  {descriptor_type}",
                    str(entry.get("file_type", "")),
                    str(entry.get("path", "")),
                    _checksum_text(entry),
                )
                for entry in listing
            ]
            if rows:
                _table(rows)


@trs.command("fetch")
@click.argument("workflow_url")
@click.option(
    "--type",
    "workflow_type",
    required=True,
    type=click.Choice(["CWL", "SMK", "NFL"], case_sensitive=False),
    help="The run's workflow_type.",
)
@click.option(
    "--dest",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="An empty (or new) folder to write the workflow into.",
)
@_trs_config_option
def trs_fetch(workflow_url: str, workflow_type: str, dest: Path, config: Path | None) -> None:
    """Fetch WORKFLOW_URL exactly as a run would stage it, and print its provenance (JSON).

    WORKFLOW_URL: trs://HOST[:PORT]/ID/VERSION (id percent-encoded), #workflow/PATH:VERSION
    (asked of each known registry in turn), or .../ga4gh/trs/v2/tools/ID/versions/VERSION/
    TYPE/descriptor.
    """
    from .trs.client import fetch_trs_workflow

    settings = _settings(config)
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise click.ClickException(f"--dest {dest} is not empty")
    except OSError as exc:
        raise click.ClickException(f"cannot use --dest {dest}: {exc}") from None
    try:
        with _trs_errors():
            workflow = fetch_trs_workflow(workflow_url, workflow_type.upper(), dest, settings)
    except click.ClickException:
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()
        raise
    click.echo(json.dumps(workflow.as_record(), indent=2))


# -- wes-bridge audit -----------------------------------------------------------------------
def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 date or time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command("audit")
@click.option("--config", "config", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="The node's data directory (its database)."
)
@click.option("--since", help="Only records at or after this ISO 8601 time (UTC if no offset).")
@click.option("--subject", help="Only records of this user (the token's subject).")
@click.option(
    "--action",
    help="Only this action: submit, read, list, cancel, create_task, cancel_task, fetch.",
)
@click.option("--run", "run_id", help="Only records about this run (or task, or TRS path).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the most recent N records.")
def audit(
    config: Path | None,
    data_dir: Path | None,
    since: str | None,
    subject: str | None,
    action: str | None,
    run_id: str | None,
    as_json: bool,
    limit: int | None,
) -> None:
    """Print the node's audit log (who submitted, read, cancelled or was refused what), oldest
    first."""
    from .audit import AuditLog
    from .store import RunStore

    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    settings = _settings(config, **overrides)
    moment = _since(since)
    store = RunStore(settings.effective_database_url)
    try:
        entries = AuditLog(store).query(
            since=moment, subject=subject, action=action, target=run_id, limit=limit
        )
    finally:
        store.close()
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.as_json(), sort_keys=True))
        return
    if not entries:
        click.echo("no audit records")
        return
    rows = [["TIME (UTC)", "SUBJECT", "CLIENT", "API", "ACTION", "TARGET", "OUTCOME", "DETAILS"]]
    for entry in entries:
        outcome = (
            entry.outcome if entry.outcome == "allowed" else f"{entry.outcome} {entry.status_code}"
        )
        details = [
            *([entry.reason] if entry.reason else []),
            *([entry.workflow_checksum] if entry.workflow_checksum else []),
            *(["datasets " + ",".join(entry.datasets)] if entry.datasets else []),
        ]
        rows.append(
            [
                entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                entry.subject or "-",
                entry.client or "-",
                entry.api,
                entry.action,
                entry.target or "-",
                outcome,
                "; ".join(details),
            ]
        )
    _table(rows)
