"""The executor's settings (``--wes-bridge-*`` on Snakemake's command line) and common settings.

This module deliberately does not use ``from __future__ import annotations``: Snakemake builds
its command-line options from the dataclass fields' *runtime* types (``typing.Optional``,
``typing.Literal``), which postponed annotations would turn into strings.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

__all__ = ["DEFAULT_STAGED_WORKDIR", "ExecutorSettings", "JobCommand", "Mode", "common_settings"]

Mode = Literal["shared", "staged"]
JobCommand = Literal["auto", "snakemake"]

DEFAULT_STAGED_WORKDIR = "/snakemake/workdir"
"""Where a staged job works inside its task (a container path the TES maps or mounts)."""


@dataclass
class ExecutorSettings(ExecutorSettingsBase):  # type: ignore[misc]
    """How jobs become TES tasks. The TES credentials are never settings (they would show on
    command lines): they are read from ``WES_BRIDGE_TES_TOKEN``, or ``WES_BRIDGE_TES_USERNAME``
    and ``WES_BRIDGE_TES_PASSWORD``."""

    url: Optional[str] = field(  # noqa: UP045 - Snakemake's option parser needs typing.Optional
        default=None,
        metadata={
            "help": "The TES API to submit jobs to (e.g. http://host/ga4gh/tes/v1). Default: "
            "$WES_BRIDGE_TES_URL. Credentials come only from $WES_BRIDGE_TES_TOKEN, or "
            "$WES_BRIDGE_TES_USERNAME and $WES_BRIDGE_TES_PASSWORD.",
        },
    )
    mode: Mode = field(
        default="shared",
        metadata={
            "help": "shared: a task runs the job in this working directory, which the TES's "
            "executors see at the same path (the TES shares this file system). staged: the "
            "workflow sources and the job's input files go in as TES inputs, its output, log "
            "and benchmark files come back as TES outputs (file:// URLs), and the job runs in "
            "a directory of its own inside the task.",
        },
    )
    staged_workdir: str = field(
        default=DEFAULT_STAGED_WORKDIR,
        metadata={"help": "staged mode: the job's working directory inside its task."},
    )
    python: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "The Python interpreter (with Snakemake) a task runs the job with. "
            "Default: this Snakemake's own interpreter when the TES runs tasks on its hosts, "
            "'python' when it runs them in containers.",
        },
    )
    job_command: JobCommand = field(
        default="auto",
        metadata={
            "help": "What a task runs. auto: a job of a plain shell rule (no run/script/"
            "notebook/wrapper/template engine, shadow, benchmark, conda/container/"
            "envmodules deployment, group, pipe or service) runs its own shell command "
            "directly (bash -c 'set -euo pipefail; ...', as Snakemake's shell() runs it), "
            "prepared here as Snakemake's job process would; its task's exit code is the "
            "command's. Every other job runs Snakemake's job command. snakemake: every task "
            "runs Snakemake's job command (python -m snakemake --target-jobs ...).",
        },
    )
    poll_seconds: float = field(
        default=0.25,
        metadata={
            "help": "The shortest pause (seconds) between status checks. The pause is a "
            "tenth of the time the youngest active task has been in its state (a running "
            "task: since it was seen running), within this and "
            "--seconds-between-status-checks; a new job is checked this long after its "
            "submission.",
        },
    )
    journal: Optional[Path] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Append one JSON line per submitted and per finished TES task to this "
            "file (the task id, state, exit code and stderr tail of every attempt).",
        },
    )


common_settings = CommonSettings(
    # Jobs run as TES tasks, wherever the TES runs them.
    non_local_exec=True,
    # Neither mode needs Snakemake to assume the lack of a shared file system: the driver asks
    # for --shared-fs-usage none in staged mode, and the executor then stages files itself.
    implies_no_shared_fs=False,
    # Staged mode sends the sources as TES inputs; there is no source archive to deploy.
    job_deploy_sources=False,
    can_transfer_local_files=True,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    # Declared environment variables go into the task's executor env, not its command line.
    pass_envvar_declarations_to_cmd=False,
    # The TES runs what this node has installed; tasks never pip-install anything.
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
    # A group job is one task; the job inside needs the group definitions.
    pass_group_args=True,
)
