"""Toil's WDL runner as a wes-bridge adapter: WDL 1.0 and 1.1, each task's command a TES task.

The entry point ``toil-wdl`` (engine ``toil``, workflow type ``WDL``). The driver runs
``toil-wdl-runner`` (as ``python -m toil_wes_bridge.wdl``) with the ``wes_bridge_tes`` batch
system, like the CWL adapter; each Toil job that runs a task's command is one TES task.

Where the command runs
    Toil 9 runs a WDL command only in Singularity or Docker. On a TES that runs tasks on the
    host (the node's embedded TES by default), the Toil worker of each task runs the command on
    the host instead, in the task's working directory (:mod:`toil_wes_bridge.host_container`),
    as the CWL adapter's tools run with ``--no-container``; a task's ``docker`` runtime value
    is then not used. On a TES that runs containers, the workers run in the Toil image and run
    each command as Toil does, in Docker or Singularity inside the task, which that TES must
    allow; the run's system logs say so.

Inputs and outputs
    ``workflow_params`` is the WDL inputs object (``{"hello.message": "..."}``); File and
    Directory inputs given as relative paths name attachments and are made absolute (one that
    leaves the attachments is refused, as are imports that are not attachments). The run's
    ``outputs`` is the workflow's outputs object with the keys as Toil reports them
    (``<workflow>.<output>``), each File replaced by a File object (``class``, ``location``,
    ``path``, ``basename``, ``size``, ``checksum``; :func:`wes_bridge.results.
    describe_outputs`), an Array[File] by a list of them (other nestings likewise); the files
    are in the run's ``outputs/`` as ``<output>/<basename>`` and ``<output>/<index>/<basename>``
    (the output's name without the workflow's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from wes_bridge.plugin import Availability, DriverContext, RunSpec

from .leader import ToilBaseSettings, ToilLeaderAdapter, ToilRunParameters, ToolLog, toil_version

if TYPE_CHECKING:
    import WDL

__all__ = [
    "WDL_TOOL_LOG",
    "ToilWdlAdapter",
    "ToilWdlParameters",
    "ToilWdlSettings",
    "WdlInputError",
    "task_exit_code",
    "task_stderr",
    "wdl_inputs",
]

# toil_wes_bridge.host_container.TOIL_MAJOR (not imported: that imports Toil's WDL runner)
_TOIL_MAJOR = "9"
# Where toil-wdl-runner exports the workflow's output files, under the run's work directory.
_EXPORTS = "wdl-outputs"


class ToilWdlSettings(ToilBaseSettings):
    """Operator settings of WDL runs (``engines: {toil-wdl: {...}}`` in the config file)."""


class ToilWdlParameters(ToilRunParameters):
    """Per-run ``workflow_engine_parameters`` accepted for Toil's WDL runs.

    Keys may also be given as ``toil-wdl-runner`` flags (``{"--retryCount": "2"}``,
    ``{"--wdlStrict": "true"}``, ``{"--allCallOutputs": null}``); where the outputs go and
    which container runs the commands (``--wdlOutputDirectory``, ``--wdlOutputFile``,
    ``--wdlOutputDialect``, ``--wdlContainer`` and their short forms) the node decides.
    """

    node_decides: ClassVar[frozenset[str]] = frozenset(
        {
            "wdlContainer",
            "container",
            "wdlOutputDirectory",
            "outputDirectory",
            "wdlOutputFile",
            "outputFile",
            "wdlOutputDialect",
            "outputDialect",
        }
    )
    flag_fields: ClassVar[dict[str, str]] = {
        "wdlStrict": "strict",
        "strict": "strict",
        "wdlQuantCheck": "quant_check",
        "quantCheck": "quant_check",
        "wdlAllCallOutputs": "all_call_outputs",
        "allCallOutputs": "all_call_outputs",
    }

    chaining: bool = True
    """Let one worker go on with a job's successors (toil --disableChaining when false). On
    for WDL: Toil's WDL runner makes several small glue jobs per call, which then share one
    worker process on the leader instead of starting one each (a fan-out of 20 runs in about
    two thirds of the time); each task's command is still one TES task."""
    strict: bool = False
    """Refuse a workflow with lint warnings (toil-wdl-runner --wdlStrict)."""
    quant_check: bool = True
    """Check optional/non-optional types strictly (toil-wdl-runner --wdlQuantCheck)."""
    all_call_outputs: bool = False
    """Report every call's outputs too, as ``<workflow>.<call>.<output>`` (toil-wdl-runner
    --wdlAllCallOutputs)."""


# -- reading the failed tasks back ------------------------------------------------------------
# miniwdl's CommandFailed, as the worker logs it when a task's command fails.
_TASK_EXIT = re.compile(r"task command failed with exit status (-?\d+)")
_ERROR_LOG = "====TASK ERROR LOG===="
# Each line of the command's stderr that Toil's WDL job copies into the worker's log.
_ERROR_LINE = re.compile(r"^\[[^\]]*\] \[[^\]]*\] \[E\] \[toil\.wdl\.wdltoil\] > ?(.*)$")


