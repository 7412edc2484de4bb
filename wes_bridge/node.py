"""One node's parts, built from settings and shared by the HTTP layer and the CLI."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from .audit import AuditLog
from .auth import Authenticator, DatasetPolicy
from .auth.sealed import TokenBox
from .config import Settings
from .pagination import PageTokens
from .registry import EngineRegistry
from .staging import RunStager
from .store import RunStore
from .supervisor_process import SupervisorProcess
from .tes.backends import SANDBOX_PACKAGE, Backend, BackendUnavailable, make_backend
from .tes.scheduler import Capacity, capacity_of
from .tes.store import TesStore

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
    auth: Authenticator
    policy: DatasetPolicy
    tokens: TokenBox
    audit: AuditLog
    # The embedded TES (None when the node uses an external one).
    tes: TesStore | None = None
    tes_backend: Backend | None = None
    tes_backend_available: tuple[bool, str] = (False, "no embedded TES")
    tes_capacity: Capacity | None = None

    def start(self) -> None:
        self.supervisor.start()
        if self.tes_backend is not None:
            usable, why = self.tes_backend_available
            log.info(
                "embedded TES: %s%s",
                self.tes_backend.describe(),
                "" if usable else f"; NOT usable: {why}",
            )
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


def build_node(
    settings: Settings,
    registry: EngineRegistry | None = None,
    *,
    wes: bool = True,
) -> Node:
    """The node's parts; ``wes=False`` for a TES-only server (``wes-bridge tes serve``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    # Run directories are the run's user's: no other OS user reads them (tasks on the host
    # backend all run as the server's user, see README "Authentication and access").
    settings.runs_dir.chmod(0o700)
    # Half-staged requests from a crash: never queued, so nothing refers to them.
    for leftover in settings.runs_dir.glob(".staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    store = RunStore(settings.effective_database_url)
    if registry is None:
        registry = EngineRegistry.from_entry_points(
            settings.engines, settings.disabled_engines, settings.default_engines
        )
    embedded_tes = settings.tes.url is None
    tes_backend: Backend | None = None
    if embedded_tes:
        tes_backend = make_backend(
            settings.tes.backend,
            settings.tes.container_binary,
            sandbox_network=settings.tes.sandbox_network,
        )
        usable, why = tes_backend.available()
        if settings.tes.backend == "host-sandbox" and not usable:
            # A node that promised isolation must not run tasks without it.
            raise BackendUnavailable(
                f"tes.backend host-sandbox needs bubblewrap, which does not work here: {why} "
                f"(Debian/Ubuntu: apt-get install {SANDBOX_PACKAGE}; Fedora: dnf install "
                f"{SANDBOX_PACKAGE})"
            )
    node = Node(
        settings=settings,
        store=store,
        registry=registry,
        stager=RunStager(settings),
        supervisor=SupervisorProcess(settings, store, wes=wes, tes=embedded_tes),
        page_tokens=PageTokens(store.secret("page_tokens")),
        auth=Authenticator(settings.auth, store),
        policy=DatasetPolicy(settings.auth.datasets),
        tokens=TokenBox(settings.data_dir / "auth.key"),
        audit=AuditLog(store),
    )
    if embedded_tes:
        settings.tes_dir.mkdir(parents=True, exist_ok=True)
        settings.tes_dir.chmod(0o700)
        node.tes = TesStore(store)
        assert tes_backend is not None
        node.tes_backend = tes_backend
        node.tes_backend_available = usable, why
        node.tes_capacity = capacity_of(settings)
    return node
