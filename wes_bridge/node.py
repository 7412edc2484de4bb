"""One node's parts, built from settings and shared by the HTTP layer and the CLI."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from .config import Settings
from .pagination import PageTokens
from .registry import EngineRegistry
from .staging import RunStager
from .store import RunStore
from .supervisor_process import SupervisorProcess

__all__ = ["Node", "build_node"]

log = logging.getLogger(__name__)


@dataclass
class Node:
    settings: Settings
    store: RunStore
    registry: EngineRegistry
    stager: RunStager
    supervisor: SupervisorProcess
    page_tokens: PageTokens

    def start(self) -> None:
        self.supervisor.start()
        for engine in self.registry.engines.values():
            availability = engine.adapter.availability()
            log.info(
                "engine %s %s (%s %s): %s",
                engine.name,
                engine.engine_version,
                engine.distribution,
                engine.distribution_version,
                "usable" if availability.usable else f"NOT usable: {availability.reason}",
            )
        for failure in self.registry.failures:
            log.error(
                "engine plugin %s from %s was not loaded: %s",
                failure.name,
                failure.distribution,
                failure.reason,
            )

    def stop(self) -> None:
        self.supervisor.stop()
        self.store.close()


def build_node(settings: Settings, registry: EngineRegistry | None = None) -> Node:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    # Half-staged requests from a crash: never queued, so nothing refers to them.
    for leftover in settings.runs_dir.glob(".staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    store = RunStore(settings.effective_database_url)
    if registry is None:
        registry = EngineRegistry.from_entry_points(settings.engines, settings.disabled_engines)
    return Node(
        settings=settings,
        store=store,
        registry=registry,
        stager=RunStager(settings),
        supervisor=SupervisorProcess(settings, store),
        page_tokens=PageTokens(store.secret("page_tokens")),
    )
