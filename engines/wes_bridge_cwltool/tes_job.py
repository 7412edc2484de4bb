"""cwltool on TES: every CommandLineTool job becomes one GA4GH TES task.

The job runner is a :class:`cwltool.job.ContainerCommandLineJob`, chosen for every
CommandLineTool through cwltool's own ``make_job_runner`` seam. Where the TES runs tasks in
containers (or elsewhere), the job sees CWL's container layout: the output directory is
``/var/spool/cwl``, inputs are staged under ``/var/lib/cwl`` and ``$TMPDIR`` is ``/tmp``. Where
the TES runs tasks on this file system without containers (the embedded TES's host backend),
the job keeps cwltool's own host paths, exactly as ``cwltool --no-container`` (staged by
cwltool with symbolic links), and declares its inputs and output directory at those very paths,
which that TES uses in place. Instead of building a ``docker run``, the job describes itself as
a task:

* the command line, the image (DockerRequirement, else the adapter's ``default_container``),
  stdin/stdout/stderr, the environment (EnvVarRequirement and CWL's HOME/TMPDIR);
* ResourceRequirement as ``resources`` (cores, RAM, disk), ToolTimeLimit as a deadline after
  which the driver cancels the task;
* every staged input (files, directories, secondaryFiles, InitialWorkDir entries) as a TES
  input from a ``file://`` URL, literals (InitialWorkDir ``entry`` text) as ``content``;
  writable ones from a private copy, so a tool never changes the run's originals;
* the output directory as one DIRECTORY output delivered to cwltool's host output directory,
  where cwltool's own output collection then runs as it always does.

Tasks carry the run's tags, so the node lists them as the run's tasks and cancels them with it.
``file://`` URLs need a TES that shares the node's file system (the embedded TES does).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cwltool.errors import WorkflowException
from cwltool.executors import MultithreadedJobExecutor
from cwltool.job import ContainerCommandLineJob, relink_initialworkdir
from cwltool.pathmapper import MapperEnt
from cwltool.process import stage_files
from cwltool.utils import bytes2str_in_dicts, create_tmp_dir, ensure_writable

from wes_bridge.plugin import TesEndpoint
from wes_bridge.tes.client import (
    TERMINAL_STATES,
    TesClient,
    TesError,
    TesUnavailable,
    View,
    task_exit_code,
    task_stderr_tail,
)

__all__ = ["StepFailure", "TesJob", "TesParallelExecutor", "TesRun", "tes_job_class"]

_logger = logging.getLogger("cwltool")

CONTAINER_TMPDIR = "/tmp"  # noqa: S108 - a path inside the task, as CWL's container layout says
_TAIL = 2000


@dataclass
class StepFailure:
    step: str
    task_id: str
    state: str
    exit_code: int | None
    stderr_tail: str


@dataclass
class TesRun:
    """What every TES job of one run shares: the endpoint, one client, the failures seen."""

    endpoint: TesEndpoint
    default_container: str
    unreachable_seconds: float = 3600.0
    host_layout: bool = False
    """The TES runs tasks on this file system without containers: jobs keep cwltool's own
    host paths (as ``cwltool --no-container``), declared to the TES as used in place."""
    client: TesClient = field(init=False)
    failures: list[StepFailure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = self.endpoint.client(timeout=60.0, retries=8)

    def failed(self, failure: StepFailure) -> None:
        with self.lock:
            self.failures.append(failure)


def _uri(path: str) -> str:
    return Path(path).absolute().as_uri()


class TesJob(ContainerCommandLineJob):
    """One CommandLineTool job as one TES task (see the module documentation)."""

    tes: TesRun  # set on the per-run subclass made by ``tes_job_class``

    # -- cwltool's container hooks, turned into TES inputs ------------------------------------
    def get_from_requirements(
        self,
        r: Any,
        pull_image: bool,
        force_pull: bool,
        tmp_outdir_prefix: str,
        image_base_path: str | None = None,
    ) -> str | None:
        return str(r.get("dockerPull") or r.get("dockerImageId") or self.tes.default_container)

    def create_runtime(
        self, env: MutableMapping[str, str], runtime_context: Any
    ) -> tuple[list[str], str | None]:
        raise NotImplementedError("a TES job has no container command line")

    @staticmethod
    def append_volume(runtime: list[str], source: str, target: str, writable: bool = False) -> None:
        # Called by cwltool's create_file_and_add_volume for a literal it wrote to a file.
        runtime.append(f"{source}\0{target}")

    def _input(self, source: str, target: str, kind: str) -> None:
        self._tes_inputs.append(
            {"url": _uri(source), "path": target, "type": kind, "name": os.path.basename(target)}
        )

    def add_file_or_directory_volume(
        self, runtime: list[str], volume: MapperEnt, host_outdir_tgt: str | None
    ) -> None:
        if volume.resolved.startswith("_:"):  # a literal directory: created empty
            self._empty_dirs.append(volume.target)
            return
        self._input(volume.resolved, volume.target, _kind(volume.type or "File"))

    def add_writable_file_volume(
        self,
        runtime: list[str],
        volume: MapperEnt,
        host_outdir_tgt: str | None,
        tmpdir_prefix: str,
    ) -> None:
        # The task may change it: stage a private copy, never the run's original.
        copy = os.path.join(create_tmp_dir(tmpdir_prefix), os.path.basename(volume.resolved))
        shutil.copy(volume.resolved, copy)
        ensure_writable(copy)
        self._input(copy, volume.target, "FILE")

    def add_writable_directory_volume(
        self,
        runtime: list[str],
        volume: MapperEnt,
        host_outdir_tgt: str | None,
        tmpdir_prefix: str,
    ) -> None:
        if volume.resolved.startswith("_:"):
            self._empty_dirs.append(volume.target)
            return
        copy = os.path.join(create_tmp_dir(tmpdir_prefix), os.path.basename(volume.resolved))
        shutil.copytree(volume.resolved, copy, symlinks=False)
        ensure_writable(copy, include_root=True)
        self._input(copy, volume.target, "DIRECTORY")

    def create_file_and_add_volume(
        self,
        runtime: list[str],
        volume: MapperEnt,
        host_outdir_tgt: str | None,
        secret_store: Any,
        tmpdir_prefix: str,
    ) -> str:
        # cwltool writes the literal to a file (in the host output directory or a fresh
        # temporary one); the task gets that file at its container path.
        written = super().create_file_and_add_volume(
            runtime, volume, host_outdir_tgt, secret_store, tmpdir_prefix
        )
        self._input(written, volume.target, "FILE")
        return written

    def _required_env(self) -> dict[str, str]:
        if self.tes.host_layout:
            # As cwltool's CommandLineJob: the job's own directories, this node's PATH.
            return {"HOME": self.outdir, "TMPDIR": self.tmpdir, "PATH": os.environ["PATH"]}
        return {"TMPDIR": CONTAINER_TMPDIR, "HOME": self.builder.outdir}

    # -- the job ------------------------------------------------------------------------------
    def run(self, runtimeContext: Any, tmpdir_lock: threading.Lock | None = None) -> None:
        if tmpdir_lock:
            with tmpdir_lock:
                os.makedirs(self.tmpdir, exist_ok=True)
        else:
            os.makedirs(self.tmpdir, exist_ok=True)
        docker_req, _ = self.get_requirement("DockerRequirement")
        image = self.get_from_requirements(docker_req or {}, False, False, "")
        self._setup(runtimeContext)
        self._tes_inputs: list[dict[str, Any]] = []
        self._empty_dirs: list[str] = []
        if self.tes.host_layout:
            self._stage_on_host(runtimeContext)
            self._run_task(str(image), runtimeContext)
            return
        prefix = runtimeContext.tmpdir_prefix
        secrets = runtimeContext.secret_store
        self.add_volumes(self.pathmapper, [], prefix, secrets, any_path_okay=True)
        if self.generatemapper is not None:
            self.add_volumes(self.generatemapper, [], prefix, secrets, any_path_okay=True)
        for target in self._empty_dirs:
            empty = create_tmp_dir(prefix)
            self._input(empty, target, "DIRECTORY")
        self._run_task(str(image), runtimeContext)

    def _stage_on_host(self, runtimeContext: Any) -> None:
        """cwltool's own staging (symbolic links, as ``cwltool --no-container``); the staged
        inputs are declared to the TES at their own paths, so it uses them in place."""
        secrets = runtimeContext.secret_store
        stage_files(self.pathmapper, ignore_writable=True, symlink=True, secret_store=secrets)
        if self.generatemapper is not None:
            stage_files(
                self.generatemapper,
                ignore_writable=self.inplace_update,
                symlink=True,
                secret_store=secrets,
            )
            relink_initialworkdir(
                self.generatemapper,
                self.outdir,
                self.builder.outdir,
                inplace_update=self.inplace_update,
            )
        seen: set[str] = set()
        for _key, entry in self.pathmapper.items_exclude_children():
            target = entry.target
            if (
                not entry.staged
                or entry.resolved.startswith("_:")
                or entry.type not in ("File", "Directory")
                or target in seen
                or not os.path.exists(target)
            ):
                continue
            seen.add(target)
            self._input(target, target, _kind(entry.type))
        if self.stdin and self.stdin not in seen and os.path.isfile(self.stdin):
            # stdin may be a literal cwltool wrote while staging (e.g. inside a Directory
            # literal): declared too, so the TES reads it where it is.
            self._input(self.stdin, self.stdin, "FILE")

    def _task(self, image: str, runtimeContext: Any) -> dict[str, Any]:
        outdir = self.builder.outdir
        command = [str(arg) for arg in self.command_line]
        env = {str(k): str(v) for k, v in self.environment.items()}
        if runtimeContext.secret_store is not None:
            command = cast(list[str], runtimeContext.secret_store.retrieve(command))
            env = cast(dict[str, str], runtimeContext.secret_store.retrieve(env))
        if not command:
            raise WorkflowException(
                "Cannot run a CommandLineTool that produces an empty command line."
            )
        executor: dict[str, Any] = {
            "image": image,
            "command": command,
            "workdir": outdir,
            "env": env,
        }
        if self.stdin:
            executor["stdin"] = self.stdin
        if self.stdout:
            executor["stdout"] = os.path.join(outdir, self.stdout)
        if self.stderr:
            executor["stderr"] = os.path.join(outdir, self.stderr)
        resources = self.builder.resources
        task: dict[str, Any] = {
            "name": self.name,
            "executors": [executor],
            "inputs": self._tes_inputs,
            "outputs": [
                {"name": "outdir", "path": outdir, "url": _uri(self.outdir), "type": "DIRECTORY"}
            ],
            "volumes": [] if self.tes.host_layout else [CONTAINER_TMPDIR],
            "resources": {
                "cpu_cores": max(1, math.ceil(float(resources.get("cores", 1)))),
                "ram_gb": round(float(resources.get("ram", 0)) / 1024, 3),
                "disk_gb": round(
                    (float(resources.get("outdirSize", 0)) + float(resources.get("tmpdirSize", 0)))
                    / 1024,
                    3,
                ),
            },
            "tags": self.tes.endpoint.task_tags(self.name),
        }
        return task

    def _run_task(self, image: str, runtimeContext: Any) -> None:
        client = self.tes.client
        outputs: Any = {}
        status = "permanentFail"
        task_id = ""
        try:
            task_id = client.create_task(self._task(image, runtimeContext))
            _logger.info("[job %s] TES task %s", self.name, task_id)
            final = self._wait(client, task_id)
            state = str(final.get("state"))
            exit_code = task_exit_code(final)
            if state == "COMPLETE" or (state == "EXECUTOR_ERROR" and exit_code is not None):
                status = self._status(exit_code if exit_code is not None else 0)
            if status != "success":
                self._report_failure(final, task_id, state, exit_code)
            if state == "COMPLETE" or exit_code is not None:
                if self.generatemapper is not None:
                    relink_initialworkdir(
                        self.generatemapper,
                        self.outdir,
                        self.builder.outdir,
                        inplace_update=self.inplace_update,
                    )
                outputs = bytes2str_in_dicts(self.collect_outputs(self.outdir, exit_code or 0))
        except (TesError, OSError) as exc:
            _logger.error("[job %s] TES task %s failed: %s", self.name, task_id or "-", exc)
            self.tes.failed(StepFailure(self.name, task_id, "SYSTEM_ERROR", None, str(exc)))
            status = "permanentFail"
        except WorkflowException as exc:
            _logger.error("[job %s] Job error:\n%s", self.name, exc)
            status = "permanentFail"
        if status != "success":
            _logger.warning("[job %s] completed %s", self.name, status)
        else:
            _logger.info("[job %s] completed %s", self.name, status)
        if runtimeContext.workflow_eval_lock is None:
            raise WorkflowException("runtimeContext.workflow_eval_lock must not be None")
        if self.output_callback:
            with runtimeContext.workflow_eval_lock:
                self.output_callback(outputs, status)
        if runtimeContext.rm_tmpdir:
            if self.stagedir is not None and os.path.exists(self.stagedir):
                shutil.rmtree(self.stagedir, True)
            shutil.rmtree(self.tmpdir, True)

    def _get(self, client: TesClient, task_id: str, view: View) -> dict[str, Any]:
        """The task; a TES that cannot be reached (a node restarting) is waited for, up to
        ``unreachable_seconds``: the task goes on meanwhile."""
        gone_since: float | None = None
        while True:
            try:
                return client.get_task(task_id, view)
            except TesUnavailable as exc:
                now = time.monotonic()
                if gone_since is None:
                    gone_since = now
                    _logger.warning(
                        "[job %s] the TES is unreachable (%s); waiting up to %d s for it",
                        self.name,
                        exc,
                        self.tes.unreachable_seconds,
                    )
                if now - gone_since > self.tes.unreachable_seconds:
                    raise
                time.sleep(2.0)

    def _wait(self, client: TesClient, task_id: str) -> dict[str, Any]:
        """Poll the task until it ends: every 50 ms at first, backing off to 1 s."""
        deadline = time.monotonic() + self.timelimit if self.timelimit else None
        pause = 0.05
        while True:
            state = self._get(client, task_id, "MINIMAL").get("state")
            if state in TERMINAL_STATES:
                return self._get(client, task_id, "FULL")
            if deadline is not None and time.monotonic() > deadline:
                _logger.warning(
                    "[job %s] exceeded its time limit of %s s; cancelling TES task %s",
                    self.name,
                    self.timelimit,
                    task_id,
                )
                try:
                    client.cancel_task(task_id)
                except TesError as exc:
                    if exc.status_code != 400:  # 400: it ended meanwhile
                        raise
                deadline = None
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)

    def _status(self, rcode: int) -> str:
        if rcode in self.successCodes:
            return "success"
        if rcode in self.temporaryFailCodes:
            return "temporaryFail"
        if rcode in self.permanentFailCodes:
            return "permanentFail"
        return "success" if rcode == 0 else "permanentFail"

    def _report_failure(
        self, task: dict[str, Any], task_id: str, state: str, exit_code: int | None
    ) -> None:
        tail = task_stderr_tail(task, _TAIL)
        if not tail and self.stderr:
            tail = _file_tail(os.path.join(self.outdir, self.stderr))
        logs = task.get("logs") or []
        system = [str(s) for log in logs for s in (log.get("system_logs") or [])]
        if state != "COMPLETE" and state != "EXECUTOR_ERROR":
            _logger.error(
                "[job %s] TES task %s ended %s: %s", self.name, task_id, state, "; ".join(system)
            )
        else:
            _logger.warning(
                "[job %s] TES task %s exited with status %s", self.name, task_id, exit_code
            )
        if tail:
            _logger.warning("[job %s] stderr (tail):\n%s", self.name, tail)
        self.tes.failed(
            StepFailure(self.name, task_id, state, exit_code, tail or "; ".join(system))
        )


def _kind(cwl_type: str) -> str:
    return "DIRECTORY" if "Directory" in cwl_type else "FILE"


def _file_tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - _TAIL))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


_job_classes: dict[int, type[TesJob]] = {}


def tes_job_class(run: TesRun) -> type[TesJob]:
    """The job runner class bound to one run's TES (one class per run, made once)."""
    cls = _job_classes.get(id(run))
    if cls is None:
        cls = cast(type[TesJob], type("BoundTesJob", (TesJob,), {"tes": run}))
        _job_classes[id(run)] = cls
    return cls


class TesParallelExecutor(MultithreadedJobExecutor):
    """cwltool's ``--parallel`` executor, with the TES (not this machine) as the limit.

    cwltool's own one holds a job back until this machine has the cores and RAM it asks for;
    here ready jobs go to the TES at once, and the TES queues what does not fit. cwltool runs
    one thread per core it may allocate, so ``max_steps`` (steps in flight, counted in cores)
    is both the limit and the size of that thread pool.
    """

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self.max_cores = float(max_steps)
        self.max_ram = 1 << 40  # MiB: RAM is the TES's to schedule
