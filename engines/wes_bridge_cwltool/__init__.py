"""cwltool adapter for wes-bridge: CWL v1.0-v1.2 with the reference runner.

Registered through the ``wes_bridge.engines`` entry point ``cwltool``, like any third-party
adapter, and written only against :mod:`wes_bridge.plugin`.

The driver runs cwltool with one change made through cwltool's extension points
(:mod:`wes_bridge_cwltool.jobs`): every CommandLineTool job is a GA4GH TES task on the node's
TES (:mod:`wes_bridge_cwltool.tes_job`), tagged with the run, so the node lists it among the
run's tasks and cancels it with the run. ExpressionTools and the workflow logic stay in the
driver; ``parallel`` submits every job that is ready at once and leaves the queueing to the TES.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from importlib.metadata import version
from typing import Any, Literal

from pydantic import Field, model_validator

from wes_bridge.plugin import (
    Availability,
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    EngineParameters,
    EngineSettings,
    RunSpec,
    flag_value,
    from_command_line,
)

from .inputs import InputError, absolutise_inputs

__all__ = ["CwltoolAdapter", "CwltoolParameters", "CwltoolSettings"]


class CwltoolSettings(EngineSettings):
    """Operator settings (``engines: {cwltool: {...}}`` in the config file)."""

    default_container: str = "docker.io/library/debian:bookworm-slim"
    """The image of a tool without a DockerRequirement (where the TES runs containers)."""
    max_parallel_steps: int = Field(64, ge=1, le=1024)
    """With ``parallel``: steps of one run in flight on the TES at once (counted in cores)."""
    tes_unreachable_seconds: float = Field(3600.0, gt=0)
    """How long a run waits for a TES it cannot reach (a node restarting) before it fails."""


# Command-line flags that Toil's WES client (and others) forward from their own command line
# but that the node decides: where outputs go, how verbose the engine log is, whether
# containers are used.
_NODE_DECIDES = frozenset({"outdir", "quiet", "no_container", "verbose"})
_NEGATIONS = {"non_strict": "strict", "no_compute_checksum": "compute_checksum"}


class CwltoolParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters`` accepted for cwltool runs.

    Keys may also be given as cwltool command-line flags (``{"--parallel": null}``,
    ``{"--on-error": "continue"}``, ``{"--non-strict": null}``), the form Toil's WES client
    sends. ``--outdir``, ``--quiet``, ``--verbose`` and ``--no-container`` are accepted and
    ignored: the node decides those. Any other flag is refused like any unknown key.
    """

    @model_validator(mode="before")
    @classmethod
    def _from_command_line_flags(cls, data: Any) -> Any:
        return from_command_line(data, "--", cls._option)

    @classmethod
    def _option(cls, flag: str, value: Any) -> dict[str, Any]:
        name = flag.replace("-", "_")
        if name in _NODE_DECIDES:
            return {}
        if name in _NEGATIONS:
            return {_NEGATIONS[name]: not flag_value(value)}
        field = cls.model_fields.get(name)
        if field is not None and field.annotation is bool:
            return {name: flag_value(value)}  # a bare flag (null) is set
        return {name: value}

    parallel: bool = False
    """Run independent jobs (and scatter jobs) in parallel (cwltool --parallel)."""
    strict: bool = True
    """Strict validation of the CWL documents (cwltool --strict / --non-strict)."""
    on_error: Literal["stop", "continue"] = "stop"
    """What to do when a job fails (cwltool --on-error)."""
    compute_checksum: bool = True
    """Report sha1 checksums of output files (cwltool --compute-checksum)."""
    relax_path_checks: bool = False
    """Allow file names with characters cwltool would refuse (cwltool --relax-path-checks)."""
    enable_dev: bool = False
    """Allow development versions of CWL (cwltool --enable-dev)."""
    debug: bool = False
    """Verbose engine log in the run's stderr (cwltool --debug)."""


def _keep_loaded_schemas() -> None:
    """cwltool's schema hook; the standard schemas are already loaded (see ``warm``)."""


