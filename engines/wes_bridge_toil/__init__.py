"""Toil adapters for wes-bridge: CWL and WDL with Toil, every step a task on the node's TES.

Registered through the ``wes_bridge.engines`` entry points ``toil`` (CWL v1.0-v1.2,
:class:`ToilAdapter`) and ``toil-wdl`` (WDL 1.0 and 1.1, :class:`ToilWdlAdapter`), both of the
engine ``toil``: a run chooses Toil with the WES field ``workflow_engine=toil`` and gets the
adapter of its workflow type (cwltool stays the default engine for CWL).

Both run a Toil runner in a child process with the ``wes_bridge_tes`` batch system
(:mod:`toil_wes_bridge`): each Toil job that runs a step is one TES task tagged with the run, so
the node lists it among the run's tasks; workflow glue runs on the leader. What they share is in
:mod:`wes_bridge_toil.leader`; the WDL one is :mod:`wes_bridge_toil.wdl`.

CWL
    ``toil-cwl-runner`` (as ``python -m toil_wes_bridge.cwl``). cwltool's temporary and step
    output directories are under the run's ``work/``, final outputs go to ``outputs/``, and the
    CWL output object Toil prints is the run's outputs. On a TES without containers the tools
    run on the host (``--no-container``).
"""

from __future__ import annotations

import re
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

from wes_bridge_cwltool.inputs import InputError, absolutise_inputs

from wes_bridge.plugin import Availability, DriverContext, RunSpec, flag_value

from . import leader
from .leader import (
    BATCH_SYSTEM,
    ToilBaseSettings,
    ToilLeaderAdapter,
    ToilRunParameters,
    ToolLog,
    failed_tasks,
)
from .wdl import ToilWdlAdapter, ToilWdlParameters, ToilWdlSettings

__all__ = [
    "BATCH_SYSTEM",
    "CWL_TOOL_LOG",
    "StepFailure",
    "ToilAdapter",
    "ToilBaseSettings",
    "ToilParameters",
    "ToilSettings",
    "ToilWdlAdapter",
    "ToilWdlParameters",
    "ToilWdlSettings",
    "failed_tasks",
    "tool_exit_code",
    "tool_stderr",
]

# toil.cwl.cwltoil.CWL_UNSUPPORTED_REQUIREMENT_EXIT_CODE (not imported: the driver stays light)
_UNSUPPORTED_REQUIREMENT = 33
# Folders of the run's work directory: the parents of cwltool's temporary and step output
# directories.
_TMP, _OUT = "tmp", "out"


class ToilSettings(ToilBaseSettings):
    """Operator settings of CWL runs (``engines: {toil: {...}}`` in the config file)."""

    default_container: str | None = None
    """The image of a tool without a DockerRequirement (where the TES runs containers)."""


class ToilParameters(ToilRunParameters):
    """Per-run ``workflow_engine_parameters`` accepted for Toil's CWL runs.

    Keys may also be given as ``toil-cwl-runner`` flags, the form Toil's WES client sends
    (``{"--retryCount": "2"}``, ``{"--logDebug": null}``, ``{"--not-strict": null}``,
    ``{"--stopOnFirstFailure": "true"}``, ``{"--disableChaining": "false"}``). ``--outdir``,
    ``--quiet``, ``--no-container`` and the log-level and log-colour flags are accepted and
    ignored: the node decides those. Any other flag (``--jobStore``, ``--batchSystem``, ...)
    is refused like any unknown key.
    """

    node_decides: ClassVar[frozenset[str]] = frozenset({"outdir", "quiet", "no-container"})
    flag_fields: ClassVar[dict[str, str]] = {
        "runCwlInternalJobsOnWorkers": "run_local_jobs_on_workers",
        "strict": "strict",
        "compute-checksum": "compute_checksum",
        "relax-path-checks": "relax_path_checks",
        "enable-dev": "enable_dev",
    }

    @classmethod
    def _language_option(cls, flag: str, value: Any) -> dict[str, Any] | None:
        if flag in ("not-strict", "non-strict"):
            return {"strict": not flag_value(value)}
        if flag == "no-compute-checksum":
            return {"compute_checksum": not flag_value(value)}
        return None

    strict: bool = True
    """Strict validation of the CWL documents (--not-strict when false)."""
    compute_checksum: bool = True
    """Report sha1 checksums of output files (--compute-checksum / --no-compute-checksum)."""
    relax_path_checks: bool = False
    """Allow file names with characters cwltool would refuse (--relax-path-checks)."""
    enable_dev: bool = False
    """Allow development versions of CWL (--enable-dev)."""


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


CWL_TOOL_LOG = ToolLog(tool_exit_code, tool_stderr)
"""How a CWL worker's log tells its tool's exit code and stderr."""


class StepFailure(leader.StepFailure):
    """A task of a CWL run that did not complete (:class:`wes_bridge_toil.leader.StepFailure`
    reading CWL worker logs)."""

    def __init__(self, task: dict[str, Any], tool_log: ToolLog = CWL_TOOL_LOG) -> None:
        super().__init__(task, tool_log)


class ToilAdapter(ToilLeaderAdapter):
    adapter_id = "toil"
    workflow_type = "CWL"
    workflow_type_versions = ("v1.0", "v1.1", "v1.2")
    settings_model = ToilSettings
    parameters_model = ToilParameters
    runner = "toil-cwl-runner"
    runner_module = "toil_wes_bridge.cwl"
    steps = "each Toil job that runs a CommandLineTool"
    tool_log = CWL_TOOL_LOG
    work_folders = (_TMP, _OUT)
    unsupported_exit_code = _UNSUPPORTED_REQUIREMENT

    settings: ToilSettings

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

    def prepare_inputs(self, ctx: DriverContext) -> dict[str, Any]:
        return absolutise_inputs(ctx.run.params, ctx.run.workflow_dir)

    def collect_outputs(self, ctx: DriverContext, reported: dict[str, Any]) -> dict[str, Any]:
        # Toil's CWL output object already describes the files it wrote into outputs/.
        return reported

    def command(self, ctx: DriverContext, inputs_file: Path) -> list[str]:
        """``toil-cwl-runner``'s arguments for this run (without the program)."""
        assert ctx.tes is not None
        run = ctx.run
        params: ToilParameters = run.engine_parameters  # type: ignore[assignment]
        work = ctx.work_dir
        workflow = str(run.workflow_path)
        if run.workflow_fragment:
            workflow += "#" + run.workflow_fragment
        argv = [
            *self.toil_arguments(ctx),
            "--tmpdir-prefix",
            str(work / _TMP) + "/",
            "--tmp-outdir-prefix",
            str(work / _OUT) + "/",
            "--outdir",
            str(ctx.outputs_dir),
            "--compute-checksum" if params.compute_checksum else "--no-compute-checksum",
        ]
        if not params.strict:
            argv.append("--not-strict")
        if params.relax_path_checks:
            argv.append("--relax-path-checks")
        if params.enable_dev:
            argv.append("--enable-dev")
        if ctx.tes.uses_containers:
            if self.settings.default_container:
                argv += ["--default-container", self.settings.default_container]
        else:
            argv.append("--no-container")
        return [*argv, workflow, str(inputs_file)]
