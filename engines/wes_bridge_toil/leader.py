"""What Toil's adapters share: a Toil leader for one run, each of its steps a task on the TES.

:class:`ToilLeaderAdapter` runs a Toil runner (``toil-cwl-runner`` or ``toil-wdl-runner``, as a
``python -m toil_wes_bridge...`` module that registers the ``wes_bridge_tes`` batch system
first) in a child process, in the driver's process group, so that cancelling the run signals
it too; Toil then cancels its tasks on the way out, and the node cancels whatever is left by
the run's tag. A subclass says which runner, with which language arguments, and how its output
object becomes the run's outputs.

Where things go
    The job store (``file:``, in the run's work directory unless the operator configures an
    object store), Toil's work and coordination directories and the runner's own folders are
    under the run's ``work/``; the leader's log (with each failed task's stderr tail) is the
    run's stderr, and the output object the runner prints is the run's stdout.

Failures
    A run that fails is an EXECUTOR_ERROR whose exit code is the failing tool's (read from the
    failed task's log), else the Toil worker's, else the runner's; its system logs name each
    failed task: ``step NAME (TES task ID) exited with code N; stderr tail: ...``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from wes_bridge.plugin import (
    RUN_TAG,
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    EngineParameters,
    EngineSettings,
    TesEndpoint,
    flag_value,
    from_command_line,
)
from wes_bridge.tes.client import TesError

__all__ = [
    "BATCH_SYSTEM",
    "StepFailure",
    "ToilBaseSettings",
    "ToilLeaderAdapter",
    "ToilRunParameters",
    "ToolLog",
    "failed_tasks",
    "toil_version",
]

BATCH_SYSTEM = "wes_bridge_tes"
_TAIL = 2000
_MAX_REPORTED_FAILURES = 10
# Folders of the run's work directory for Toil's work and coordination directories.
_TOIL_WORK, _TOIL_COORDINATION = "toil", "toil-coordination"
_CLEAN = Literal["always", "onError", "never", "onSuccess"]


def toil_version() -> str:
    """The installed Toil's version, or "unknown"."""
    try:
        return version("toil")
    except PackageNotFoundError:
        return "unknown"


class ToilBaseSettings(EngineSettings):
    """Operator settings of every Toil adapter (``engines: {<adapter id>: {...}}``)."""

    job_store: str | None = None
    """A Toil job-store locator for every run, ``{run_id}`` replaced by the run's id (e.g.
    ``aws:us-west-2:wes-{run_id}``). Default: a ``file:`` job store in the run's work
    directory, which needs a TES whose executors share this file system without containers
    (the embedded TES with host execution)."""
    image: str | None = None
    """The image of the Toil worker tasks where the TES runs containers. Default: the Toil
    appliance of the installed Toil version."""


# Flags of every Toil runner that WES clients may forward but that the node decides: how the
# engine's log looks.
_LOG_FLAGS = frozenset(
    {"logColors", "disableProgress", "logInfo", "logWarning", "logError", "logCritical", "logOff"}
)
# flag (without "--") -> field, for Toil's own flags that set a field as they are
_TOIL_FLAG_FIELDS = {
    "maxJobs": "max_jobs",
    "maxLocalJobs": "max_local_jobs",
    "retryCount": "retry_count",
    "runLocalJobsOnWorkers": "run_local_jobs_on_workers",
    "clean": "clean",
    "cleanWorkDir": "clean_work_dir",
    "logDebug": "debug",
}


class ToilRunParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters`` of every Toil runner (subclassed per language).

    Keys may also be given as the runner's command-line flags, the form Toil's WES client
    sends (``{"--retryCount": "2"}``, ``{"--logDebug": null}``, ``{"--stopOnFirstFailure":
    "true"}``, ``{"--disableChaining": "false"}``). The log-level and log-colour flags and
    :attr:`node_decides` are accepted and ignored; any other flag (``--jobStore``,
    ``--batchSystem``, ...) is refused like any unknown key.
    """

    node_decides: ClassVar[frozenset[str]] = frozenset()
    """The runner's flags the node sets itself (accepted and ignored)."""
    flag_fields: ClassVar[dict[str, str]] = {}
    """The runner's flags that set a field as they are, beyond Toil's own."""

    @model_validator(mode="before")
    @classmethod
    def _from_command_line_flags(cls, data: Any) -> Any:
        return from_command_line(data, "--", cls._option)

    @classmethod
    def _option(cls, flag: str, value: Any) -> dict[str, Any] | None:
        if flag in _LOG_FLAGS or flag in cls.node_decides:
            return {}
        field_name = cls.flag_fields.get(flag) or _TOIL_FLAG_FIELDS.get(flag)
        if field_name is not None:
            is_bool = cls.model_fields[field_name].annotation is bool
            return {field_name: flag_value(value) if is_bool else value}
        if flag == "stopOnFirstFailure":
            return {"on_error": "stop" if flag_value(value) else "continue"}
        if flag == "disableChaining":
            return {"chaining": not flag_value(value)}
        if flag == "logLevel":
            return {"debug": str(value).strip().lower() in ("debug", "trace")}
        return cls._language_option(flag, value)

    @classmethod
    def _language_option(cls, flag: str, value: Any) -> dict[str, Any] | None:
        """A flag of the runner's language that needs more than :attr:`flag_fields`; None:
        refused, under its own name."""
        return None

    max_jobs: int | None = Field(None, ge=1)
    """Most Toil jobs on the TES at once (toil --maxJobs; None: no limit, the TES queues)."""
    max_local_jobs: int | None = Field(None, ge=1)
    """Most workflow-glue jobs at once on the leader (toil --maxLocalJobs; None: Toil's
    default, the number of cores)."""
    retry_count: int = Field(1, ge=0)
    """Times a failed job is tried again (toil --retryCount)."""
    on_error: Literal["stop", "continue"] = "continue"
    """"stop": stop the workflow at the first job that fails for good (toil
    --stopOnFirstFailure); "continue": run what does not depend on it, as Toil does."""
    run_local_jobs_on_workers: bool = False
    """Run workflow glue as TES tasks too (toil --runLocalJobsOnWorkers)."""
    chaining: bool = False
    """Let one worker task go on with a job's successors (fewer tasks, but a task then runs
    several steps, and the run's task list names only the first); toil --disableChaining
    when false."""
    clean: _CLEAN = "onSuccess"
    """When the job store is deleted (toil --clean)."""
    clean_work_dir: _CLEAN = "always"
    """When each job's work directory is deleted (toil --cleanWorkDir)."""
    debug: bool = False
    """Toil logs at DEBUG level, in the run's stderr and each task's (--logDebug)."""


# -- reading the failed tasks back ------------------------------------------------------------
@dataclass(frozen=True)
class ToolLog:
    """How a runner's worker log tells the failed tool's exit code and stderr."""

    exit_code: Callable[[str], int | None]
    stderr: Callable[[str], str | None]


class StepFailure:
    """A task of the run that did not complete, as its run log reports it."""

    def __init__(self, task: dict[str, Any], tool_log: ToolLog) -> None:
        self.task_id = str(task.get("id") or "-")
        tags = task.get("tags") or {}
        self.step = str(tags.get("wes_step") or task.get("name") or self.task_id)
        self.state = str(task.get("state") or "UNKNOWN")
        self.created = str(task.get("creation_time") or "")
        logs = task.get("logs") or []
        executor_logs = [e for log in logs for e in (log.get("logs") or [])]
        codes = [e.get("exit_code") for e in executor_logs if isinstance(e.get("exit_code"), int)]
        self.worker_exit_code: int | None = codes[-1] if codes else None
        worker_log = [str(e.get("stderr") or "") for e in executor_logs]
        log_text = worker_log[-1] if worker_log else ""
        self.tool_exit_code = tool_log.exit_code(log_text)
        # The tool's own stderr where the worker's log (the task's stderr) has it, else the end
        # of that log (which the node serves in full as the task's stderr).
        tool = tool_log.stderr(log_text)
        self.stderr_tail = (log_text if tool is None else tool).rstrip("\n")[-_TAIL:]
        self.system_logs = [str(s) for log in logs for s in (log.get("system_logs") or [])]

    @property
    def exit_code(self) -> int | None:
        """The tool's exit code if the worker log tells it, else the worker's."""
        return self.tool_exit_code if self.tool_exit_code is not None else self.worker_exit_code

    def describe(self) -> str:
        if self.exit_code is not None:
            what = f"exited with code {self.exit_code}"
            worker = self.worker_exit_code
            if self.tool_exit_code is not None and worker is not None and worker != self.exit_code:
                what += f" (the Toil worker with {worker})"
        else:
            what = f"ended {self.state}"
            if self.system_logs:
                what += ": " + "; ".join(self.system_logs[-3:])
        text = f"step {self.step} (TES task {self.task_id}) {what}"
        if self.stderr_tail:
            text += f"; stderr tail:\n{self.stderr_tail}"
        return text


