"""Toil adapter for wes-bridge: CWL v1.0-v1.2 with Toil, every step a task on the node's TES.

Registered through the ``wes_bridge.engines`` entry point ``toil`` and chosen per run with the
WES field ``workflow_engine=toil`` (cwltool stays the default engine for CWL).

The driver runs ``toil-cwl-runner`` (as ``python -m toil_wes_bridge.cwl``, which registers the
batch system first) in a child process, in the driver's process group, so that cancelling the
run signals it too; Toil then cancels its tasks on the way out, and the node cancels whatever
is left by the run's tag. Toil's batch system is ``wes_bridge_tes``
(:mod:`toil_wes_bridge.batch_system`): each Toil job that runs a CommandLineTool is one TES
task tagged with the run, so the node lists it among the run's tasks. Jobs Toil keeps on the
leader (workflow glue, ExpressionTools) run in the driver's process group on this machine.

Where things go
    The job store (``file:``, in the run's work directory unless the operator configures an
    object store), Toil's work and coordination directories and cwltool's temporary
    directories are under the run's ``work/``; final outputs go to ``outputs/``; the leader's
    log (with each failed task's stderr tail) is the run's stderr, and the output object
    Toil prints is the run's stdout as well as the run's outputs.

Failures
    A run that fails is an EXECUTOR_ERROR whose exit code is the failing tool's (read from the
    failed task's log), else the Toil worker's, else ``toil-cwl-runner``'s; its system logs
    name each failed task: ``step NAME (TES task ID) exited with code N; stderr tail: ...``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from wes_bridge_cwltool.inputs import InputError, absolutise_inputs

from wes_bridge.plugin import (
    RUN_TAG,
    Availability,
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    EngineParameters,
    EngineSettings,
    RunSpec,
    TesEndpoint,
    flag_value,
    from_command_line,
)
from wes_bridge.tes.client import TesError

__all__ = [
    "StepFailure",
    "ToilAdapter",
    "ToilParameters",
    "ToilSettings",
    "tool_exit_code",
    "tool_stderr",
]

BATCH_SYSTEM = "wes_bridge_tes"
# toil.cwl.cwltoil.CWL_UNSUPPORTED_REQUIREMENT_EXIT_CODE (not imported: the driver stays light)
_UNSUPPORTED_REQUIREMENT = 33
_TAIL = 2000
_MAX_REPORTED_FAILURES = 10
# Folders of the run's work directory: Toil's work and coordination directories, and the
# parents of cwltool's temporary and step output directories.
_TOIL_WORK, _TOIL_COORDINATION, _TMP, _OUT = "toil", "toil-coordination", "tmp", "out"
_WORK_FOLDERS = (_TOIL_WORK, _TOIL_COORDINATION, _TMP, _OUT)
_CLEAN = Literal["always", "onError", "never", "onSuccess"]


class ToilSettings(EngineSettings):
    """Operator settings (``engines: {toil: {...}}`` in the config file)."""

    job_store: str | None = None
    """A Toil job-store locator for every run, ``{run_id}`` replaced by the run's id (e.g.
    ``aws:us-west-2:wes-{run_id}``). Default: a ``file:`` job store in the run's work
    directory, which needs a TES whose executors share this file system without containers
    (the embedded TES with host execution)."""
    image: str | None = None
    """The image of the Toil worker tasks where the TES runs containers. Default: the Toil
    appliance of the installed Toil version."""
    default_container: str | None = None
    """The image of a tool without a DockerRequirement (where the TES runs containers)."""


# Flags of toil-cwl-runner that Toil's WES client (and others) may forward but that the node
# decides: where outputs go and how the engine's log looks.
_NODE_DECIDES = frozenset(
    {
        "outdir",
        "quiet",
        "no-container",
        "logColors",
        "disableProgress",
        "logInfo",
        "logWarning",
        "logError",
        "logCritical",
        "logOff",
    }
)
# flag (without "--") -> field, for flags that set a field as they are
_FLAG_FIELDS = {
    "maxJobs": "max_jobs",
    "maxLocalJobs": "max_local_jobs",
    "retryCount": "retry_count",
    "runLocalJobsOnWorkers": "run_local_jobs_on_workers",
    "runCwlInternalJobsOnWorkers": "run_local_jobs_on_workers",
    "clean": "clean",
    "cleanWorkDir": "clean_work_dir",
    "strict": "strict",
    "compute-checksum": "compute_checksum",
    "relax-path-checks": "relax_path_checks",
    "enable-dev": "enable_dev",
    "logDebug": "debug",
}


class ToilParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters`` accepted for Toil runs.

    Keys may also be given as ``toil-cwl-runner`` flags, the form Toil's WES client sends
    (``{"--retryCount": "2"}``, ``{"--logDebug": null}``, ``{"--not-strict": null}``,
    ``{"--stopOnFirstFailure": "true"}``, ``{"--disableChaining": "false"}``). ``--outdir``,
    ``--quiet``, ``--no-container`` and the log-level and log-colour flags are accepted and
    ignored: the node decides those. Any other flag (``--jobStore``, ``--batchSystem``, ...)
    is refused like any unknown key.
    """

    @model_validator(mode="before")
    @classmethod
    def _from_command_line_flags(cls, data: Any) -> Any:
        return from_command_line(data, "--", cls._option)

    @classmethod
    def _option(cls, flag: str, value: Any) -> dict[str, Any] | None:
        if flag in _NODE_DECIDES:
            return {}
        if flag in _FLAG_FIELDS:
            field_name = _FLAG_FIELDS[flag]
            is_bool = cls.model_fields[field_name].annotation is bool
            return {field_name: flag_value(value) if is_bool else value}
        if flag in ("not-strict", "non-strict"):
            return {"strict": not flag_value(value)}
        if flag == "no-compute-checksum":
            return {"compute_checksum": not flag_value(value)}
        if flag == "stopOnFirstFailure":
            return {"on_error": "stop" if flag_value(value) else "continue"}
        if flag == "disableChaining":
            return {"chaining": not flag_value(value)}
        if flag == "logLevel":
            return {"debug": str(value).strip().lower() in ("debug", "trace")}
        return None  # refused, under its own name

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
    strict: bool = True
    """Strict validation of the CWL documents (--not-strict when false)."""
    compute_checksum: bool = True
    """Report sha1 checksums of output files (--compute-checksum / --no-compute-checksum)."""
    relax_path_checks: bool = False
    """Allow file names with characters cwltool would refuse (--relax-path-checks)."""
    enable_dev: bool = False
    """Allow development versions of CWL (--enable-dev)."""
    run_local_jobs_on_workers: bool = False
    """Run workflow glue and ExpressionTools as TES tasks too (toil --runLocalJobsOnWorkers)."""
    chaining: bool = False
    """Let one worker task go on with a job's successors (fewer tasks, but a task then runs
    several steps, and the run's task list names only the first); toil --disableChaining
    when false."""
    clean: _CLEAN = "onSuccess"
    """When the job store is deleted (toil --clean)."""
    clean_work_dir: _CLEAN = "always"
    """When each job's work directory is deleted (toil --cleanWorkDir)."""
    debug: bool = False
    """Toil and cwltool log at DEBUG level, in the run's stderr and each task's (--logDebug)."""


