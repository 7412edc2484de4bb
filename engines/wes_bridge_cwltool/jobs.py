"""The seam between cwltool and the place a job runs.

:class:`TesCommandLineTool` replaces cwltool's CommandLineTool through the loading context's
``construct_tool_object`` hook (cwltool's own extension point); its ``make_job_runner`` gives
every job the TES job runner of :mod:`wes_bridge_cwltool.tes_job`, whatever container runtime
cwltool itself would have picked. ExpressionTools and workflow steps stay in the driver.
"""

from __future__ import annotations

from typing import Protocol

from cwltool.command_line_tool import CommandLineTool
from cwltool.context import LoadingContext, RuntimeContext
from cwltool.job import JobBase
from cwltool.process import Process
from cwltool.workflow import default_make_tool
from ruamel.yaml.comments import CommentedMap

from .tes_job import TesRun, tes_job_class

__all__ = ["TesCommandLineTool", "make_tool_factory"]


class TesCommandLineTool(CommandLineTool):
    tes: TesRun

    def make_job_runner(self, runtimeContext: RuntimeContext) -> type[JobBase]:
        if runtimeContext.use_container:
            # cwltool's own choice also inserts the default container as a DockerRequirement
            # when the tool has none; the job reads its image from there.
            super().make_job_runner(runtimeContext)
        # Host layout: a DockerRequirement is recorded as the task's image and not used
        # (cwltool --no-container would refuse a required one); the TES says so.
        return tes_job_class(self.tes)


class MakeTool(Protocol):
    """cwltool's ``LoadingContext.construct_tool_object`` signature."""

    def __call__(
        self,
        toolpath_object: CommentedMap,
        loadingContext: LoadingContext,
    ) -> Process: ...


def make_tool_factory(tes: TesRun) -> MakeTool:
    """A ``construct_tool_object`` hook that runs every CommandLineTool job on ``tes``."""

    def make_tool(
        toolpath_object: CommentedMap,
        loadingContext: LoadingContext,
    ) -> Process:
        if toolpath_object.get("class") == "CommandLineTool":
            tool = TesCommandLineTool(toolpath_object, loadingContext)
            tool.tes = tes
            return tool
        return default_make_tool(toolpath_object, loadingContext)

    return make_tool