def failed_tasks(endpoint: TesEndpoint, tool_log: ToolLog) -> list[StepFailure]:
    """The run's tasks that ended in an error, oldest first."""
    found: list[StepFailure] = []
    with endpoint.client(timeout=60.0, retries=4) as client:
        for state in ("EXECUTOR_ERROR", "SYSTEM_ERROR"):
            for task in client.iter_tasks(
                view="FULL", state=state, tags={RUN_TAG: endpoint.run_id}
            ):
                found.append(StepFailure(task, tool_log))
    found.sort(key=lambda f: f.created)
    return found


# -- the adapters' common part ----------------------------------------------------------------
class ToilLeaderAdapter(EngineAdapter):
    """An adapter that runs one Toil runner for a run, its jobs tasks on the node's TES."""

    engine = "toil"
    settings_model: ClassVar[type[EngineSettings]] = ToilBaseSettings
    parameters_model: ClassVar[type[EngineParameters]] = ToilRunParameters

    settings: ToilBaseSettings

    adapter_id: ClassVar[str]
    """The adapter's entry-point name, which keys its settings (``engines.<id>``)."""
    runner: ClassVar[str]
    """The program this adapter stands for, as the run log names it (``toil-cwl-runner``)."""
    steps: ClassVar[str]
    """Which Toil jobs are the workflow's steps, for the run log ("each Toil job that runs a
    CommandLineTool")."""
    runner_module: ClassVar[str]
    """The module run as ``python -m`` for it (registers the batch system first)."""
    tool_log: ClassVar[ToolLog]
    """How its worker logs tell a failed tool's exit code and stderr."""
    work_folders: ClassVar[tuple[str, ...]] = ()
    """Folders of the run's work directory the runner needs, beyond Toil's."""
    unsupported_exit_code: ClassVar[int | None] = None
    """The runner's exit code for a workflow that asks for what this node cannot do."""

    def engine_version(self) -> str:
        return toil_version()

    def job_store(self, ctx: DriverContext) -> str:
        """The run's job-store locator (see :attr:`ToilBaseSettings.job_store`)."""
        if self.settings.job_store:
            return self.settings.job_store.replace("{run_id}", ctx.run.run_id)
        return "file:" + str(ctx.work_dir / "jobstore")

    def toil_arguments(self, ctx: DriverContext) -> list[str]:
        """The runner's Toil arguments for this run: batch system, job store, folders, the
        run's parameters, and how the leader logs."""
        assert ctx.tes is not None
        params: ToilRunParameters = ctx.run.engine_parameters  # type: ignore[assignment]
        work = ctx.work_dir
        argv = [
            "--batchSystem",
            BATCH_SYSTEM,
            "--jobStore",
            self.job_store(ctx),
            "--workDir",
            str(work / _TOIL_WORK),
            "--coordinationDir",
            str(work / _TOIL_COORDINATION),
            "--clean",
            params.clean,
            "--cleanWorkDir",
            params.clean_work_dir,
            "--retryCount",
            str(params.retry_count),
            "--stopOnFirstFailure",
            "true" if params.on_error == "stop" else "false",
            "--disableChaining",
            "false" if params.chaining else "true",
            # Each task's stderr holds its worker's log (the node serves it as the task's);
            # the batch system copies a failed task's tail into the leader's log.
            "--disableWorkerOutputCapture",
            "--logLevel",
            "DEBUG" if params.debug else "INFO",
            "--logColors",
            "false",
            "--publishWorkflowMetrics",
            "no",
        ]
        if params.max_jobs is not None:
            argv += ["--maxJobs", str(params.max_jobs)]
        if params.max_local_jobs is not None:
            argv += ["--maxLocalJobs", str(params.max_local_jobs)]
        if params.run_local_jobs_on_workers:
            argv.append("--runLocalJobsOnWorkers")
        if ctx.tes.uses_containers and self.settings.image:
            argv += ["--tesImage", self.settings.image]
        return argv

    @abstractmethod
    def command(self, ctx: DriverContext, inputs_file: Path) -> list[str]:
        """The runner's arguments for this run (without the program)."""

    @abstractmethod
    def prepare_inputs(self, ctx: DriverContext) -> dict[str, Any]:
        """The run's inputs as the runner takes them (relative paths made absolute)."""

    @abstractmethod
    def collect_outputs(self, ctx: DriverContext, reported: dict[str, Any]) -> dict[str, Any]:
        """The run's outputs, from the output object the runner printed ({} when it printed
        none, e.g. after a failure)."""

    def notes(self, ctx: DriverContext) -> list[str]:
        """System-log lines on how this run executes, whatever its outcome."""
        return []

    def environment(self, tes: TesEndpoint) -> dict[str, str]:
        """The leader's environment: this one without the node's own configuration
        (``WES_BRIDGE_*``), with the run's TES endpoint and its credentials."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WES_BRIDGE_")}
        env.update(tes.credential_env())
        # No per-user history database shared by every run of the node (~/.toil).
        env["TOIL_HISTORY"] = "False"
        return env

    def drive(self, ctx: DriverContext) -> DriverOutcome:
        from toil_wes_bridge.jobstore import job_store_problem

        if ctx.tes is None:
            return DriverOutcome(
                "SYSTEM_ERROR", system_logs=["Toil runs its steps on a TES; this node has none"]
            )
        notes = self.notes(ctx)
        locator = self.job_store(ctx)
        problem = job_store_problem(locator, ctx.tes)
        if problem is not None:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    problem + f" Configure engines.{self.adapter_id}.job_store with an object "
                    "store the TES's workers can reach.",
                    *notes,
                ],
            )
        for folder in (_TOIL_WORK, _TOIL_COORDINATION, *self.work_folders):
            (ctx.work_dir / folder).mkdir(parents=True, exist_ok=True)
        inputs_file = ctx.run_dir / "inputs.json"
        inputs_file.write_text(json.dumps(self.prepare_inputs(ctx)))
        argv = self.command(ctx, inputs_file)
        cmd = [self.runner, *argv]
        print(
            f"wes-bridge: Toil {toil_version()} ({self.runner}); {self.steps} is a task on "
            f"{ctx.tes.description or 'the TES'} ({ctx.tes.url})",
            *notes,
            sep="\nwes-bridge: ",
            file=sys.stderr,
            flush=True,
        )
        output_file = ctx.work_dir / "output.json"
        with open(output_file, "wb") as out:
            # In the driver's process group: cancelling the run signals the leader too.
            done = subprocess.run(
                [sys.executable, "-m", self.runner_module, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                env=self.environment(ctx.tes),
                cwd=ctx.work_dir,
                check=False,
            )
        rc = done.returncode
        outputs = self.collect_outputs(ctx, _output_object(output_file))
        if rc == 0:
            return DriverOutcome(
                "COMPLETE", outputs=outputs, exit_code=0, cmd=cmd, system_logs=notes
            )
        outcome = self._failed(ctx.tes, rc, outputs, cmd)
        outcome.system_logs[:0] = notes
        return outcome

    def _failed(
        self, tes: TesEndpoint, rc: int, outputs: dict[str, Any], cmd: list[str]
    ) -> DriverOutcome:
        if rc < 0:
            reason = f"was stopped by signal {-rc}"
        elif self.unsupported_exit_code is not None and rc == self.unsupported_exit_code:
            reason = "the workflow uses a requirement this node does not support"
        else:
            reason = "the workflow failed; see the run's stderr and its tasks"
        system_logs = [f"{self.runner} exited with code {rc}: {reason}"]
        try:
            failures = failed_tasks(tes, self.tool_log)
        except TesError as exc:
            failures = []
            system_logs.append(f"could not read the run's failed tasks from the TES: {exc}")
        shown = failures[-_MAX_REPORTED_FAILURES:]
        if len(failures) > len(shown):
            system_logs.append(f"{len(failures) - len(shown)} earlier failed tasks not shown")
        system_logs += [failure.describe() for failure in shown]
        exit_code = rc
        codes = [f.exit_code for f in failures if f.exit_code is not None]
        if codes:
            exit_code = codes[-1]  # the last failed step's, as the run's
        return DriverOutcome(
            "EXECUTOR_ERROR",
            outputs=outputs,
            exit_code=exit_code,
            cmd=cmd,
            system_logs=system_logs,
        )


def _output_object(output_file: Path) -> dict[str, Any]:
    """The JSON object the runner printed (also the run's stdout), or {}."""
    try:
        text = output_file.read_text(encoding="utf-8").strip()
    except OSError:
        return {}
    if not text:
        return {}
    print(text, flush=True)  # the run's stdout, as the runner's own
    try:
        loaded = json.loads(text)
    except ValueError:
        print("wes-bridge: Toil's output object is not JSON", file=sys.stderr, flush=True)
        return {}
    return loaded if isinstance(loaded, dict) else {}
