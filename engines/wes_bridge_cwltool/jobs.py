"""The seam between cwltool and the place a job runs.

:class:`ReportingCommandLineTool` replaces cwltool's CommandLineTool through the loading
context's ``construct_tool_object`` hook (cwltool's own extension point). It wraps whatever job
runner cwltool would pick so that every job is reported as a task of the run: command line,
stdout/stderr files, start and end, exit code.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol

from cwltool.command_line_tool import CommandLineTool
from cwltool.context import LoadingContext, RuntimeContext
from cwltool.job import JobBase
from cwltool.process import Process
from cwltool.workflow import default_make_tool
from ruamel.yaml.comments import CommentedMap

from wes_bridge.plugin import TaskReporter

__all__ = ["ReportingCommandLineTool", "make_tool_factory"]

_counter = itertools.count(1)
_counter_lock = threading.Lock()
_classes: dict[tuple[type[JobBase], int], type[JobBase]] = {}


def _task_id(name: str) -> str:
    with _counter_lock:
        n = next(_counter)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "job"
    return f"{n:04d}-{safe}"[:200]


def _reporting_job_class(base: type[JobBase], reporter: TaskReporter) -> type[JobBase]:
    key = (base, id(reporter))
    if key in _classes:
        return _classes[key]

    class ReportingJob(base):  # type: ignore[valid-type,misc]
        def _execute(
            self,
            runtime: list[str],
            env: MutableMapping[str, str],
            runtimeContext: RuntimeContext,
            monitor_function: Callable[[Any], None] | None = None,
        ) -> None:
            task_id = _task_id(self.name)
            popen: dict[str, Any] = {}
            status: dict[str, str] = {}

            def monitor(sproc: Any) -> None:
                popen["proc"] = sproc
                if monitor_function is not None:
                    monitor_function(sproc)

            original_callback: Callable[[Any, str], None] | None = getattr(
                self, "output_callback", None
            )

            def callback(outputs: Any, process_status: str) -> None:
                status["value"] = process_status
                if original_callback is not None:
                    original_callback(outputs, process_status)

            self.output_callback = callback
            stdout_log, stderr_log = reporter.log_paths(task_id)
            # Streams the tool does not capture itself go to the task's own log files instead
            # of the engine's stderr; captured ones are hard-linked there after the step.
            context = runtimeContext.copy()
            if not self.stdout:
                context.default_stdout = open(stdout_log, "wb")  # noqa: SIM115 - cwltool closes
            if not self.stderr:
                context.default_stderr = open(stderr_log, "wb")  # noqa: SIM115
            reporter.started(
                task_id,
                self.name,
                cmd=[str(c) for c in (*runtime, *self.command_line)],
                stdout=stdout_log,
                stderr=stderr_log,
            )
            try:
                super()._execute(runtime, env, context, monitor)
            finally:
                for declared, log_file in ((self.stdout, stdout_log), (self.stderr, stderr_log)):
                    if declared:
                        _link(Path(self.base_path_logs) / declared, log_file)
                proc = popen.get("proc")
                exit_code = proc.returncode if proc is not None else None
                ok = status.get("value") == "success"
                reporter.finished(
                    task_id,
                    "COMPLETE" if ok else "EXECUTOR_ERROR",
                    exit_code=exit_code,
                    system_logs=[] if ok else [f"cwltool status: {status.get('value')}"],
                )

    ReportingJob.__name__ = f"Reporting{base.__name__}"
    _classes[key] = ReportingJob
    return ReportingJob


def _link(source: Path, target: Path) -> None:
    # Another file system, or the tool did not write it: then there is no task log for it.
    with contextlib.suppress(OSError):
        os.link(source, target)


class ReportingCommandLineTool(CommandLineTool):
    reporter: TaskReporter

    def make_job_runner(self, runtimeContext: RuntimeContext) -> type[JobBase]:
        return _reporting_job_class(super().make_job_runner(runtimeContext), self.reporter)


class MakeTool(Protocol):
    """cwltool's ``LoadingContext.construct_tool_object`` signature."""

    def __call__(
        self,
        toolpath_object: CommentedMap,
        loadingContext: LoadingContext,
    ) -> Process: ...


def make_tool_factory(reporter: TaskReporter) -> MakeTool:
    """A ``construct_tool_object`` hook that reports every CommandLineTool job."""

    def make_tool(
        toolpath_object: CommentedMap,
        loadingContext: LoadingContext,
    ) -> Process:
        if toolpath_object.get("class") == "CommandLineTool":
            tool = ReportingCommandLineTool(toolpath_object, loadingContext)
            tool.reporter = reporter
            return tool
        return default_make_tool(toolpath_object, loadingContext)

    return make_tool