# -- reading the failed tasks back ------------------------------------------------------------
_TOOL_EXIT = re.compile(r"\[job [^\]]*\] exited with status: (-?\d+)")
# What Toil's CWL job logs when its tool failed, up to the next log record of the worker.
_TOOL_STDERR = re.compile(
    r"Failed command standard error:\n(.*?)(?=^\[\d{4}-\d\d-\d\dT|\Z)", re.DOTALL | re.MULTILINE
)


def tool_exit_code(log_text: str) -> int | None:
    """The exit code cwltool reported for the tool in a worker's log, or None."""
    found = _TOOL_EXIT.findall(log_text)
    return int(found[-1]) if found else None


def tool_stderr(log_text: str) -> str | None:
    """The failed tool's stderr as Toil copied it into a worker's log, or None."""
    found = _TOOL_STDERR.findall(log_text)
    return str(found[-1]) if found else None


class StepFailure:
    """A task of the run that did not complete, as its run log reports it."""

    def __init__(self, task: dict[str, Any]) -> None:
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
        self.tool_exit_code = tool_exit_code(log_text)
        # The tool's own stderr where the worker's log (the task's stderr) has it, else the end
        # of that log (which the node serves in full as the task's stderr).
        tool = tool_stderr(log_text)
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


def failed_tasks(endpoint: TesEndpoint) -> list[StepFailure]:
    """The run's tasks that ended in an error, oldest first."""
    found: list[StepFailure] = []
    with endpoint.client(timeout=60.0, retries=4) as client:
        for state in ("EXECUTOR_ERROR", "SYSTEM_ERROR"):
            for task in client.iter_tasks(
                view="FULL", state=state, tags={RUN_TAG: endpoint.run_id}
            ):
                found.append(StepFailure(task))
    found.sort(key=lambda f: f.created)
    return found


# -- the adapter ------------------------------------------------------------------------------
def _toil_version() -> str:
    try:
        return version("toil")
    except PackageNotFoundError:
        return "unknown"