def task_exit_code(log_text: str) -> int | None:
    """The exit code of the failed task command in a worker's log, or None."""
    found = _TASK_EXIT.findall(log_text)
    return int(found[-1]) if found else None


def task_stderr(log_text: str) -> str | None:
    """The failed command's stderr as Toil's WDL job copied it into a worker's log, or None."""
    if _ERROR_LOG not in log_text:
        return None
    block = log_text.split(_ERROR_LOG)
    if len(block) < 3:
        return None
    lines = [m.group(1) for line in block[-2].splitlines() if (m := _ERROR_LINE.match(line))]
    return "\n".join(lines) + "\n"


WDL_TOOL_LOG = ToolLog(task_exit_code, task_stderr)
"""How a WDL worker's log tells its task command's exit code and stderr."""


# -- inputs -----------------------------------------------------------------------------------
class WdlInputError(ValueError):
    """The WDL document or its inputs cannot run here; the message says why."""


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _load(workflow: Path, root: Path) -> WDL.Tree.Document:
    """The WDL document, its imports read only from the run's attachments."""
    import WDL

    base = os.path.realpath(root)

    async def attachments_only(
        uri: str, path: list[str], importer: WDL.Tree.Document | None
    ) -> WDL.Tree.ReadSourceResult:
        refused = WdlInputError(f"import {uri!r} is not among the run's attachments")
        if urlsplit(uri).scheme not in ("", "file"):
            raise refused
        here = os.path.dirname(importer.pos.abspath) if importer is not None else base
        wanted = os.path.join(here, uri.removeprefix("file://"))
        if not _within(base, os.path.realpath(wanted)):
            raise refused
        abspath = await WDL.Tree.resolve_file_import(uri, path, importer)
        if not _within(base, os.path.realpath(abspath)):
            raise refused
        with open(abspath, encoding="utf-8") as source:
            return WDL.Tree.ReadSourceResult(source_text=source.read(), abspath=abspath)

    try:
        return WDL.load(str(workflow), read_source=attachments_only)
    except WdlInputError:
        raise
    except WDL.Error.ImportError as exc:
        # miniwdl wraps what the reader raised: say why the import was refused.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, WdlInputError):
            raise WdlInputError(f"{_describe(exc)}: {cause}") from exc
        raise WdlInputError(_describe(exc)) from exc
    except WDL.Error.MultipleValidationErrors as exc:
        raise WdlInputError("; ".join(_describe(e) for e in exc.exceptions)) from exc
    except (WDL.Error.SyntaxError, WDL.Error.ValidationError) as exc:
        raise WdlInputError(_describe(exc)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise WdlInputError(f"the WDL document cannot be read: {exc}") from exc


def _describe(exc: Exception) -> str:
    pos = getattr(exc, "pos", None)
    where = f"{os.path.basename(pos.abspath or pos.uri)}:{pos.line}:{pos.column}: " if pos else ""
    return f"{where}{exc}"


def _target(document: WDL.Tree.Document) -> WDL.Tree.Workflow | WDL.Tree.Task:
    """What Toil runs: the workflow, else the document's only task."""
    if document.workflow is not None:
        return document.workflow
    if len(document.tasks) == 1:
        return document.tasks[0]
    raise WdlInputError("the WDL document has no workflow and not exactly one task")


def wdl_inputs(run: RunSpec) -> dict[str, Any]:
    """The run's inputs for Toil: ``workflow_params`` checked against the document's inputs,
    relative File and Directory paths made absolute within the attachments.

    Raises :class:`WdlInputError` with what is wrong.
    """
    import WDL

    document = _load(run.workflow_path, run.workflow_dir)
    declared = str(document.wdl_version)
    if declared.removeprefix("v") != run.workflow_type_version.strip().lower().removeprefix("v"):
        raise WdlInputError(
            f"the WDL document is version {declared}, not {run.workflow_type_version}"
        )
    target = _target(document)
    root = os.path.realpath(run.workflow_dir)

    def absolute(value: WDL.Value.File | WDL.Value.Directory) -> str:
        path = str(value.value)
        if urlsplit(path).scheme or path.startswith("/"):
            return path
        resolved = os.path.realpath(os.path.join(root, path))
        if not _within(root, resolved):
            raise WdlInputError(f"input path {path!r} points outside the run's attachments")
        return resolved

    try:
        bindings = WDL.values_from_json(
            run.params, target.available_inputs, target.required_inputs, target.name
        )
    except WDL.Error.InputError as exc:
        raise WdlInputError(f"workflow_params: {exc}") from exc
    rewritten = WDL.Value.rewrite_env_paths(bindings, absolute)
    result = WDL.values_to_json(rewritten, target.name)
    assert isinstance(result, dict)
    return result


# -- outputs ----------------------------------------------------------------------------------
def _segment(key: Any) -> str:
    """A path segment for a key of a Map, Pair or struct (never empty, ``.``, ``..`` or with a
    slash)."""
    text = quote(str(key), safe="")
    return {"": "_", ".": "%2E", "..": "%2E%2E"}.get(text, text)


def _exported_files(value: Any, parts: list[str], exports: str) -> Iterator[tuple[list[str], str]]:
    """(position, path) of every output file Toil exported, anywhere in ``value``."""
    if isinstance(value, str):
        inside = os.path.isabs(value) and _within(exports, os.path.realpath(value))
        if inside and os.path.isfile(value):
            yield parts, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _exported_files(item, [*parts, str(index)], exports)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _exported_files(item, [*parts, _segment(key)], exports)


def _replace(value: Any, files: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return files.get(value, value)
    if isinstance(value, list):
        return [_replace(item, files) for item in value]
    if isinstance(value, dict):
        return {key: _replace(item, files) for key, item in value.items()}
    return value


def collect_wdl_outputs(
    reported: dict[str, Any], exports: Path, outputs_dir: Path
) -> dict[str, Any]:
    """The run's outputs from Toil's WDL outputs object (see the module documentation): each
    file Toil exported into ``exports`` linked into ``outputs_dir`` and described."""
    from wes_bridge.results import describe_outputs
    from wes_bridge.tes.paths import link_or_copy

    root = os.path.realpath(exports)
    by_path: dict[str, Any] = {}
    for key, value in reported.items():
        name = _segment(key.split(".", 1)[-1])
        for parts, path in _exported_files(value, [name], root):
            rel = "/".join([*parts, os.path.basename(path)])
            target = outputs_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(Path(path), target)
            by_path[path] = describe_outputs(outputs_dir, [rel])[rel]
    return {key: _replace(value, by_path) for key, value in reported.items()}


# -- the adapter ------------------------------------------------------------------------------
class ToilWdlAdapter(ToilLeaderAdapter):
    adapter_id = "toil-wdl"
    workflow_type = "WDL"
    workflow_type_versions = ("1.0", "1.1")
    settings_model = ToilWdlSettings
    parameters_model = ToilWdlParameters
    runner = "toil-wdl-runner"
    runner_module = "toil_wes_bridge.wdl"
    steps = "each Toil job that runs a WDL task's command"
    tool_log = WDL_TOOL_LOG
    work_folders = (_EXPORTS,)
    warm_modules = ("WDL",)

    settings: ToilWdlSettings

    def availability(self) -> Availability:
        if find_spec("toil") is None or find_spec("WDL") is None:
            return Availability(False, "Toil with its WDL support (toil[wdl]) is not installed")
        installed = toil_version()
        if installed.split(".")[0] != _TOIL_MAJOR:
            return Availability(
                False,
                f"WDL task commands run on the host only with Toil {_TOIL_MAJOR}.x "
                f"(installed: {installed})",
            )
        return Availability(True)

    def execution_description(self) -> str:
        return (
            "toil-wdl-runner with the wes_bridge_tes batch system: every Toil job that runs a "
            "WDL task's command is a task on the node's TES, which runs the command on the host "
            "(in Docker or Singularity inside the task where the TES runs containers); "
            "workflow glue runs on the leader"
        )

    def validate(self, run: RunSpec) -> list[str]:
        problems = run.workflow_file_problems("the WDL document")
        if problems:
            return problems
        try:
            wdl_inputs(run)
        except WdlInputError as exc:
            return [str(exc)]
        return []

    def prepare_inputs(self, ctx: DriverContext) -> dict[str, Any]:
        return wdl_inputs(ctx.run)

    def collect_outputs(self, ctx: DriverContext, reported: dict[str, Any]) -> dict[str, Any]:
        return collect_wdl_outputs(reported, ctx.work_dir / _EXPORTS, ctx.outputs_dir)

    def notes(self, ctx: DriverContext) -> list[str]:
        assert ctx.tes is not None
        if not ctx.tes.uses_containers:
            return []
        image = self.settings.image or "the Toil appliance of this Toil version"
        return [
            f"{ctx.tes.description or 'the TES'} runs its tasks in containers: each Toil "
            f"worker runs in {image}, and Toil runs each WDL task's command there in Docker "
            "or Singularity (the task's docker image), which that TES must allow; "
            "wes-bridge runs WDL commands on the host only on a TES that runs tasks on the host"
        ]

    def command(self, ctx: DriverContext, inputs_file: Path) -> list[str]:
        """``toil-wdl-runner``'s arguments for this run (without the program)."""
        assert ctx.tes is not None
        params: ToilWdlParameters = ctx.run.engine_parameters  # type: ignore[assignment]
        argv = [
            *self.toil_arguments(ctx),
            "--wdlOutputDirectory",
            str(ctx.work_dir / _EXPORTS),
            "--wdlOutputDialect",
            "cromwell",
            "--wdlStrict",
            str(params.strict),
            "--wdlQuantCheck",
            str(params.quant_check),
            "--wdlAllCallOutputs",
            str(params.all_call_outputs),
        ]
        if not ctx.tes.uses_containers:
            # The host worker (toil_wes_bridge.wdl_worker) runs what Toil would run in Docker
            # on the host: no Singularity on this machine's PATH can take it instead.
            argv += ["--wdlContainer", "docker"]
        return [*argv, str(ctx.run.workflow_path), str(inputs_file)]
