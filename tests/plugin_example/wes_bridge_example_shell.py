"""A wes-bridge engine adapter for shell workflows (``workflow_type`` SHELL).

A shell workflow is a script whose every line (blank lines and comments aside) is one step:
the steps run one after the other, each as a task on the node's TES, in the run's outputs
directory, with the run's ``workflow_params`` as environment variables. A step that fails ends
the run (unless the run asked to ``keep_going``).
"""

from __future__ import annotations

import shlex
import sys
from importlib.metadata import version
from typing import Any

from pydantic import Field

from wes_bridge.plugin import (
    DriverContext,
    DriverOutcome,
    EngineAdapter,
    EngineParameters,
    EngineSettings,
    RunSpec,
    describe_outputs,
)
from wes_bridge.tes.client import TesError, task_exit_code, task_stderr_tail

__all__ = ["ShellAdapter", "ShellParameters", "ShellSettings", "steps"]


class ShellSettings(EngineSettings):
    """Operator settings: ``engines: {shell: {...}}`` in the node's config file."""

    image: str = "debian:bookworm-slim"
    """The image of every step's task (the embedded TES's host backend only records it)."""
    poll_seconds: float = Field(0.5, gt=0, le=10)
    """How often a running step's task is looked at."""


class ShellParameters(EngineParameters):
    """Per-run ``workflow_engine_parameters``."""

    keep_going: bool = False
    """Run the later steps after one has failed (the run fails all the same)."""


def steps(script: str) -> list[tuple[int, str]]:
    """(line number, command) of each step of a script."""
    return [
        (number, line.strip())
        for number, line in enumerate(script.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


class ShellAdapter(EngineAdapter):
    engine = "shell"
    workflow_type = "SHELL"
    workflow_type_versions = ("1",)
    settings_model = ShellSettings
    parameters_model = ShellParameters

    settings: ShellSettings

    def engine_version(self) -> str:
        return version("wes-bridge-example-shell")  # the adapter is the engine

    def validate(self, run: RunSpec) -> list[str]:
        problems = run.workflow_file_problems("the script")
        for name, value in run.params.items():
            if not name.isidentifier() or not isinstance(value, str | int | float):
                problems.append(f"workflow_params[{name!r}] is not a variable of text or a number")
        if not problems and not steps(run.workflow_path.read_text(encoding="utf-8")):
            problems.append("the script has no step")
        return problems

    def drive(self, ctx: DriverContext) -> DriverOutcome:
        tes = ctx.tes
        if tes is None or not tes.shared_filesystem or tes.uses_containers:
            return DriverOutcome(
                "SYSTEM_ERROR",
                system_logs=[
                    "shell steps need a TES that runs them on this node's files, "
                    "without containers (the embedded TES's host backends)"
                ],
            )
        params: ShellParameters = ctx.run.engine_parameters  # type: ignore[assignment]
        env = {name: str(value) for name, value in ctx.run.params.items()}
        env["WORKFLOW_DIR"] = str(ctx.run.workflow_dir)  # where the attachments are
        failures: list[str] = []
        exit_code = 0
        with tes.client() as client:
            for number, command in steps(ctx.run.workflow_path.read_text(encoding="utf-8")):
                step = f"line-{number}"
                task: dict[str, Any] = {
                    "name": step,
                    "executors": [
                        {
                            "image": self.settings.image,
                            "command": [
                                "/bin/sh",
                                "-c",
                                f"cd {shlex.quote(str(ctx.outputs_dir))} && {command}",
                            ],
                            "env": env,
                        }
                    ],
                    # The run's tags: the node lists the task as the run's, cancels it with it.
                    "tags": tes.task_tags(step),
                }
                try:
                    task_id = client.create_task(task)
                    print(f"{step}: TES task {task_id}: {command}", file=sys.stderr, flush=True)
                    done = client.wait(task_id, poll=self.settings.poll_seconds, view="FULL")
                except TesError as exc:
                    return DriverOutcome(
                        "SYSTEM_ERROR",
                        outputs=describe_outputs(ctx.outputs_dir),
                        system_logs=[f"step {step}: the TES failed: {exc}"],
                    )
                if done["state"] != "COMPLETE":
                    code = task_exit_code(done)
                    failures.append(
                        f"step {step} (TES task {task_id}) ended {done['state']} with exit "
                        f"code {code}; stderr tail:\n{task_stderr_tail(done, 1000)}"
                    )
                    exit_code = exit_code or code or 1
                    if not params.keep_going:
                        break
        outputs = describe_outputs(ctx.outputs_dir)
        if failures:
            return DriverOutcome(
                "EXECUTOR_ERROR", outputs=outputs, exit_code=exit_code, system_logs=failures
            )
        return DriverOutcome("COMPLETE", outputs=outputs, exit_code=0)
