"""Snakemake executor plugin ``wes-bridge``: every job is a GA4GH TES 1.1 task.

``snakemake --executor wes-bridge --jobs 20`` submits each job (or group job) to a TES as one
task, tagged for wes-bridge (the WES run and step), and follows the tasks without blocking
Snakemake. A job of a plain ``shell:`` rule runs its own shell command in its task (see
:mod:`.direct`); every other job runs Snakemake's own job command
(``--wes-bridge-job-command snakemake`` makes every job do so). See :mod:`.executor` for the
two file modes (``shared``, the default, and ``staged``), the resource mapping and the status
handling, and :class:`.settings.ExecutorSettings` for the options.

The TES is ``--wes-bridge-url`` or ``$WES_BRIDGE_TES_URL``; its credentials are read only from
the environment (``$WES_BRIDGE_TES_TOKEN``, or ``$WES_BRIDGE_TES_USERNAME`` and
``$WES_BRIDGE_TES_PASSWORD``), so they never appear on a command line. A wes-bridge node's
Snakemake adapter sets all of these for the runs it drives.
"""

from __future__ import annotations

from .executor import Executor
from .settings import ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
