"""WDL for wes-bridge: miniwdl runs the workflow, and every WDL task is a task on the node's TES.

A separate distribution (``wes-bridge-wdl``) written only against wes-bridge's public plugin
API (:mod:`wes_bridge.plugin`, :mod:`wes_bridge.tes.client`): the ``wes_bridge.engines`` entry
point ``miniwdl`` is this adapter, and the ``miniwdl.plugin.container_backend`` entry point
``wes_bridge_tes`` is the miniwdl container backend that submits the tasks
(:mod:`wes_bridge_wdl.tes_backend`).

The driver runs ``python -m WDL run`` (miniwdl's own command line) with a configuration that
selects that backend, in ``work/miniwdl`` of the run directory; miniwdl's log is the run's
stderr. The WES ``workflow_params`` are the WDL inputs (keys ``<workflow>.<input>``, or as
miniwdl accepts them); relative ``File`` paths are resolved against the attachments.

Outputs
    The run's ``outputs`` are the WDL outputs (keys ``<workflow>.<output>``) with every ``File``
    replaced by ``{"class": "File", "location", "path", "basename", "size", "checksum":
    "sha1$..."}`` (a ``Directory`` likewise, without size and checksum). The files are in the
    run's outputs directory as ``<output>/<basename>``; inside arrays, maps, pairs and structs
    the index, key or member names the folders between (``parts/0/part-1.txt``).

Failures
    A failed task makes the run EXECUTOR_ERROR with that task's exit code, and ``system_logs``
    name the call, its TES task, exit code and the tail of its stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any

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

__all__ = ["MiniwdlAdapter", "MiniwdlParameters", "MiniwdlSettings"]

TES_TASK_FILE = "tes-task.json"
"""Written by the container backend in a task's miniwdl directory: ``{"id": <TES task id>}``
of its latest attempt."""
_VERSION_LINE = re.compile(r"^\s*version\s+(\S+)\s*$")
_STDERR_TAIL = 2000
_NODE_ERRORS = frozenset({"Interrupted", "Terminated"})
"""miniwdl errors that are not the workflow's doing (a task the TES lost, a signal)."""
_WORKFLOW_ERRORS = frozenset(
    {"ValidationError", "SyntaxError", "InputError", "ImportError", "EvalError", "OutputError"}
)


class MiniwdlSettings(EngineSettings):
    """Operator settings (``engines: {miniwdl: {...}}`` in the config file)."""

    default_image: str | None = None
    """The image of a task whose runtime names none (default: miniwdl's, ``ubuntu:20.04``).
    Where the TES runs tasks on the host it is recorded, not used."""
    max_call_concurrency: int = Field(100, ge=1)
    """The largest ``call_concurrency`` a run may ask for."""
    max_cpu: int | None = Field(None, ge=1)
    """The most CPUs one task may ask for (larger ``runtime.cpu`` is capped); default: this
    machine's."""
    max_memory_gb: float | None = Field(None, gt=0)
    """The most memory one task may ask for; default: this machine's."""


class MiniwdlParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters`` of WDL runs with miniwdl.

    Keys may also be given as ``miniwdl run`` flags (``{"--verbose": null}``).
    """

    @model_validator(mode="before")
    @classmethod
    def _from_command_line_flags(cls, data: Any) -> Any:
        def option(flag: str, value: Any) -> dict[str, Any] | None:
            if flag in ("verbose", "v"):
                return {"verbose": flag_value(value)}
            if flag in ("no-cache", "as-me", "no-color", "error-json"):
                return {}  # the node decides these
            return {flag.replace("-", "_"): value}

        return from_command_line(data, "-", option)

    call_concurrency: int = Field(20, ge=1)
    """WDL tasks (TES tasks) at once; the TES queues what does not fit."""
    verbose: bool = False
    """miniwdl's verbose log, with each task's stderr, in the run's stderr."""
    max_retries: int | None = Field(None, ge=0, le=100)
    """Retries of a failed task where its ``runtime.maxRetries`` does not say (default 0)."""


