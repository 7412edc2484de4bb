"""WDL task commands on the host: a miniwdl task container without a container, for Toil 9.

Toil's WDL runner (:mod:`toil.wdl.wdltoil`, Toil 9.x) runs every task command through a miniwdl
:class:`~WDL.runtime.task_container.TaskContainer`, and only through Singularity's or Docker's
(``WDLTaskJob.run`` picks ``SingularityContainer`` or ``SwarmContainer``, module globals of
``toil.wdl.wdltoil``; Toil has no uncontained mode, DataBiosphere/toil#4672). On a TES that runs
each Toil worker on the host, the command should run there too, as ``toil-cwl-runner
--no-container`` runs CWL tools.

:class:`HostTaskContainer` is such a container, written against miniwdl's documented backend
interface (the one its ``miniwdl.plugin.container_backend`` plugins implement): the command runs
with ``bash`` in the task's working directory, the inputs are symbolic links to the host files
at the paths Toil assigned them, and the paths the command sees are host paths. :func:`install`
puts it where Toil 9 looks up Docker's container class, so a worker started with
``--wdlContainer docker`` runs its task commands on the host. Toil also singles Docker out with
``isinstance(container, SwarmContainer)`` (to add bind mounts for ``disks`` and to inject a
cgroup resource monitor into the command); what :func:`install` puts there is a slot that builds
host containers but is not their class, so neither applies: the command is a child of the Toil
worker, whose own accounting sees it.

:func:`install` checks first that Toil still does what this module relies on, and raises
:class:`ToilInternalsChanged` naming what differs otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
from collections.abc import Callable
from importlib.metadata import version
from types import CodeType
from typing import Any

import psutil
from WDL.runtime import config
from WDL.runtime.error import Terminated
from WDL.runtime.task_container import TaskContainer

__all__ = ["HostTaskContainer", "ToilInternalsChanged", "install", "installed"]

log = logging.getLogger(__name__)

TOIL_MAJOR = 9
"""The Toil major version whose WDL runner :func:`install` knows."""


class ToilInternalsChanged(RuntimeError):
    """The installed Toil does not pick task containers the way :func:`install` relies on."""


class HostTaskContainer(TaskContainer):
    """A miniwdl task container that runs the command on this machine, without isolation.

    The "container" directory is the task's host directory, so a path in the command is the
    host path of the same file; the inputs are symbolic links under ``work/_miniwdl_inputs``
    (where the engine put them in the container's path map) to the host files. A ``docker`` /
    ``container`` runtime value is recorded in the task's log and not used.
    """

    _limits: dict[str, int] | None = None

    @classmethod
    def global_init(cls, cfg: config.Loader, logger: logging.Logger) -> None:
        """Nothing to set up: there is no container runtime."""

    @classmethod
    def detect_resource_limits(cls, cfg: config.Loader, logger: logging.Logger) -> dict[str, int]:
        """This machine's processors and memory (a task asking for more is capped to them)."""
        if cls._limits is None:
            cls._limits = {
                "cpu": os.cpu_count() or 1,
                "mem_bytes": psutil.virtual_memory().total,
            }
        return cls._limits

    def __init__(self, cfg: config.Loader, run_id: str, host_dir: str) -> None:
        super().__init__(cfg, run_id, host_dir)
        # Paths in the command are host paths: ``{container_dir}/work`` is the working directory.
        self.container_dir = host_dir

    def _link_inputs(self) -> None:
        """Each input at its assigned path, as a symbolic link to the host file or directory
        (children of a linked directory are already there)."""
        linked: list[str] = []
        for host_path, inner in sorted(self.input_path_map.items(), key=lambda kv: kv[1]):
            inner = inner.rstrip("/")
            if inner == host_path.rstrip("/") or any(inner.startswith(d + "/") for d in linked):
                continue
            os.makedirs(os.path.dirname(inner), exist_ok=True)
            if not os.path.lexists(inner):
                os.symlink(host_path.rstrip("/"), inner)
            if os.path.isdir(host_path):
                linked.append(inner)

    def _run(self, logger: logging.Logger, terminating: Callable[[], bool], command: str) -> int:
        image = self.runtime_values.get("docker")
        if image:
            logger.info("runtime container %s not used: the command runs on the host", image)
        self._link_inputs()
        script = os.path.join(self.host_dir, "command")
        with open(script, "w") as out:
            for key, value in self.runtime_values.get("env", {}).items():
                out.write(f"export {key}={shlex.quote(str(value))}\n")
            out.write(command)
        shell = self.cfg.get("task_runtime", "command_shell")
        with (
            open(self.host_stdout_txt(), "ab") as stdout,  # type: ignore[no-untyped-call]
            open(self.host_stderr_txt(), "ab") as stderr,  # type: ignore[no-untyped-call]
            self.poll_stderr_context(logger) as poll_stderr,
            self.task_running_context(),
        ):
            proc = subprocess.Popen(
                [shell, script],
                cwd=self.host_work_dir(),  # type: ignore[no-untyped-call]
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # In the worker's process group: a TES that cancels the task stops it too.
            )
            exit_code: int | None = None
            while exit_code is None:
                if terminating():
                    proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    exit_code = proc.wait(1)
                poll_stderr()
        if terminating():
            raise Terminated()
        return exit_code


class _DockerSlot:
    """What Toil finds under the name ``SwarmContainer`` once :func:`install` ran: it makes
    :class:`HostTaskContainer` objects and answers Toil's class-level calls, but nothing is an
    instance of it, so Toil's Docker-only adjustments are skipped."""

    def __call__(self, cfg: config.Loader, run_id: str, host_dir: str) -> HostTaskContainer:
        return HostTaskContainer(cfg, run_id, host_dir)

    def global_init(self, cfg: config.Loader, logger: logging.Logger) -> None:
        HostTaskContainer.global_init(cfg, logger)

    def detect_resource_limits(self, cfg: config.Loader, logger: logging.Logger) -> dict[str, int]:
        return HostTaskContainer.detect_resource_limits(cfg, logger)

    def __instancecheck__(self, instance: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{__name__}: host task containers in place of Docker>"


_SLOT = _DockerSlot()


def _function_code(function: Any) -> CodeType | None:
    """The code of ``function`` or, for a decorated one, of the function it wraps."""
    seen: set[int] = set()
    todo = [function]
    while todo:
        candidate = todo.pop()
        if id(candidate) in seen or not callable(candidate):
            continue
        seen.add(id(candidate))
        code = getattr(candidate, "__code__", None)
        if code is not None and "TaskContainerImplementation" in code.co_varnames:
            return code  # type: ignore[no-any-return]
        todo += [cell.cell_contents for cell in getattr(candidate, "__closure__", None) or ()]
    return None


def _check(wdltoil: Any) -> None:
    """Raise :class:`ToilInternalsChanged` unless Toil picks Docker's container as expected."""
    from WDL.runtime.backend.docker_swarm import SwarmContainer

    toil_version = version("toil")
    problems = []
    if toil_version.split(".")[0] != str(TOIL_MAJOR):
        problems.append(f"Toil {toil_version} is installed, not Toil {TOIL_MAJOR}")
    if getattr(wdltoil, "SwarmContainer", None) is not SwarmContainer:
        problems.append("toil.wdl.wdltoil.SwarmContainer is not miniwdl's SwarmContainer")
    task_job = getattr(wdltoil, "WDLTaskJob", None)
    code = _function_code(getattr(task_job, "run", None))
    if code is None or "SwarmContainer" not in code.co_names:
        problems.append("toil.wdl.wdltoil.WDLTaskJob.run no longer looks up SwarmContainer")
    if problems:
        raise ToilInternalsChanged(
            "wes-bridge runs WDL task commands on the host by replacing the Docker task "
            f"container of Toil {TOIL_MAJOR}'s WDL runner, and this Toil differs: "
            + "; ".join(problems)
            + ". Install Toil 9.x, or adapt toil_wes_bridge.host_container to this Toil."
        )


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    import toil.wdl.wdltoil as wdltoil

    return getattr(wdltoil, "SwarmContainer", None) is _SLOT


def install() -> None:
    """Make Toil's WDL runner, in this process, run with :class:`HostTaskContainer` the task
    commands it would run in Docker (``--wdlContainer docker``). Idempotent.

    Raises :class:`ToilInternalsChanged` when the installed Toil does not pick its task
    containers as Toil 9.x does.
    """
    import toil.wdl.wdltoil as wdltoil

    if installed():
        return
    _check(wdltoil)
    wdltoil.SwarmContainer = _SLOT
    log.debug("WDL task commands run on the host (%s)", _SLOT)
