"""Snakemake adapter for wes-bridge: Snakefiles (``workflow_type`` SMK), every job a TES task.

Registered through the ``wes_bridge.engines`` entry point ``snakemake`` and written only against
:mod:`wes_bridge.plugin`. The driver runs Snakemake in-process through its Python API with the
``wes-bridge`` executor plugin (:mod:`snakemake_executor_plugin_wes_bridge`), so each job is a
GA4GH TES task on the node's TES, tagged with the run and the rule: the node lists them as the
run's tasks and cancels them with the run. Snakemake itself (the DAG, scheduling, retries) stays
in the driver, whose stderr (the run's stderr log) receives Snakemake's log as it goes.

Files (see :mod:`wes_bridge.results`)
    Snakemake works in ``work/snakemake`` of the run directory, a mirror of the attachments
    (hard links) in which the Snakefile runs, so relative paths in rules see the attached data
    and ``include:``/``script:`` find the workflow's files. The WES ``workflow_params`` are the
    Snakemake config (a config file given like ``--configfile``, over the Snakefile's own
    ``configfile:``). When Snakemake ends, every file the run created there is hard-linked into
    the run's outputs directory at the same relative path (``results/x.txt`` is
    ``outputs/results/x.txt``), so the outputs hold the workflow's results and nothing else:
    not the attachments, not Snakemake's ``.snakemake`` bookkeeping.

Modes (``workflow_engine_parameters`` ``mode``)
    ``shared``: tasks run each job in place, in the working directory (the node's embedded TES
    on its host backend, Funnel on a cluster with a shared file system); ``staged``: the
    sources and each job's input files are TES inputs and its outputs TES outputs, all
    ``file://`` URLs (a TES that runs tasks in containers); ``auto`` (default): ``staged`` if
    the TES uses containers, else ``shared``.

Outputs
    ``{relative path: {"class": "File", "location": file URL, "path", "basename", "size",
    "checksum": "sha1$..."}}`` for each of those files, also after a failure (what was made).

Job commands (``job_command``, per run or as the node's setting)
    ``auto`` (default): a job of a plain ``shell:`` rule is a task that runs the rule's shell
    command itself (as Snakemake runs it: ``bash -c 'set -euo pipefail; ...'``), which saves
    starting a Snakemake per job; every other job (``run:``, ``script:``, ``wrapper:``,
    shadow, benchmark, conda/container, group jobs) runs Snakemake's job command. ``snakemake``:
    every task runs Snakemake's job command. See :mod:`snakemake_executor_plugin_wes_bridge`.

Failures
    A failed job makes the run EXECUTOR_ERROR with the exit code of the failing job's task and,
    in ``system_logs``, the step, its TES task id, exit code and the tail of its stderr. A
    direct shell job's exit code is its command's own (``exit 3`` gives 3); a job running
    Snakemake's job command exits 1 whatever its rule did (the rule's status is in the
    stderr tail).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from wes_bridge.plugin import (
    Availability,
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    EngineParameters,
    EngineSettings,
    RunSpec,
    from_command_line,
)

__all__ = ["SnakemakeAdapter", "SnakemakeParameters", "SnakemakeSettings"]

PARAMS_FILE = ".wes-workflow-params.json"
"""The WES ``workflow_params`` as a Snakemake config file, in the working directory."""
JOURNAL_FILE = "snakemake-tasks.jsonl"
"""The executor's record of every task (in the run's work directory)."""
IGNORED_DIRS = frozenset({".snakemake", "__pycache__"})
"""Directories (at any depth) of the working directory whose files are never results:
Snakemake's metadata, logs, locks and temporary scripts, and Python's byte-code caches."""
Mode = Literal["shared", "staged"]
JobCommand = Literal["auto", "snakemake"]


class SnakemakeSettings(EngineSettings):
    """Operator settings (``engines: {snakemake: {...}}`` in the config file)."""

    container_image: str | None = None
    """The image of every task (where the TES runs containers; it needs Snakemake). Default:
    Snakemake's own image of this Snakemake version."""
    seconds_between_status_checks: int = Field(10, ge=1, le=600)
    """The longest pause between checks of a run's TES tasks (they are checked a quarter of a
    second after a job is submitted, then every tenth of the time a task has been running or
    queued, within a quarter of a second and this)."""
    job_command: JobCommand = "auto"
    """What the tasks run (a run's ``job_command`` parameter overrides it). auto: a job of a
    plain ``shell:`` rule runs its own shell command directly (``bash -c 'set -euo pipefail;
    ...'``, as Snakemake runs it), so the task's exit code is the command's; every other job
    (``run:``, ``script:``, ``wrapper:``, ``notebook:``, shadow, benchmark, conda/container,
    group jobs) runs Snakemake's job command (``python -m snakemake --target-jobs ...``).
    snakemake: every task runs Snakemake's job command."""
    max_jobs: int = Field(1000, ge=1)
    """The largest ``jobs`` a run may ask for."""


class SnakemakeParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters`` accepted for Snakemake runs.

    Keys may also be given as Snakemake command-line flags (``{"--keep-going": "true"}``,
    ``{"--jobs": "4"}``).
    """

    @model_validator(mode="before")
    @classmethod
    def _from_command_line_flags(cls, data: Any) -> Any:
        return from_command_line(data, "--", lambda flag, value: {flag.replace("-", "_"): value})

    jobs: int = Field(20, ge=1)
    """Jobs (TES tasks) at once (snakemake --jobs); the TES queues what does not fit."""
    cores: int | None = Field(None, ge=1)
    """Threads of all running jobs together (snakemake --cores); default: no limit."""
    mode: Literal["auto", "shared", "staged"] = "auto"
    """shared: tasks work in the run's working directory, in place; staged: the sources and
    each job's inputs and outputs travel as TES inputs and outputs (see the executor plugin).
    auto: shared where the TES runs tasks on hosts that share the node's file system (the
    embedded TES's host backend, Funnel on a cluster), staged where it runs them in
    containers."""
    targets: list[str] = Field(default_factory=list)
    """Target files or rules (default: the Snakefile's first rule). A string is split at
    whitespace and commas; a JSON list is accepted too."""
    keep_going: bool = False
    """Go on with independent jobs after a failure (snakemake --keep-going)."""
    retries: int = Field(0, ge=0, le=100)
    """Retries of a failed job (snakemake --retries); a preempted task is retried as well."""
    printshellcmds: bool = True
    """Print each job's shell command in the run's log (snakemake --printshellcmds)."""
    latency_wait: int = Field(5, ge=0, le=3600)
    """Seconds to wait for a job's outputs to appear (snakemake --latency-wait)."""
    verbose: bool = False
    """Debug output in the run's log (snakemake --verbose)."""
    job_command: JobCommand | None = None
    """What the tasks run: auto (a plain shell rule's job runs its shell command directly) or
    snakemake (every job runs Snakemake's job command); default: the node's setting (auto)."""

    @field_validator("targets", mode="before")
    @classmethod
    def _split_targets(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"targets is not a JSON list: {exc}") from exc
            return [t for t in text.replace(",", " ").split() if t]
        return value

    @field_validator("targets")
    @classmethod
    def _relative_targets(cls, value: list[str]) -> list[str]:
        for target in value:
            path = PurePosixPath(target)
            if not target or path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"target {target!r} must be a rule or a path inside the working directory"
                )
        return value


def register_executor_plugin() -> None:
    """Make the ``wes-bridge`` executor known to Snakemake's plugin registry.

    Snakemake finds plugins by scanning ``sys.path`` for ``snakemake_executor_plugin_*``
    packages, which misses an editable (development) install; registering the module itself
    works for every kind of install.
    """
    import snakemake_executor_plugin_wes_bridge as plugin
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    registry = ExecutorPluginRegistry()
    if not registry.is_installed("wes-bridge"):
        registry.register_plugin(plugin.__name__, plugin)