class ToilAdapter(EngineAdapter):
    engine = "toil"
    workflow_type = "CWL"
    workflow_type_versions = ("v1.0", "v1.1", "v1.2")
    settings_model = ToilSettings
    parameters_model = ToilParameters

    settings: ToilSettings

    def engine_version(self) -> str:
        return _toil_version()

    def availability(self) -> Availability:
        if find_spec("toil") is None or find_spec("toil.cwl.cwltoil") is None:
            return Availability(False, "Toil with its CWL support (toil[cwl]) is not installed")
        if shutil.which("node") is None and shutil.which("nodejs") is None:
            return Availability(True, "Node.js is not on PATH: CWL JavaScript expressions fail")
        return Availability(True)

    def execution_description(self) -> str:
        return (
            "toil-cwl-runner with the wes_bridge_tes batch system: every Toil job that runs a "
            "CommandLineTool is a task on the node's TES; workflow glue runs on the leader"
        )

    def validate(self, run: RunSpec) -> list[str]:
        try:
            absolutise_inputs(run.params, run.workflow_dir)
        except InputError as exc:
            return [str(exc)]
        return []

    def job_store(self, ctx: DriverContext) -> str:
        """The run's job-store locator (see :attr:`ToilSettings.job_store`)."""
        if self.settings.job_store:
            return self.settings.job_store.replace("{run_id}", ctx.run.run_id)
        return "file:" + str(ctx.work_dir / "jobstore")

    def command(self, ctx: DriverContext, job_file: Path) -> list[str]:
        """``toil-cwl-runner``'s arguments for this run (without the program)."""
        assert ctx.tes is not None
        run = ctx.run
        params: ToilParameters = run.engine_parameters  # type: ignore[assignment]
        work = ctx.work_dir
        workflow = str(run.workflow_path)
        if run.workflow_fragment:
            workflow += "#" + run.workflow_fragment
        argv = [
            "--batchSystem",
            BATCH_SYSTEM,
            "--jobStore",
            self.job_store(ctx),
            "--workDir",
            str(work / _TOIL_WORK),
            "--coordinationDir",
            str(work / _TOIL_COORDINATION),
            "--tmpdir-prefix",
            str(work / _TMP) + "/",
            "--tmp-outdir-prefix",
            str(work / _OUT) + "/",
            "--outdir",
            str(ctx.outputs_dir),
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
            "--compute-checksum" if params.compute_checksum else "--no-compute-checksum",
        ]
        if params.max_jobs is not None:
            argv += ["--maxJobs", str(params.max_jobs)]
        if params.max_local_jobs is not None:
            argv += ["--maxLocalJobs", str(params.max_local_jobs)]
        if not params.strict:
            argv.append("--not-strict")
        if params.relax_path_checks:
            argv.append("--relax-path-checks")
        if params.enable_dev:
            argv.append("--enable-dev")
        if params.run_local_jobs_on_workers:
            argv.append("--runLocalJobsOnWorkers")
        if ctx.tes.uses_containers:
            if self.settings.image:
                argv += ["--tesImage", self.settings.image]
            if self.settings.default_container:
                argv += ["--default-container", self.settings.default_container]
        else:
            argv.append("--no-container")
        return [*argv, workflow, str(job_file)]

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
        locator = self.job_store(ctx)
        problem = job_store_problem(locator, ctx.tes)
        if problem is not None:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    problem + " Configure engines.toil.job_store with an object store the "
                    "TES's workers can reach."
                ],
            )
        run = ctx.run
        for folder in _WORK_FOLDERS:  # Toil and cwltool take these as given
            (ctx.work_dir / folder).mkdir(parents=True, exist_ok=True)
        job_file = ctx.run_dir / "inputs.json"
        job_file.write_text(json.dumps(absolutise_inputs(run.params, run.workflow_dir)))
        argv = self.command(ctx, job_file)
        cmd = ["toil-cwl-runner", *argv]
        output_file = ctx.work_dir / "cwl-output.json"
        print(
            f"wes-bridge: Toil {_toil_version()}; each CommandLineTool job is a task on "
            f"{ctx.tes.description or 'the TES'} ({ctx.tes.url})",
            file=sys.stderr,
            flush=True,
        )
        with open(output_file, "wb") as out:
            # In the driver's process group: cancelling the run signals the leader too.
            done = subprocess.run(
                [sys.executable, "-m", "toil_wes_bridge.cwl", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                env=self.environment(ctx.tes),
                cwd=ctx.work_dir,
                check=False,
            )
        rc = done.returncode
        outputs = self._outputs(output_file)
        if rc == 0:
            return DriverOutcome("COMPLETE", outputs=outputs, exit_code=0, cmd=cmd)
        return self._failed(ctx.tes, rc, outputs, cmd)

    @staticmethod
    def _outputs(output_file: Path) -> dict[str, Any]:
        try:
            text = output_file.read_text(encoding="utf-8").strip()
        except OSError:
            return {}
        if not text:
            return {}
        print(text, flush=True)  # the run's stdout, as toil-cwl-runner's own
        try:
            loaded = json.loads(text)
        except ValueError:
            print("wes-bridge: Toil's output object is not JSON", file=sys.stderr, flush=True)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    @staticmethod
    def _failed(
        tes: TesEndpoint, rc: int, outputs: dict[str, Any], cmd: list[str]
    ) -> DriverOutcome:
        if rc < 0:
            reason = f"was stopped by signal {-rc}"
        elif rc == _UNSUPPORTED_REQUIREMENT:
            reason = "the workflow uses a requirement this node does not support"
        else:
            reason = "the workflow failed; see the run's stderr and its tasks"
        system_logs = [f"toil-cwl-runner exited with code {rc}: {reason}"]
        try:
            failures = failed_tasks(tes)
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
