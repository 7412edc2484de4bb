"""Discovery and resolution of engine adapters.

Adapters come only from the ``wes_bridge.engines`` entry-point group, built-in ones included.
A plugin that cannot be imported, is not an :class:`~wes_bridge.plugin.EngineAdapter`, declares
another plugin API version, or has settings that do not validate is recorded with the reason and
skipped; the node starts with the others.

Names
    An entry point's name is the adapter's *id*: unique on the node, it names the adapter in
    ``engines.<id>`` settings, in ``disabled_engines`` and in the run record.
    :attr:`EngineAdapter.engine` is the *engine* name clients send as ``workflow_engine``;
    several adapters may share it when they run different workflow types (Toil runs CWL and
    WDL: ``toil`` and ``toil-wdl``, both engine ``toil``). The id must be the engine name or
    start with it and a dash; a second adapter of an engine for a workflow type it already
    runs is refused (the later one in entry-point order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from .errors import BadRequest
from .plugin import API_VERSION, Availability, EngineAdapter

__all__ = ["ENTRY_POINT_GROUP", "EngineRegistry", "FailedEngine", "LoadedEngine"]

ENTRY_POINT_GROUP = "wes_bridge.engines"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedEngine:
    name: str
    """The adapter's id: its entry-point name."""
    adapter: EngineAdapter
    distribution: str
    distribution_version: str
    target: str
    """``module:attribute`` the entry point names; driver processes load the class from it."""
    engine_version: str
    """Asked once when the plugin loads (it can be slow, e.g. reading package metadata)."""

    @property
    def engine(self) -> str:
        """The engine name clients send as ``workflow_engine`` (shared by the adapters of one
        engine for several workflow types)."""
        return self.adapter.engine

    def is_named(self, name: str) -> bool:
        """Whether ``name`` (a ``workflow_engine``, a default engine) names this adapter: its
        engine name or its id."""
        return name in (self.engine, self.name)


@dataclass(frozen=True)
class FailedEngine:
    name: str
    distribution: str
    target: str
    reason: str


def _normalise_version(version: str) -> str:
    return version.strip().lower().removeprefix("v")