class CwltoolAdapter(EngineAdapter):
    engine = "cwltool"
    workflow_type = "CWL"
    workflow_type_versions = ("v1.0", "v1.1", "v1.2")
    settings_model = CwltoolSettings
    parameters_model = CwltoolParameters
    warm_modules = ("wes_bridge_cwltool.warm",)

    settings: CwltoolSettings

    def engine_version(self) -> str:
        return version("cwltool")

    def availability(self) -> Availability:
        if shutil.which("node") is None and shutil.which("nodejs") is None:
            return Availability(True, "Node.js is not on PATH: CWL JavaScript expressions fail")
        return Availability(True)

    def execution_description(self) -> str:
        return "every CommandLineTool job is a task on the node's TES"

    def validate(self, run: RunSpec) -> list[str]:
        try:
            absolutise_inputs(run.params, run.workflow_dir)
        except InputError as exc:
            return [str(exc)]
        return []

    def drive(self, ctx: DriverContext) -> DriverOutcome:
        from cwltool.argparser import arg_parser
        from cwltool.context import LoadingContext
        from cwltool.main import main as cwltool_main

        from .jobs import make_tool_factory
        from .tes_job import TesParallelExecutor, TesRun

        run = ctx.run
        if ctx.tes is None or not ctx.tes.shared_filesystem:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    "cwltool runs its steps on a TES that shares this node's file system "
                    "(the embedded TES, or tes.shared_filesystem: true for an external one)"
                ],
            )
        params: CwltoolParameters = run.engine_parameters  # type: ignore[assignment]
        host_layout = ctx.tes.shared_filesystem and not ctx.tes.uses_containers
        layout = (
            # Tasks run on this file system, without containers: cwltool's host paths.
            ["--no-container"]
            if host_layout
            # CWL's container layout for every tool (the TES job runner replaces the container
            # runtime; this image is only the one of tools without their own).
            else ["--default-container", self.settings.default_container]
        )
        job_file = ctx.run_dir / "inputs.json"
        job_file.write_text(json.dumps(absolutise_inputs(run.params, run.workflow_dir)))
        workflow = str(run.workflow_path)
        if run.workflow_fragment:
            workflow += "#" + run.workflow_fragment
        argv = [
            *layout,
            "--outdir",
            str(ctx.outputs_dir),
            "--tmpdir-prefix",
            str(ctx.work_dir / "tmp") + "/",
            "--tmp-outdir-prefix",
            str(ctx.work_dir / "out") + "/",
            "--strict" if params.strict else "--non-strict",
            "--on-error",
            params.on_error,
            "--compute-checksum" if params.compute_checksum else "--no-compute-checksum",
        ]
        if params.relax_path_checks:
            argv.append("--relax-path-checks")
        if params.enable_dev:
            argv.append("--enable-dev")
        if params.debug:
            argv.append("--debug")
        argv += [workflow, str(job_file)]
        log = logging.getLogger("wes_bridge.cwltool")
        print(
            f"wes-bridge: each CommandLineTool job is a task on {ctx.tes.description} "
            f"({ctx.tes.url})",
            file=sys.stderr,
            flush=True,
        )

        args = arg_parser().parse_args(argv)
        loading = LoadingContext(vars(args))
        tes = TesRun(
            ctx.tes,
            self.settings.default_container,
            self.settings.tes_unreachable_seconds,
            host_layout,
        )
        loading.construct_tool_object = make_tool_factory(tes)
        captured = io.StringIO()
        # A schema callback keeps cwltool from dropping the schemas the warm process parsed
        # (parsing them again costs most of a second per run).
        try:
            rc = cwltool_main(
                args=args,
                loadingContext=loading,
                stdout=captured,
                custom_schema_callback=_keep_loaded_schemas,
                executor=(
                    TesParallelExecutor(self.settings.max_parallel_steps)
                    if params.parallel
                    else None
                ),
            )
        finally:
            tes.client.close()
        if params.parallel:
            argv.insert(0, "--parallel")
        cmd = ["cwltool", *argv]
        outputs: dict[str, Any] = {}
        text = captured.getvalue().strip()
        if text:
            try:
                loaded = json.loads(text)
                outputs = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                log.warning("cwltool printed an output object that is not JSON")
        if rc == 0:
            return DriverOutcome("COMPLETE", outputs=outputs, exit_code=0, cmd=cmd)
        reason = {33: "the workflow uses a requirement this node does not support"}.get(
            rc, "the workflow failed; see the run's stderr and its tasks"
        )
        system_logs = [f"cwltool exited with code {rc}: {reason}"]
        exit_code = rc
        for failure in tes.failures:
            what = (
                f"exited with code {failure.exit_code}"
                if failure.exit_code is not None
                else f"ended {failure.state}"
            )
            system_logs.append(
                f"step {failure.step} (TES task {failure.task_id or '-'}) {what}"
                + (f"; stderr tail:\n{failure.stderr_tail}" if failure.stderr_tail else "")
            )
        if tes.failures and tes.failures[0].exit_code is not None:
            exit_code = tes.failures[0].exit_code  # the failing step's, as the run's
        return DriverOutcome(
            "EXECUTOR_ERROR",
            outputs=outputs,
            exit_code=exit_code,
            cmd=cmd,
            system_logs=system_logs,
        )