class SnakemakeAdapter(EngineAdapter):
    engine = "snakemake"
    workflow_type = "SMK"
    workflow_type_versions = ("7", "8", "9")
    """Snakefiles of Snakemake 7 to 9 (the language is the same; 7-era remote providers, which
    Snakemake 8 replaced by storage plugins, are not supported)."""
    settings_model = SnakemakeSettings
    parameters_model = SnakemakeParameters
    warm_modules = ("wes_bridge_snakemake.warm",)

    settings: SnakemakeSettings

    def engine_version(self) -> str:
        return version("snakemake")

    def availability(self) -> Availability:
        try:
            version("snakemake-interface-executor-plugins")
        except Exception as exc:  # a broken install: say so, do not fail the node
            return Availability(False, f"Snakemake's executor plugin interface: {exc}")
        return Availability(True)

    def execution_description(self) -> str:
        return "every Snakemake job is a task on the node's TES"

    def validate(self, run: RunSpec) -> list[str]:
        problems = run.workflow_file_problems("the Snakefile")
        if not isinstance(run.params, dict):
            problems.append("workflow_params must be a JSON object (the Snakemake config)")
        params: SnakemakeParameters = run.engine_parameters  # type: ignore[assignment]
        if params.jobs > self.settings.max_jobs:
            problems.append(f"jobs may be at most {self.settings.max_jobs} on this node")
        return problems

    def drive(self, ctx: DriverContext) -> DriverOutcome:
        from snakemake_executor_plugin_wes_bridge.journal import final_failures, read_journal

        from wes_bridge.results import describe_outputs, mirror, publish, snapshot

        run = ctx.run
        params: SnakemakeParameters = run.engine_parameters  # type: ignore[assignment]
        if ctx.tes is None or not ctx.tes.shared_filesystem:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    "Snakemake runs its jobs on a TES that shares this node's file system "
                    "(the embedded TES, or tes.shared_filesystem: true for an external one)"
                ],
            )
        mode: Mode
        if params.mode == "auto":
            mode = "staged" if ctx.tes.uses_containers else "shared"
        else:
            mode = params.mode
        if mode == "shared" and ctx.tes.uses_containers:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    "shared mode runs jobs in place, but this TES runs them in containers "
                    "that do not see the node's file system; use mode staged (or auto)"
                ],
            )
        workdir = ctx.work_dir / "snakemake"
        mirror(run.workflow_dir, workdir)
        snakefile = workdir / run.workflow_path.relative_to(run.workflow_dir)
        configfile = None
        if run.params:
            configfile = workdir / PARAMS_FILE
            configfile.write_text(json.dumps(run.params), encoding="utf-8")
        journal = ctx.work_dir / JOURNAL_FILE
        job_command = params.job_command or self.settings.job_command
        cmd = self._command(snakefile.relative_to(workdir), configfile, params, mode, job_command)
        # The executor (in this process) reads the TES endpoint, credentials included, from
        # the environment; no command line ever carries them.
        os.environ.update(ctx.tes.credential_env())
        before = snapshot(workdir, IGNORED_DIRS)
        print(
            f"wes-bridge: each Snakemake job is a task on {ctx.tes.description or 'the TES'} "
            f"({ctx.tes.url}), {mode} mode",
            file=sys.stderr,
            flush=True,
        )
        error: str | None = None
        cancelled = False
        os.chdir(workdir)
        try:
            error = self._run(snakefile, configfile, journal, params, mode, job_command)
        except KeyboardInterrupt:
            cancelled = True
            error = "Snakemake was interrupted"
        finally:
            os.chdir(ctx.run_dir)
        published = publish(workdir, before, ctx.outputs_dir, IGNORED_DIRS)
        outputs = describe_outputs(ctx.outputs_dir, published)
        if error is None:
            return DriverOutcome("COMPLETE", outputs=outputs, exit_code=0, cmd=cmd)
        if cancelled:
            return DriverOutcome("CANCELED", outputs=outputs, cmd=cmd, system_logs=[error])
        system_logs = [f"Snakemake failed: {error}"]
        exit_code = 1
        failures = final_failures(read_journal(journal))
        for failure in failures:
            line = f"step {failure.step} (TES task {failure.task_id or '-'}) " + (
                f"exited with code {failure.exit_code}"
                if failure.exit_code is not None
                else f"ended {failure.state}"
            )
            if failure.stderr_tail:
                line += f"; stderr tail:\n{failure.stderr_tail}"
            elif failure.message:
                line += f": {failure.message.strip()}"
            system_logs.append(line)
        if failures and failures[0].exit_code is not None:
            exit_code = failures[0].exit_code  # the failing step's, as the run's
        return DriverOutcome(
            "EXECUTOR_ERROR",
            outputs=outputs,
            exit_code=exit_code,
            cmd=cmd,
            system_logs=system_logs,
        )

    def _run(
        self,
        snakefile: Path,
        configfile: Path | None,
        journal: Path,
        params: SnakemakeParameters,
        mode: Mode,
        job_command: JobCommand,
    ) -> str | None:
        """Run Snakemake in this process (the working directory is the current one); None on
        success, else what went wrong (Snakemake has logged it)."""
        from snakemake.api import SnakemakeApi
        from snakemake.settings.types import (
            ConfigSettings,
            DAGSettings,
            ExecutionSettings,
            OutputSettings,
            RemoteExecutionSettings,
            ResourceSettings,
            SharedFSUsage,
            StorageSettings,
        )
        from snakemake_executor_plugin_wes_bridge import ExecutorSettings

        register_executor_plugin()
        remote = RemoteExecutionSettings(
            seconds_between_status_checks=self.settings.seconds_between_status_checks
        )
        if self.settings.container_image:
            remote.container_image = self.settings.container_image
        output = OutputSettings(
            printshellcmds=params.printshellcmds,
            nocolor=True,
            verbose=params.verbose,
            show_failed_logs=True,
        )
        # Cancelling a run SIGTERMs the driver: Snakemake then starts no more jobs, and the
        # executor cancels the tasks of the running ones (as the node does). SIGINT is
        # Snakemake's "stop now" (it cancels the jobs too); the driver starts with it ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with SnakemakeApi(output) as api:
            try:
                workflow = api.workflow(
                    resource_settings=ResourceSettings(nodes=params.jobs, cores=params.cores),
                    config_settings=ConfigSettings(
                        configfiles=[configfile] if configfile is not None else []
                    ),
                    storage_settings=StorageSettings(
                        shared_fs_usage=(SharedFSUsage.all() if mode == "shared" else frozenset())
                    ),
                    snakefile=snakefile,
                )
                dag = workflow.dag(DAGSettings(targets=frozenset(params.targets)))
                dag.execute_workflow(
                    executor="wes-bridge",
                    execution_settings=ExecutionSettings(
                        keep_going=params.keep_going,
                        retries=params.retries,
                        latency_wait=params.latency_wait,
                    ),
                    remote_execution_settings=remote,
                    executor_settings=ExecutorSettings(
                        mode=mode, journal=journal, job_command=job_command
                    ),
                )
            except Exception as exc:
                api.print_exception(exc)
                return str(exc).strip() or type(exc).__name__
        return None

    @staticmethod
    def _command(
        snakefile: Path,
        configfile: Path | None,
        params: SnakemakeParameters,
        mode: Mode,
        job_command: JobCommand = "auto",
    ) -> list[str]:
        """The Snakemake command line equivalent to the run (for the run log)."""
        cmd = [
            "snakemake",
            "--executor",
            "wes-bridge",
            "--wes-bridge-mode",
            mode,
            "--wes-bridge-job-command",
            job_command,
            "--snakefile",
            str(snakefile),
            "--jobs",
            str(params.jobs),
        ]
        if params.cores is not None:
            cmd += ["--cores", str(params.cores)]
        if configfile is not None:
            cmd += ["--configfile", configfile.name]
        if mode == "staged":
            cmd += ["--shared-fs-usage", "none"]
        if params.keep_going:
            cmd.append("--keep-going")
        if params.retries:
            cmd += ["--retries", str(params.retries)]
        if params.printshellcmds:
            cmd.append("--printshellcmds")
        cmd += ["--latency-wait", str(params.latency_wait)]
        if params.verbose:
            cmd.append("--verbose")
        return cmd + params.targets
