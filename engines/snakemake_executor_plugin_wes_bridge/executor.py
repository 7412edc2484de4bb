"""The executor: every Snakemake job (or group job) is one GA4GH TES task.

What a task runs (``--wes-bridge-job-command``):

* **auto** (default): a job of a plain ``shell:`` rule that needs nothing only Snakemake's job
  process provides runs its own shell command, formatted by Snakemake as its ``shell()`` would
  run it (``bash -c 'set -euo pipefail; ...'``), after the executor has prepared the job here as
  the job process would (removed stale outputs, created the output and log directories); the
  task's exit code is the command's. See :mod:`.direct` for which jobs qualify. Every other job
  runs Snakemake's own job command, as under ``snakemake``.
* **snakemake**: every task runs Snakemake's job command (``python -m snakemake --target-jobs
  ... --mode remote``), so everything Snakemake does for a job (shell, run, script and wrapper
  rules, conda/apptainer, benchmarks, logs, shadow directories) happens inside the task as it
  would on a cluster node.

Either way the main Snakemake process handles the job's success or failure (output checks with
``--latency-wait``, ``touch()``, ``temp()``, ``protected()``, metadata) as for any remote
executor. How the task sees the files depends on the mode:

* **shared** (default): the task changes into this run's working directory, which the TES's
  executors see at the same path, and runs the job there. It declares no inputs, outputs or
  volumes, so a TES that maps container paths (wes-bridge's host backend) rewrites nothing.
* **staged**: the workflow sources (Snakefile, includes, scripts, conda environment files,
  config files) and the job's input files are TES inputs at the same relative paths under a
  declared working directory in the task; the job's output, log and benchmark files are TES
  outputs delivered back to their places here. Everything goes through ``file://`` URLs.

Resources: ``_cores`` (threads) -> ``cpu_cores``, ``mem_mb`` -> ``ram_gb``, ``disk_mb`` ->
``disk_gb``; ``runtime`` (minutes) is enforced here, as TES 1.1 has no time limit: a task
RUNNING for longer is cancelled and its job fails. Tasks are tagged with the WES run and the
step (:meth:`wes_bridge.plugin.TesEndpoint.task_tags`), the Snakemake job id and attempt, and a
tag unique to this Snakemake process that the status checks list tasks by.

Status checks never block Snakemake: they run on its status thread with an asyncio TES client,
a few concurrent ``GET /tasks/{id}`` (MINIMAL view) for a handful of jobs, one tag-filtered
``GET /tasks`` listing for many. The pause between checks is a tenth of the time the youngest
active task has been in its state (RUNNING: since it was first seen running, so queue time does
not count), at least ``--wes-bridge-poll-seconds`` and at most
``--seconds-between-status-checks``; a newly submitted job brings the next check forward to
within that floor. So the end of a job is noticed within about a tenth of its run time, and a
short job within a fraction of a second. COMPLETE is a success; EXECUTOR_ERROR, SYSTEM_ERROR,
CANCELED and PREEMPTED are failures reported with the state, exit code and stderr tail; every
other state is still active.

On SIGTERM (a cancelled WES run, a batch system's time limit) the executor cancels every task
it has submitted and submits no more, while Snakemake's scheduler winds down.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shlex
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import SharedFSUsage

from wes_bridge.plugin import STEP_TAG, TesEndpoint
from wes_bridge.tes.client import AsyncTesClient, TesClient, TesError

from .direct import ShellJob, obstacle, shell_job, staged_script
from .journal import Journal
from .mapping import (
    Verdict,
    classify,
    exit_code,
    failure_message,
    runtime_seconds,
    stderr_tail,
    tes_resources,
)
from .settings import ExecutorSettings

__all__ = ["ENV_PREFIX", "Executor", "resolve_endpoint"]

ENV_PREFIX = "WES_BRIDGE_TES_"
RUN_TAG = "snakemake_run"
"""The tag, unique to one Snakemake process, that status checks list its tasks by."""
LIST_THRESHOLD = 8
"""Up to this many active jobs, status checks get each task; above, they list them."""
CONCURRENT_GETS = 8
TES_OUTAGE_SECONDS = 600.0
"""How long status checks may keep failing before the workflow is given up."""
POLL_FRACTION = 0.1
"""Status checks come every this fraction of the time the youngest active task has been in its
state (within limits)."""
_GONE = "NOT_FOUND"


def resolve_endpoint(url: str | None, environ: Mapping[str, str] | None = None) -> TesEndpoint:
    """The TES the executor submits to: ``url``, else the one in ``WES_BRIDGE_TES_*``.

    The credentials always come from the environment (``WES_BRIDGE_TES_TOKEN``, or
    ``..._USERNAME`` and ``..._PASSWORD``); they are sent to an explicit ``url`` only when the
    environment names no other TES.
    """
    env = dict(os.environ if environ is None else environ)
    from_env = TesEndpoint.from_env(env, prefix=ENV_PREFIX)
    if from_env is not None and (url is None or _same_url(url, from_env.url)):
        return from_env
    if url is None:
        raise WorkflowError(
            "no TES to submit jobs to: give --wes-bridge-url or set WES_BRIDGE_TES_URL"
        )
    credentials = from_env is None
    return TesEndpoint(
        url=url,
        run_id=env.get(ENV_PREFIX + "RUN_ID", ""),
        shared_filesystem=env.get(ENV_PREFIX + "SHARED_FILESYSTEM", "1") != "0",
        uses_containers=env.get(ENV_PREFIX + "USES_CONTAINERS", "0") == "1",
        token=(env.get(ENV_PREFIX + "TOKEN") or None) if credentials else None,
        username=(env.get(ENV_PREFIX + "USERNAME") or None) if credentials else None,
        password=(env.get(ENV_PREFIX + "PASSWORD") or None) if credentials else None,
    )


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _is_flagged(path: Any, flag: str) -> bool:
    flags = getattr(path, "flags", None)
    return isinstance(flags, Mapping) and bool(flags.get(flag))


class Executor(RemoteExecutor):  # type: ignore[misc]
    """Snakemake jobs as TES tasks (see the module documentation)."""

    # RemoteExecutor starts the status thread before __post_init__ runs; it reads these.
    _poll_interval: float = 0.25
    _min_poll: float = 0.25
    _async_client: AsyncTesClient | None = None

    def __post_init__(self) -> None:
        settings = self.workflow.executor_settings
        if settings is None:
            settings = ExecutorSettings()
        self.settings: ExecutorSettings = settings
        if settings.mode not in ("shared", "staged"):
            raise WorkflowError(f"--wes-bridge-mode must be shared or staged, not {settings.mode}")
        if settings.job_command not in ("auto", "snakemake"):
            raise WorkflowError(
                f"--wes-bridge-job-command must be auto or snakemake, not {settings.job_command}"
            )
        self.endpoint = resolve_endpoint(settings.url)
        if settings.mode == "shared" and (
            self.endpoint.uses_containers or not self.endpoint.shared_filesystem
        ):
            raise WorkflowError(
                "shared mode needs a TES whose executors see this file system at the same "
                "paths (on hosts, not in containers); use --wes-bridge-mode staged"
            )
        if settings.mode == "staged":
            if not posixpath.isabs(settings.staged_workdir):
                raise WorkflowError("--wes-bridge-staged-workdir must be an absolute path")
            shared = self.workflow.storage_settings.shared_fs_usage
            if SharedFSUsage.SOURCES in shared or SharedFSUsage.INPUT_OUTPUT in shared:
                raise WorkflowError(
                    "staged mode moves the sources and the jobs' files itself: run it with "
                    "--shared-fs-usage none (or without sources and input-output)"
                )
        self.mode = settings.mode
        self.workdir = os.getcwd()
        self.python = settings.python or (
            "python" if self.endpoint.uses_containers else sys.executable
        )
        self.run_tag = uuid.uuid4().hex
        self.client: TesClient = self.endpoint.client(timeout=60.0, retries=8)
        self.journal = Journal(Path(settings.journal)) if settings.journal else None
        self._min_poll = max(0.05, float(settings.poll_seconds))
        self._poll_interval = self._min_poll
        self._last_poll_ok = time.monotonic()
        self._sources: list[str] | None = None
        self._live: set[str] = set()
        self._live_lock = threading.Lock()
        self._terminating = threading.Event()
        self._sigterm_watched = False
        where = self.endpoint.description or self.endpoint.url
        self.logger.info(f"Jobs run as GA4GH TES tasks on {where} ({self.mode} mode)")

    # -- the job command ----------------------------------------------------------------------
    def get_python_executable(self) -> str:
        return self.python

    def _step(self, job: JobExecutorInterface) -> str:
        return str(job.name)

    def _tags(self, job: JobExecutorInterface) -> dict[str, str]:
        extra = {
            RUN_TAG: self.run_tag,
            "snakemake_jobid": str(job.jobid),
            "snakemake_attempt": str(job.attempt),
        }
        if self.endpoint.run_id:
            return self.endpoint.task_tags(self._step(job), **extra)
        return {STEP_TAG: self._step(job), **extra}

    def _preemptible(self, job: JobExecutorInterface) -> bool:
        rules = getattr(self.workflow.remote_execution_settings, "preemptible_rules", None)
        check = getattr(rules, "is_preemptible", None)
        if check is None or job.is_group():
            return False
        return bool(check(job.rule.name))

    def _description(self, job: JobExecutorInterface) -> str:
        what = "group job" if job.is_group() else "job"
        text = f"Snakemake {what} {job.jobid} ({self._step(job)}), attempt {job.attempt}"
        message = None if job.is_group() else getattr(job, "message", None)
        return f"{text}: {message}" if message else text

    def direct_shell(self, job: JobExecutorInterface) -> ShellJob | None:
        """How a task runs ``job``'s shell command directly; None where it runs Snakemake's
        job command (see :mod:`.direct`)."""
        if self.settings.job_command != "auto":
            return None
        methods = self.workflow.deployment_settings.deployment_method
        try:
            if obstacle(job, methods, staged=self.mode == "staged") is not None:
                return None
            return shell_job(job, in_containers=self.endpoint.uses_containers)
        except Exception as exc:  # e.g. the command does not format: the job process says why
            self.logger.debug(f"Job {job.jobid} runs Snakemake's job command: {exc}")
            return None

    def tes_task(self, job: JobExecutorInterface, shell: ShellJob | None = None) -> dict[str, Any]:
        """The TES task that runs ``job``: its shell command directly when ``shell`` is given
        (see :meth:`direct_shell`), else Snakemake's job command."""
        env = {str(k): str(v) for k, v in self.envvars().items()}
        if shell is None:
            command = self.format_job_exec(job)
        else:
            env.update(shell.env)
            if self.mode == "staged":
                command = self._staged_shell(job, shell)
            else:
                command = "exec " + shell.invocation()
        if posixpath.isabs(self.python):
            # Tools of the interpreter's environment come first, as for Snakemake's own jobs.
            bindir = shlex.quote(posixpath.dirname(self.python))
            command = f'PATH={bindir}:"$PATH" && export PATH && {command}'
        executor: dict[str, Any] = {
            "image": self.workflow.remote_execution_settings.container_image,
            "env": env,
        }
        inputs: list[dict[str, Any]] = []
        outputs: list[dict[str, Any]] = []
        if self.mode == "shared":
            command = f"cd {shlex.quote(self.workdir)} && {command}"
        else:
            executor["workdir"] = self.settings.staged_workdir
            inputs, outputs = self._staged_files(job)
        executor["command"] = ["/bin/sh", "-c", command]
        return {
            "name": self._step(job),
            "description": self._description(job),
            "inputs": inputs,
            "outputs": outputs,
            "resources": tes_resources(job.resources, job.threads, self._preemptible(job)),
            "executors": [executor],
            "tags": self._tags(job),
        }

    # -- staged mode --------------------------------------------------------------------------
    def _staged_shell(self, job: JobExecutorInterface, shell: ShellJob) -> str:
        """A staged direct job's script: its directories, its command, its empty logs."""
        outputs = [self._container_path(str(f)) for f in self._local([*job.output, *job.log])]
        directories = [posixpath.dirname(p) for p in outputs]
        if shell.tmpdir:
            directories.append(shell.tmpdir)
        logs = [self._container_path(str(f)) for f in self._local(job.log)]
        return staged_script(shell, directories, logs)

    def _container_path(self, path: str) -> str:
        absolute = os.path.abspath(path)
        relative = os.path.relpath(absolute, self.workdir)
        if relative == os.pardir or relative.startswith(os.pardir + os.sep):
            return absolute  # outside the working directory: the same path in the task
        return posixpath.join(self.settings.staged_workdir, *relative.split(os.sep))

    def _workflow_sources(self) -> list[str]:
        """The workflow's source files, relative to the working directory (found once)."""
        if self._sources is None:
            found: set[str] = set()
            try:
                found.update(str(f) for f in self.workflow.dag.get_sources())
            except (OSError, WorkflowError) as exc:
                self.logger.error(f"Could not list all workflow sources: {exc}")
            found.add(os.path.relpath(self.workflow.main_snakefile))
            for configfile in getattr(self.workflow, "overwrite_configfiles", None) or []:
                found.add(os.path.relpath(configfile))
            self._sources = sorted(
                f
                for f in found
                if os.path.isfile(f)
                and not f.endswith(".pyc")
                and ".snakemake" not in Path(f).parts
            )
        return self._sources

    def _staged_files(
        self, job: JobExecutorInterface
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        inputs: dict[str, dict[str, Any]] = {}
        for path in [*self._workflow_sources(), *(str(f) for f in self._local(job.input))]:
            if not os.path.exists(path):
                continue  # Snakemake itself reports missing inputs
            container = self._container_path(path)
            real = Path(os.path.realpath(path))
            inputs.setdefault(
                container,
                {
                    "name": posixpath.basename(container),
                    "url": real.as_uri(),
                    "path": container,
                    "type": "DIRECTORY" if real.is_dir() else "FILE",
                },
            )
        # Temporary files the job itself deletes (--unneeded-temp-files) do not come back.
        unneeded = {str(f) for f in self.workflow.dag.get_unneeded_temp_files(job)}
        outputs: dict[str, dict[str, Any]] = {}
        for f in self._local([*job.output, *job.log, *self._benchmarks(job)]):
            if str(f) in unneeded or _is_flagged(f, "pipe") or _is_flagged(f, "service"):
                continue  # pipes and services live only while their group job runs
            container = self._container_path(str(f))
            outputs.setdefault(
                container,
                {
                    "name": posixpath.basename(container),
                    "url": Path(os.path.abspath(str(f))).as_uri(),
                    "path": container,
                    "type": "DIRECTORY" if _is_flagged(f, "directory") else "FILE",
                },
            )
        return list(inputs.values()), list(outputs.values())

    @staticmethod
    def _local(files: Iterable[Any]) -> list[Any]:
        """Files the job reads or writes here (storage-plugin files travel by themselves)."""
        return [f for f in files if f and not getattr(f, "is_storage", False)]

    @staticmethod
    def _benchmarks(job: JobExecutorInterface) -> list[Any]:
        jobs = list(getattr(job, "jobs", [])) if job.is_group() else [job]
        return [j.benchmark for j in jobs if getattr(j, "benchmark", None)]

    # -- submission ---------------------------------------------------------------------------
    def _record(self, event: str, job: JobExecutorInterface, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(
                event, step=self._step(job), jobid=job.jobid, attempt=job.attempt, **fields
            )

    def _not_submitted(self, job: JobExecutorInterface, message: str) -> None:
        self._record("finished", job, task_id=None, state="SYSTEM_ERROR", message=message)
        self.report_job_error(SubmittedJobInfo(job=job), msg=message + "\n")

    def run_job(self, job: JobExecutorInterface) -> None:
        self._watch_sigterm()
        step = self._step(job)
        if self._terminating.is_set():
            self._not_submitted(job, f"Job {job.jobid} ({step}) not submitted: terminating")
            return
        shell = self.direct_shell(job)
        if shell is not None:
            # What the job process would do first: remove stale outputs, create the output
            # and log directories (the main process's own job handling does neither).
            try:
                self.workflow.async_run(job.prepare())
            except Exception as exc:
                self._not_submitted(job, f"Could not prepare job {job.jobid} ({step}): {exc}")
                return
        try:
            task = self.tes_task(job, shell)
            task_id = self.client.create_task(task)
        except (TesError, OSError) as exc:
            self._not_submitted(job, f"Could not submit job {job.jobid} ({step}) to the TES: {exc}")
            return
        with self._live_lock:
            self._live.add(task_id)
        if self._terminating.is_set():  # SIGTERM came while the task was being created
            self._cancel(task_id)
        command = "snakemake" if shell is None else "shell"
        self._record("submitted", job, task_id=task_id, command=command)
        how = "Snakemake's job command" if shell is None else "its shell command"
        self.logger.info(f"Job {job.jobid} ({step}) is TES task {task_id}, running {how}")
        now = time.monotonic()
        aux: dict[str, Any] = {
            "step": step,
            "submitted_at": now,
            "command": command,
            "runtime": runtime_seconds(job.resources),
            "state": "QUEUED",
            "state_since": now,
            "running_since": None,
            "timed_out_after": None,
        }
        self.report_job_submission(SubmittedJobInfo(job=job, external_jobid=task_id, aux=aux))

    # -- status checks ------------------------------------------------------------------------
    def _client_async(self) -> AsyncTesClient:
        if self._async_client is None:
            self._async_client = self.endpoint.async_client(timeout=60.0, retries=5)
        return self._async_client

    async def _wait_for_jobs(self) -> None:
        # The status loop of RemoteExecutor, on its own event loop; the client lives with it.
        try:
            await super()._wait_for_jobs()
        finally:
            if self._async_client is not None:
                await self._async_client.close()
                self._async_client = None

    async def sleep(self) -> None:
        """Pause until the next status check is due: ``_poll_interval`` from now, or sooner,
        ``poll_seconds`` after the submission of a job not checked yet (that interval was
        computed without it), or at once when Snakemake shuts the executor down (it waits for
        this thread). Sleeps in slices of ``poll_seconds``."""
        begin = time.monotonic()
        while getattr(self, "wait", True):
            due = begin + self._poll_interval
            fresh = self._unchecked_since()
            if fresh is not None:
                due = min(due, fresh + self._min_poll)
            left = due - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self._min_poll))

    def _unchecked_since(self) -> float | None:
        """When the earliest submitted job that no status check has seen yet was submitted."""
        with self.lock:
            times = [
                float(info.aux["submitted_at"])
                for info in self.active_jobs
                if info.aux and "submitted_at" in info.aux and not info.aux.get("checked")
            ]
        return min(times, default=None)

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        for info in active_jobs:
            if info.aux is not None:
                info.aux["checked"] = True
        client = self._client_async()
        try:
            states = await self._states(client, [str(j.external_jobid) for j in active_jobs])
        except TesError as exc:
            self._status_check_failed(exc)
            for info in active_jobs:
                yield info
            return
        self._last_poll_ok = time.monotonic()
        still_active = []
        now = time.monotonic()
        for info in active_jobs:
            state = states.get(str(info.external_jobid))
            verdict = classify(state) if state != _GONE else Verdict.FAILURE
            if verdict is Verdict.ACTIVE:
                self._observe(info, state, now)
                await self._enforce_runtime(client, info, state)
                still_active.append(info)
                yield info
            elif verdict is Verdict.SUCCESS:
                self._ended(info)
                self._record("finished", info.job, task_id=info.external_jobid, state="COMPLETE")
                self.report_job_success(info)
            else:
                self._ended(info)
                await self._report_failure(client, info, state)
        self._poll_interval = self._next_interval(still_active)

    @staticmethod
    def _observe(info: SubmittedJobInfo, state: str | None, now: float) -> None:
        """Note when an active task was first seen in its current state (and running)."""
        aux = info.aux if info.aux is not None else {}
        if state != aux.get("state"):
            aux["state"] = state
            aux["state_since"] = now
        if state == "RUNNING" and aux.get("running_since") is None:
            aux["running_since"] = now

    def _next_interval(self, active_jobs: list[SubmittedJobInfo]) -> float:
        """The pause before the next status check: a tenth of the time the youngest active
        task has been in its state (a RUNNING task: since it was first seen RUNNING, so the
        time it waited in the TES's queue does not count), between ``poll_seconds`` and
        ``--seconds-between-status-checks``.

        A job is noticed to have ended after at most about a tenth of its run time (a short
        one after about ``poll_seconds``), and a long run with long jobs is not polled more
        than it needs to be.
        """
        ceiling = max(
            self._min_poll,
            float(self.workflow.remote_execution_settings.seconds_between_status_checks),
        )
        if not active_jobs:
            return ceiling  # a submission brings the next check forward
        now = time.monotonic()
        ages = []
        for info in active_jobs:
            aux = info.aux or {}
            since = aux.get("running_since") if aux.get("state") == "RUNNING" else None
            if since is None:
                since = aux.get("state_since", aux.get("submitted_at", now))
            ages.append(now - float(since))
        return min(ceiling, max(self._min_poll, min(ages) * POLL_FRACTION))

    async def _states(self, client: AsyncTesClient, task_ids: list[str]) -> dict[str, str]:
        """The state of every task in ``task_ids`` (``_GONE`` for a task the TES does not
        know)."""
        wanted = set(task_ids)
        states: dict[str, str] = {}
        if len(wanted) > LIST_THRESHOLD:
            token: str | None = None
            while True:
                async with self.status_rate_limiter:
                    page = await client.list_tasks(
                        view="MINIMAL", tags={RUN_TAG: self.run_tag}, page_token=token
                    )
                for task in page["tasks"]:
                    task_id = str(task.get("id"))
                    if task_id in wanted:
                        states[task_id] = str(task.get("state") or "UNKNOWN")
                following = page.get("next_page_token") or None
                if not following or following == token or len(states) == len(wanted):
                    break
                token = str(following)
        missing = [t for t in task_ids if t not in states]
        if missing:
            limit = asyncio.Semaphore(CONCURRENT_GETS)

            async def one(task_id: str) -> tuple[str, str]:
                async with limit, self.status_rate_limiter:
                    try:
                        task = await client.get_task(task_id, "MINIMAL")
                    except TesError as exc:
                        if exc.status_code == 404:
                            return task_id, _GONE
                        raise
                return task_id, str(task.get("state") or "UNKNOWN")

            states.update(await asyncio.gather(*(one(t) for t in missing)))
        return states

    def _status_check_failed(self, exc: TesError) -> None:
        down = time.monotonic() - self._last_poll_ok
        if down > TES_OUTAGE_SECONDS:
            raise WorkflowError(
                f"the TES has not answered status checks for {down:.0f} s: {exc}"
            ) from exc
        self.logger.error(f"Checking the TES tasks failed (will retry): {exc}")
        self._poll_interval = min(
            float(self.workflow.remote_execution_settings.seconds_between_status_checks),
            max(self._poll_interval * 2, 1.0),
        )

    async def _enforce_runtime(
        self, client: AsyncTesClient, info: SubmittedJobInfo, state: str | None
    ) -> None:
        aux = info.aux if info.aux is not None else {}
        limit = aux.get("runtime")
        if limit is None or aux.get("timed_out_after") is not None or state != "RUNNING":
            return
        now = time.monotonic()
        if aux.get("running_since") is None:
            aux["running_since"] = now
            return
        if now - aux["running_since"] <= limit:
            return
        aux["timed_out_after"] = limit
        self.logger.error(
            f"Job {info.job.jobid} ({aux.get('step')}) has run longer than its runtime of "
            f"{limit / 60:g} min; cancelling TES task {info.external_jobid}"
        )
        try:
            await client.cancel_task(str(info.external_jobid))
        except TesError as exc:
            if exc.status_code not in (400, 404):  # it ended, or is gone, meanwhile
                self.logger.error(f"Cancelling TES task {info.external_jobid} failed: {exc}")

    async def _report_failure(
        self, client: AsyncTesClient, info: SubmittedJobInfo, state: str | None
    ) -> None:
        task_id = str(info.external_jobid)
        task: dict[str, Any]
        if state == _GONE:
            task = {
                "id": task_id,
                "state": "SYSTEM_ERROR",
                "logs": [{"system_logs": ["the TES no longer knows this task"]}],
            }
        else:
            try:
                async with self.status_rate_limiter:
                    task = await client.get_task(task_id, "FULL")
            except TesError as exc:
                task = {
                    "id": task_id,
                    "state": state,
                    "logs": [{"system_logs": [f"reading the task's logs failed: {exc}"]}],
                }
        aux = info.aux or {}
        message = failure_message(task_id, task, timed_out_after=aux.get("timed_out_after"))
        self._record(
            "finished",
            info.job,
            task_id=task_id,
            state=str(task.get("state") or state or "UNKNOWN"),
            exit_code=exit_code(task),
            stderr_tail=stderr_tail(task),
            timed_out_after=aux.get("timed_out_after"),
            message=message,
        )
        self.report_job_error(info, msg=message)

    # -- cancellation and the end -------------------------------------------------------------
    def _ended(self, info: SubmittedJobInfo) -> None:
        with self._live_lock:
            self._live.discard(str(info.external_jobid))

    def _cancel(self, task_id: str) -> bool:
        """Ask the TES to cancel a task; False if that failed (an ended task is no failure)."""
        try:
            self.client.cancel_task(task_id)
        except TesError as exc:
            if exc.status_code in (400, 404):  # it ended, or is gone, meanwhile
                return True
            self.logger.error(f"Cancelling TES task {task_id} failed: {exc}")
            return False
        return True

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        for info in active_jobs:
            task_id = str(info.external_jobid)
            if self._cancel(task_id):
                self._record("cancelled", info.job, task_id=task_id)
                self.logger.info(f"Cancelled TES task {task_id} of job {info.job.jobid}")

    def _watch_sigterm(self) -> None:
        """On SIGTERM, cancel every task of this Snakemake and submit no more.

        Snakemake's scheduler answers SIGTERM by waiting for the running jobs to finish; their
        tasks could run for hours, and would go on running on the TES after this process was
        killed. The handler is installed from the main thread once the scheduler has installed
        its own, which it then calls as well. The TES requests are made on a thread of their
        own, never inside the handler (which may interrupt code holding the executor's locks).
        """
        if self._sigterm_watched or threading.current_thread() is not threading.main_thread():
            return
        self._sigterm_watched = True
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if not self._terminating.is_set():
                self._terminating.set()
                threading.Thread(
                    target=self._cancel_live, name="wes-bridge-cancel", daemon=True
                ).start()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt  # Snakemake's way to stop at once, cancelling jobs

        signal.signal(signal.SIGTERM, on_sigterm)

    def _cancel_live(self) -> None:
        with self._live_lock:
            live = sorted(self._live)
        if live:
            self.logger.info(f"Terminating: cancelling {len(live)} TES task(s)")
        for task_id in live:
            self._cancel(task_id)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self.client.close()
