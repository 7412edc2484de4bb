"""Toil on GA4GH TES: the ``wes_bridge_tes`` batch system for Toil 9.

Importing this package registers the batch system with Toil
(:func:`toil.batchSystems.registry.add_batch_system_factory`), after which Toil's command lines
accept ``--batchSystem wes_bridge_tes``. The class itself (:mod:`toil_wes_bridge.batch_system`)
is imported only when Toil asks for it.

Toil finds plugins by itself only in top-level modules named ``toil_batch_system_*`` that
:func:`pkgutil.iter_modules` lists; this package is registered explicitly instead, by the
runner :mod:`toil_wes_bridge.cwl` (``python -m toil_wes_bridge.cwl``: ``toil-cwl-runner`` with
this batch system available), which is what wes-bridge's Toil adapter starts.

The name says whose TES batch system this is (it submits through wes-bridge's TES client and
tags tasks the way a wes-bridge node lists them) and stays clear of a generic ``tes`` that
another plugin or Toil itself may register.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BATCH_SYSTEM_NAME", "register"]

BATCH_SYSTEM_NAME = "wes_bridge_tes"


def _factory() -> Any:
    from .batch_system import TesBatchSystem

    return TesBatchSystem


def register() -> None:
    """Make ``--batchSystem wes_bridge_tes`` known to Toil (idempotent)."""
    from toil.batchSystems.registry import add_batch_system_factory

    add_batch_system_factory(BATCH_SYSTEM_NAME, _factory)


register()