class MiniwdlAdapter(EngineAdapter):
    engine = "miniwdl"
    workflow_type = "WDL"
    workflow_type_versions = ("1.0", "1.1")
    settings_model = MiniwdlSettings
    parameters_model = MiniwdlParameters

    settings: MiniwdlSettings

    def engine_version(self) -> str:
        return version("miniwdl")

    def availability(self) -> Availability:
        backends = {ep.name for ep in entry_points(group="miniwdl.plugin.container_backend")}
        if "wes_bridge_tes" not in backends:
            return Availability(False, "miniwdl does not see the wes_bridge_tes container backend")
        try:
            version("miniwdl")
        except PackageNotFoundError:
            return Availability(False, "miniwdl is not installed")
        return Availability(True)

    def execution_description(self) -> str:
        return "miniwdl; every WDL task is a task on the node's TES"

    def validate(self, run: RunSpec) -> list[str]:
        problems = run.workflow_file_problems("the WDL document")
        if not isinstance(run.params, dict):
            problems.append("workflow_params must be a JSON object (the WDL inputs)")
        params: MiniwdlParameters = run.engine_parameters  # type: ignore[assignment]
        if params.call_concurrency > self.settings.max_call_concurrency:
            problems.append(
                f"call_concurrency may be at most {self.settings.max_call_concurrency} here"
            )
        if not problems:
            declared = document_version(run.workflow_path)
            wanted = run.workflow_type_version.strip().lower().removeprefix("v")
            if declared is None:
                problems.append(
                    "the WDL document declares no `version` (draft-2 is not supported); "
                    f"supported: {', '.join(self.workflow_type_versions)}"
                )
            elif declared != wanted:
                problems.append(
                    f"the WDL document is version {declared}, but workflow_type_version is "
                    f"{run.workflow_type_version!r}"
                )
        return problems

    def drive(self, ctx: DriverContext) -> DriverOutcome:
        run = ctx.run
        params: MiniwdlParameters = run.engine_parameters  # type: ignore[assignment]
        if ctx.tes is None or not ctx.tes.shared_filesystem:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    "miniwdl runs its tasks on a TES that shares this node's file system "
                    "(the embedded TES, or tes.shared_filesystem: true for an external one)"
                ],
            )
        workdir = ctx.work_dir / "miniwdl"
        inputs = ctx.work_dir / "wdl-inputs.json"
        inputs.write_text(json.dumps(run.params or {}), encoding="utf-8")
        cfg = ctx.work_dir / "miniwdl.cfg"
        cfg.write_text(self._config(params), encoding="utf-8")
        result = ctx.work_dir / "miniwdl-result.json"
        argv = [
            "run",
            str(run.workflow_path),
            "--input",
            str(inputs),
            "--dir",
            f"{workdir}/.",
            "--cfg",
            str(cfg),
            "-o",
            str(result),
            "--no-color",
            "--no-cache",
        ]
        if params.verbose:
            argv.append("--verbose")
        cmd = ["miniwdl", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WES_BRIDGE_", "MINIWDL"))}
        env.update(ctx.tes.credential_env())
        print(
            f"wes-bridge: miniwdl {self.engine_version()}; each WDL task is a task on "
            f"{ctx.tes.description or 'the TES'} ({ctx.tes.url})",
            file=sys.stderr,
            flush=True,
        )
        # miniwdl stops on SIGTERM (it cancels the running TES tasks first); the node sends it
        # to the driver's whole process group on a cancel.
        proc = subprocess.Popen(
            [sys.executable, "-m", "WDL", *argv],
            cwd=run.workflow_dir,  # relative File inputs are the attachments
            env=env,
            stdin=subprocess.DEVNULL,
        )
        cancelled = False

        def on_term(signum: int, _frame: Any) -> None:
            nonlocal cancelled
            cancelled = True
            proc.send_signal(signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            rc = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
        from .outputs import collect_outputs

        report = _read_json(result)
        outputs: dict[str, Any] = {}
        if rc == 0 and isinstance(report.get("outputs"), dict):
            outputs = collect_outputs(
                run.workflow_path, report["outputs"], ctx.outputs_dir, workdir
            )
            return DriverOutcome("COMPLETE", outputs=outputs, exit_code=0, cmd=cmd)
        if cancelled:
            return DriverOutcome("CANCELED", cmd=cmd, system_logs=["miniwdl was stopped"])
        return self._failure(report, rc, cmd)

    def _config(self, params: MiniwdlParameters) -> str:
        lines = [
            "[scheduler]",
            "container_backend = wes_bridge_tes",
            f"call_concurrency = {params.call_concurrency}",
            "[call_cache]",
            "get = false",
            "put = false",
            "[task_runtime]",
        ]
        defaults: dict[str, Any] = {}
        if self.settings.default_image:
            defaults["docker"] = self.settings.default_image
        if params.max_retries is not None:
            defaults["maxRetries"] = params.max_retries
        if defaults:
            lines.append(f"defaults = {json.dumps(defaults)}")
        lines.append("[wes_bridge]")
        if self.settings.max_cpu:
            lines.append(f"max_cpu = {self.settings.max_cpu}")
        if self.settings.max_memory_gb:
            lines.append(f"max_memory_gb = {self.settings.max_memory_gb}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _failure(report: dict[str, Any], rc: int, cmd: list[str]) -> DriverOutcome:
        """EXECUTOR_ERROR for a failed task (its exit code), SYSTEM_ERROR otherwise."""
        error = str(report.get("error") or "")
        cause = report.get("cause") if isinstance(report.get("cause"), dict) else {}
        assert isinstance(cause, dict)
        message = str(cause.get("message") or report.get("message") or "").strip()
        logs = [f"miniwdl exited with code {rc}: {error or 'no error report'}"]
        if message:
            logs[0] += f": {message}"
        exit_status = cause.get("exit_status")
        if error == "RunFailed" and cause.get("error") == "CommandFailed":
            call = str(cause.get("run") or "?")
            tes_task = _read_json(Path(str(cause.get("dir") or "")) / TES_TASK_FILE).get("id")
            line = f"task {call} (TES task {tes_task or '-'}) exited with code {exit_status}"
            stderr = _tail(cause.get("stderr_file"))
            if stderr:
                line += f"; stderr tail:\n{stderr}"
            logs.append(line)
            code = int(exit_status) if isinstance(exit_status, int) and exit_status else 1
            return DriverOutcome("EXECUTOR_ERROR", exit_code=code, cmd=cmd, system_logs=logs)
        kind = str(cause.get("error") or error)
        if kind in _NODE_ERRORS or (kind == "TesError" and not message.startswith("HTTP 4")):
            # The TES lost the task, or miniwdl was stopped by someone other than the node.
            return DriverOutcome("SYSTEM_ERROR", exit_code=rc, cmd=cmd, system_logs=logs)
        if error == "RunFailed" or kind in _WORKFLOW_ERRORS or kind == "TesError":
            # The document, its inputs or a task's outputs are wrong (or the TES refused a task
            # for what it names): the workflow's failure, not the node's.
            return DriverOutcome("EXECUTOR_ERROR", exit_code=rc or 1, cmd=cmd, system_logs=logs)
        return DriverOutcome("SYSTEM_ERROR", exit_code=rc, cmd=cmd, system_logs=logs)


def document_version(path: Path) -> str | None:
    """The ``version`` a WDL document declares (its first statement), or None (draft-2)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                match = _VERSION_LINE.match(line)
                return match.group(1) if match else None
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tail(path: Any) -> str:
    if not isinstance(path, str):
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _STDERR_TAIL))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
