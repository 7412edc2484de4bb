"""Imported once in the warm driver process: Snakemake's API and the wes-bridge executor.

Importing Snakemake costs more than a second; a run's driver, forked from the warm process,
starts with it loaded and the executor plugin registered.
"""

from __future__ import annotations

import snakemake.api
import snakemake.settings.types  # noqa: F401
import snakemake_executor_plugin_wes_bridge  # noqa: F401

from . import register_executor_plugin

register_executor_plugin()
