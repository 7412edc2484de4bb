"""Direct shell jobs: a plain ``shell:`` job's own command as its TES task.

Snakemake's job command (``python -m snakemake --target-jobs ...``) starts a Python, parses the
Snakefile and builds a DAG for one job, which costs seconds per job; a plain shell rule's job
process then only runs one shell command. For such a job the task runs that command itself,
formatted as Snakemake's ``shell()`` would run it in the job process (see
``snakemake/shell.py``): with Snakemake's shell executable (``bash`` unless the Snakefile or
the ``shell_exec`` resource says otherwise), its strict-mode prefix (``set -euo pipefail;``
for bash, or the Snakefile's ``shell.prefix()``) and suffix, and the job's threads in
``OMP_NUM_THREADS`` and its kin (the ``tmpdir`` resource in ``TMPDIR`` and its kin when it is
not the default). The task's exit code is then the command's own.

What the job process does before running the command (``Job.prepare()``: refuse protected
outputs, remove stale outputs, create the output and log directories and the tmpdir, wait for
the inputs), the executor does in the main Snakemake process before it submits the task; the
main process's success and failure handling (output checks with ``--latency-wait``,
``touch()``, empty logs, ``protected()``, ``temp()``, metadata) runs as for every job of a
remote executor. In staged mode the command also creates the output and log directories in the
task, and afterwards (as the job process does) an empty log file where the command wrote none,
so that every declared TES output exists.

A job keeps Snakemake's full job command when it needs anything only the job process
provides: see :func:`obstacle`.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SHELL_MAX_ARG",
    "THREAD_VARIABLES",
    "TMPDIR_VARIABLES",
    "ShellJob",
    "obstacle",
    "shell_job",
    "staged_script",
]

SHELL_MAX_ARG = 16 * 4096 - 1
"""Snakemake's ``MAX_ARG_LEN``: a longer shell command goes through a script file in the job
process, so such a job keeps the full job command."""
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""Set to the job's threads for its shell command, as Snakemake's ``shell()`` does."""
TMPDIR_VARIABLES = ("TMPDIR", "TMP", "TEMPDIR", "TEMP")
"""Set to the job's ``tmpdir`` resource for its shell command, as Snakemake's ``shell()`` does."""


@dataclass(frozen=True)
class ShellJob:
    """How a task runs a job's shell command directly."""

    executable: str
    """The shell (Snakemake's ``shell.executable``, or the job's ``shell_exec`` resource)."""
    script: str
    """The formatted command with Snakemake's shell prefix and suffix, as ``shell()`` runs it."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables ``shell()`` sets for the command (threads, tmpdir)."""
    tmpdir: str | None = None
    """The job's ``tmpdir`` resource, when it is not the default (staged mode creates it)."""

    def invocation(self) -> str:
        """The shell command line that runs :attr:`script` (for ``/bin/sh -c``)."""
        return f"{shlex.quote(self.executable)} -c {shlex.quote(self.script)}"


def _flagged(path: Any, flag: str) -> bool:
    flags = getattr(path, "flags", None)
    return isinstance(flags, Mapping) and bool(flags.get(flag))


def _method_names(methods: Iterable[Any]) -> set[str]:
    return {str(getattr(m, "name", m)).upper() for m in methods}


def obstacle(job: Any, deployment_methods: Collection[Any], staged: bool = False) -> str | None:
    """Why ``job`` must run Snakemake's full job command; None if its shell command can run
    directly.

    Direct are only single jobs of plain ``shell:`` rules: not ``run:``, ``script:``,
    ``notebook:``, ``wrapper:``, ``cwl:`` or template-engine rules (their code runs in the job
    process), no group jobs (pipes, services), no ``shadow:`` directory, no ``benchmark:``,
    no between-workflow ``cache:``, no conda environment, container or environment modules
    that the active deployment methods would use, no storage-plugin files (the job process
    moves them), and a command short enough for one argument. In staged mode also no
    ``touch()`` or ``update()`` outputs (the job process handles them inside the task).
    """
    if job.is_group():
        return "a group job"
    rule = job.rule
    if not getattr(rule, "is_shell", False) or getattr(rule, "norun", False):
        return "not a shell rule"
    for kind in ("is_script", "is_notebook", "is_wrapper", "is_cwl", "is_template_engine"):
        if getattr(rule, kind, False):
            return f"a rule with {kind.removeprefix('is_')}"
    if getattr(job, "is_shadow", False):
        return "a shadow rule"
    if getattr(job, "benchmark", None):
        return "a benchmarked rule"
    if getattr(getattr(rule, "cache", None), "output", False):
        return "a cached rule"  # (a rule with cache: true; the job process fetches or stores)
    methods = _method_names(deployment_methods)
    if "CONDA" in methods and getattr(job, "conda_env_spec", None):
        return "a conda environment"
    if "APPTAINER" in methods and getattr(job, "container_img_url", None):
        return "a container"
    if "ENV_MODULES" in methods and getattr(job, "env_modules", None):
        return "environment modules"
    files = [*job.input, *job.output, *job.log]
    if any(getattr(f, "is_storage", False) for f in files):
        return "files in storage"
    if any(_flagged(f, "pipe") or _flagged(f, "service") for f in job.output):
        return "a pipe or service output"
    if staged and any(_flagged(f, "touch") or _flagged(f, "update") for f in job.output):
        return "touch() or update() outputs in staged mode"
    return None


def shell_job(job: Any, *, in_containers: bool = False) -> ShellJob | None:
    """The direct form of ``job`` (which :func:`obstacle` accepted); None if its command is
    too long for one argument (the job process would write a script file)."""
    from snakemake.shell import shell

    resources = job.resources
    executable = resources.get("shell_exec") or shell.get_executable() or "/bin/sh"
    executable = str(executable)
    if in_containers and executable == shutil.which("bash"):
        executable = "bash"  # Snakemake's default shell, found in the task's own PATH
    command = job.shellcmd or ""
    script = " ".join(
        (shell._get_process_prefix(executable), command, shell._process_suffix)
    ).strip()
    if len(script.replace("'", r"'\''")) + 2 > SHELL_MAX_ARG:
        return None
    threads = str(job.threads)
    env = dict.fromkeys(THREAD_VARIABLES, threads)
    tmpdir = resources.get("tmpdir")
    if tmpdir and str(tmpdir) != tempfile.gettempdir():
        env.update(dict.fromkeys(TMPDIR_VARIABLES, str(tmpdir)))
    else:
        tmpdir = None  # the task's own temporary directory, as the job process would find it
    return ShellJob(
        executable=executable,
        script=script,
        env=env,
        tmpdir=str(tmpdir) if tmpdir else None,
    )


def staged_script(shell: ShellJob, directories: Iterable[str], logs: Iterable[str]) -> str:
    """The ``/bin/sh -c`` script of a staged direct job: create the output, log and tmpdir
    directories, run the command, create the log files it did not write, exit with its code."""
    wanted = sorted({d for d in directories if d and d not in (".", "/")})
    parts = []
    if wanted:
        parts.append("mkdir -p " + " ".join(shlex.quote(d) for d in wanted) + " && ")
    touches = "".join(
        f"[ -e {shlex.quote(p)} ] || : > {shlex.quote(p)}; " for p in dict.fromkeys(logs)
    )
    if not touches:
        return "".join(parts) + "exec " + shell.invocation()
    return "".join(parts) + "{ " + shell.invocation() + "; rc=$?; " + touches + "exit $rc; }"
