"""Toil on GA4GH TES: the ``wes_bridge_tes`` batch system for Toil 9.

Importing this package registers the batch system with Toil
(:func:`toil.batchSystems.registry.add_batch_system_factory`), after which Toil's command lines
accept ``--batchSystem wes_bridge_tes``. The class itself (:mod:`toil_wes_bridge.batch_system`)
is imported only when Toil asks for it.

Toil finds plugins by itself only in top-level modules named ``toil_batch_system_*`` that
:func:`pkgutil.iter_modules` lists; this package is registered explicitly instead, by the
runners wes-bridge's Toil adapters start: :mod:`toil_wes_bridge.cwl` (``python -m
toil_wes_bridge.cwl``: ``toil-cwl-runner`` with this batch system available) and
:mod:`toil_wes_bridge.wdl` (``toil-wdl-runner`` likewise, with WDL task commands on the host).

A runner may also choose the program of the Toil workers that run on the host
(:func:`use_host_worker`): by default Toil's ``_toil_worker``; the WDL runner's is
:mod:`toil_wes_bridge.wdl_worker`, a ``_toil_worker`` that runs task commands on the host.

The name says whose TES batch system this is (it submits through wes-bridge's TES client and
tags tasks the way a wes-bridge node lists them) and stays clear of a generic ``tes`` that
another plugin or Toil itself may register.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["BATCH_SYSTEM_NAME", "host_worker", "register", "use_host_worker"]

BATCH_SYSTEM_NAME = "wes_bridge_tes"

_host_worker_module: str | None = None


def _factory() -> Any:
    from .batch_system import TesBatchSystem

    return TesBatchSystem


def register() -> None:
    """Make ``--batchSystem wes_bridge_tes`` known to Toil (idempotent)."""
    from toil.batchSystems.registry import add_batch_system_factory

    add_batch_system_factory(BATCH_SYSTEM_NAME, _factory)


def use_host_worker(module: str | None) -> None:
    """Start the Toil workers that run on the host (a TES without containers, and jobs Toil
    keeps on the leader) as ``python -m MODULE`` with this interpreter, instead of Toil's
    ``_toil_worker``. ``MODULE`` takes ``_toil_worker``'s arguments. None: Toil's own again."""
    global _host_worker_module
    _host_worker_module = module


def host_worker() -> list[str] | None:
    """The command that starts a Toil worker on the host (see :func:`use_host_worker`), or None
    for Toil's ``_toil_worker``."""
    if _host_worker_module is None:
        return None
    return [sys.executable, "-m", _host_worker_module]


register()