class EngineRegistry:
    """The adapters of one node, built once at start-up."""

    def __init__(
        self,
        engines: Iterable[LoadedEngine],
        failures: Iterable[FailedEngine] = (),
        default_engines: Mapping[str, str] | None = None,
    ):
        self.engines: dict[str, LoadedEngine] = {e.name: e for e in engines}
        self.failures: list[FailedEngine] = list(failures)
        self.default_engines = {k.lower(): v for k, v in (default_engines or {}).items()}
        for workflow_type, name in self.default_engines.items():
            if not any(
                e.is_named(name) and e.adapter.workflow_type.lower() == workflow_type
                for e in self.engines.values()
            ):
                log.warning(
                    "default engine %r for workflow type %s is not a loaded engine of that type",
                    name,
                    workflow_type,
                )

    @classmethod
    def from_entry_points(
        cls,
        engine_settings: Mapping[str, Mapping[str, Any]] | None = None,
        disabled: Iterable[str] = (),
        default_engines: Mapping[str, str] | None = None,
    ) -> EngineRegistry:
        engine_settings = engine_settings or {}
        disabled_set = set(disabled)
        loaded: list[LoadedEngine] = []
        failed: list[FailedEngine] = []
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled_set:
                log.info("engine %s is disabled by configuration", ep.name)
                continue
            if any(e.name == ep.name for e in loaded):
                failed.append(_failure(ep, "another distribution already registered this name"))
                continue
            try:
                engine = _load(ep, engine_settings.get(ep.name, {}))
                _check_unique(engine, loaded)
            except _PluginError as exc:
                log.error("engine plugin %s (%s) not loaded: %s", ep.name, ep.value, exc)
                failed.append(_failure(ep, str(exc)))
            else:
                loaded.append(engine)
        unknown = set(engine_settings) - {e.name for e in loaded} - {f.name for f in failed}
        for name in sorted(unknown - disabled_set):
            log.warning("settings given for engine %r, but no such engine is installed", name)
        return cls(loaded, failed, default_engines)

    # -- what the node offers ---------------------------------------------------------------
    def workflow_type_versions(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for engine in self.engines.values():
            versions = result.setdefault(engine.adapter.workflow_type, [])
            versions.extend(v for v in engine.adapter.workflow_type_versions if v not in versions)
        return result

    def engine_versions(self) -> dict[str, list[str]]:
        """The versions of each engine, by engine name (what ``workflow_engine`` takes)."""
        result: dict[str, list[str]] = {}
        for engine in self.engines.values():
            versions = result.setdefault(engine.engine, [])
            if engine.engine_version not in versions:
                versions.append(engine.engine_version)
        return result

    def availability(self, name: str) -> Availability:
        return self.engines[name].adapter.availability()

    # -- choosing an adapter for a run ------------------------------------------------------
    def resolve(
        self,
        workflow_type: str,
        workflow_type_version: str,
        workflow_engine: str | None = None,
        workflow_engine_version: str | None = None,
    ) -> LoadedEngine:
        """The adapter for a request, or a :class:`BadRequest` that lists what is supported."""
        offered = self.workflow_type_versions()
        type_key = next((t for t in offered if t.lower() == workflow_type.strip().lower()), None)
        if type_key is None:
            raise BadRequest(
                f"workflow_type {workflow_type!r} is not supported here; supported: "
                + _describe(offered)
            )
        wanted = _normalise_version(workflow_type_version)
        candidates = [
            e
            for e in self.engines.values()
            if e.adapter.workflow_type == type_key
            and any(_normalise_version(v) == wanted for v in e.adapter.workflow_type_versions)
        ]
        if not candidates:
            raise BadRequest(
                f"workflow_type_version {workflow_type_version!r} of {type_key} is not supported "
                f"here; supported: {', '.join(offered[type_key])}"
            )
        if workflow_engine:
            by_name = [e for e in candidates if e.is_named(workflow_engine.strip())]
            if not by_name:
                raise BadRequest(
                    f"workflow_engine {workflow_engine!r} cannot run {type_key} "
                    f"{workflow_type_version} here; engines that can: "
                    + ", ".join(sorted({e.engine for e in candidates}))
                )
            candidates = by_name
        elif workflow_engine_version:
            raise BadRequest("workflow_engine_version was given without workflow_engine")
        if workflow_engine_version:
            engine = candidates[0]
            have = engine.engine_version
            if workflow_engine_version.strip() != have:
                raise BadRequest(
                    f"workflow_engine_version {workflow_engine_version!r} of {engine.engine} is "
                    f"not available here; available: {have}"
                )
        # Deterministic choice: the operator's default for the type, then usable engines
        # first, then by id.
        preferred = self.default_engines.get(type_key.lower())
        candidates.sort(
            key=lambda e: (
                preferred is None or not e.is_named(preferred),
                not e.adapter.availability().usable,
                e.name,
            )
        )
        return candidates[0]


def _describe(offered: Mapping[str, list[str]]) -> str:
    if not offered:
        return "none (no engine plugin is loaded)"
    return "; ".join(f"{t} ({', '.join(v)})" for t, v in sorted(offered.items()))


class _PluginError(Exception):
    pass


def _dist(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", ""
    return dist.name, dist.version


def _failure(ep: EntryPoint, reason: str) -> FailedEngine:
    return FailedEngine(ep.name, _dist(ep)[0], ep.value, reason)


def _load(ep: EntryPoint, raw_settings: Mapping[str, Any]) -> LoadedEngine:
    try:
        obj = ep.load()
    except Exception as exc:
        raise _PluginError(f"import failed: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, EngineAdapter)):
        raise _PluginError(f"expected a subclass of wes_bridge.plugin.EngineAdapter, found {obj!r}")
    declared = getattr(obj, "api_version", None)
    if declared != API_VERSION:
        raise _PluginError(
            f"declares plugin api_version {declared!r}; this wes-bridge provides {API_VERSION}"
        )
    for attr in ("engine", "workflow_type", "workflow_type_versions"):
        if not getattr(obj, attr, None):
            raise _PluginError(f"class attribute {attr!r} is missing or empty")
    if not (ep.name == obj.engine or ep.name.startswith(obj.engine + "-")):
        raise _PluginError(
            f"entry point {ep.name!r} is not named after its adapter's engine: the engine id "
            f"is {obj.engine!r}, so the entry point must be {obj.engine!r} or start with "
            f"{obj.engine + '-'!r}"
        )
    try:
        settings = obj.settings_model.model_validate(dict(raw_settings))
    except ValidationError as exc:
        raise _PluginError(f"invalid settings: {_one_line(exc)}") from exc
    try:
        adapter = obj(settings)
        engine_version = adapter.engine_version()
    except Exception as exc:
        raise _PluginError(f"adapter failed to start: {type(exc).__name__}: {exc}") from exc
    name, version = _dist(ep)
    return LoadedEngine(ep.name, adapter, name, version, ep.value, engine_version)


def _check_unique(engine: LoadedEngine, loaded: Iterable[LoadedEngine]) -> None:
    """Refuse a second adapter of one engine for one workflow type."""
    workflow_type = engine.adapter.workflow_type.lower()
    for other in loaded:
        if other.engine == engine.engine and other.adapter.workflow_type.lower() == workflow_type:
            raise _PluginError(
                f"engine {engine.engine!r} already runs {engine.adapter.workflow_type} here "
                f"(adapter {other.name!r}); an engine has one adapter per workflow type"
            )


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )


def describe_validation_error(exc: ValidationError) -> str:
    """A short, client-safe summary of a pydantic error (used for engine parameters)."""
    return _one_line(exc)
