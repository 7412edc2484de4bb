"""The ``wes_bridge_tes`` Toil batch system: every Toil job is one GA4GH TES task.

Each job Toil issues becomes one task on the TES: its executor runs the Toil worker command the
leader hands over (``_toil_worker JOBNAME JOBSTORE JOBID --context ...``) with the batch
system's environment (``--setEnv``, the job store's variables) and the job's own (e.g.
``OMP_NUM_THREADS``); the job's cores, memory and disk become the task's ``cpu_cores``,
``ram_gb`` and ``disk_gb`` (GiB, rounded up), its preemptibility ``preemptible``. The task is
named after the job (its CWL step, e.g. ``count``) and tagged with :meth:`TesEndpoint.task_tags`
(``wes_run_id``, ``wes_step``) plus ``toil_workflow``, ``toil_job`` and ``toil_batch``, so a
wes-bridge node lists it among the run's tasks and cancels it with the run. Jobs Toil marks as
local (CWL workflow glue, ExpressionTools) run on the leader, as with every Toil batch system,
unless ``--runLocalJobsOnWorkers`` is given.

One background thread submits queued jobs (at most ``--maxJobs`` tasks at once) and follows the
tasks' states: one ``GET /tasks/{id}?view=MINIMAL`` per task while few are active, a
``GET /tasks`` listing per active state filtered by the batch's tag when many are. A task that
has ended is read once in the FULL view: ``COMPLETE`` is success, ``EXECUTOR_ERROR`` returns
the executor's exit code, ``SYSTEM_ERROR``, ``CANCELED`` and ``PREEMPTED`` return a non-zero
code with Toil's ``ERROR``, ``KILLED`` and ``LOST`` exit reasons; the stderr tail of a failed
task is written to the leader's log. ``killBatchJobs`` and ``shutdown`` cancel tasks.

Where the TES is
    The endpoint comes from the environment a wes-bridge driver sets (``WES_BRIDGE_TES_URL``,
    ``..._RUN_ID``, ``..._SHARED_FILESYSTEM``, ``..._USES_CONTAINERS``; see
    :meth:`wes_bridge.plugin.TesEndpoint.credential_env`), or from ``--tesUrl`` (with
    ``--tesSharedFilesystem`` and ``--tesContainers``). Credentials are read only from the
    environment (``WES_BRIDGE_TES_TOKEN``, or ``..._USERNAME`` and ``..._PASSWORD``), never from
    the command line, and are removed from the leader's environment once read, so that Toil does
    not copy them into the job store (``environment.pickle``) or into the workers.

What the workers need
    A Toil worker reads and writes the job store, so every task must reach it:

    * a ``file:`` job store works only on a TES whose executors run on a file system that holds
      the job store at the same path, without a container: the embedded TES of a wes-bridge
      node (host execution), or a TES declared with ``--tesSharedFilesystem true
      --tesContainers false`` (e.g. Funnel's local worker on a cluster file system). Anything
      else is refused at start-up with an explanation;
    * with a TES that runs containers or does not share the file system, use an object-store
      job store (``aws:REGION:NAME``, ``google:PROJECT:NAME``) that the workers can reach, and
      an image with Toil (``--tesImage``; default: the Toil appliance of this Toil version).

    On a host-execution TES the worker is started with this leader's own ``_toil_worker``
    (found next to the running interpreter), as the TES's executors get a clean environment
    whose ``PATH`` may not hold it, or with the worker program the runner chose
    (:func:`toil_wes_bridge.use_host_worker`; the WDL runner's runs task commands on the host).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import shlex
import shutil
import sys
import threading
import time
import uuid
from argparse import ArgumentParser, _ArgumentGroup
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from toil import applianceSelf
from toil.batchSystems.abstractBatchSystem import (
    EXIT_STATUS_UNAVAILABLE_VALUE,
    BatchJobExitReason,
    UpdatedBatchJobInfo,
)
from toil.batchSystems.local_support import BatchSystemLocalSupport
from toil.common import Config, InconsistentConfigurationError
from toil.job import JobDescription
from toil.lib.conversions import strtobool

from wes_bridge.plugin import TesEndpoint
from wes_bridge.tes.client import TERMINAL_STATES, TesClient, TesError, task_exit_code
from wes_bridge.tes.client import task_stderr_tail as stderr_tail

from . import host_worker
from .jobstore import job_store_problem

__all__ = [
    "ACTIVE_STATES",
    "BATCH_TAG",
    "TesBatchSystem",
    "check_job_store",
    "resolve_endpoint",
    "stderr_tail",
    "task_exit_code",
    "task_outcome",
]

logger = logging.getLogger("toil.batchSystems.wes_bridge_tes")

#: Tags every task of this batch system carries besides the run's.
BATCH_TAG = "toil_batch"
WORKFLOW_TAG = "toil_workflow"
JOB_TAG = "toil_job"

#: TES states of a task that has not ended; listed one by one when many tasks are active.
ACTIVE_STATES: tuple[str, ...] = ("QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING")

_ENV_PREFIX = "WES_BRIDGE_TES_"
_SECRET_NAMES = ("TOKEN", "USERNAME", "PASSWORD")
_WORKER = "_toil_worker"
_WAITING_STATES = frozenset({"PENDING", "SUBMITTING", "QUEUED", "INITIALIZING"})
_FEW_TASKS = 8  # up to this many active tasks are polled one GET each
_MIN_POLL = 0.1
_SHUTDOWN_WAIT = 10.0
_DEFAULT_POLL = 1.0
_TAIL = 2000
_GIB = float(1 << 30)


# -- the state mapping (pure; unit-tested) ----------------------------------------------------
def task_outcome(task: Mapping[str, Any]) -> tuple[int, BatchJobExitReason]:
    """Toil's exit status and reason for a task in a terminal TES state.

    ``COMPLETE`` is success (0, FINISHED); ``EXECUTOR_ERROR`` is the executor's non-zero exit
    code (FAILED); the others did not let the job finish, so their status is Toil's "not
    available" value (255): ``SYSTEM_ERROR`` is ERROR, ``CANCELED`` KILLED and ``PREEMPTED``
    LOST (Toil retries preempted jobs without counting them with
    ``--enableUnlimitedPreemptibleRetries``).
    """
    state = str(task.get("state") or "UNKNOWN")
    code = task_exit_code(task)
    if state == "COMPLETE":
        return 0, BatchJobExitReason.FINISHED
    if state == "EXECUTOR_ERROR":
        # An executor error with no (or a zero) exit code must still read as a failure.
        failed = code if code else EXIT_STATUS_UNAVAILABLE_VALUE
        return failed, BatchJobExitReason.FAILED
    reason = {
        "CANCELED": BatchJobExitReason.KILLED,
        "PREEMPTED": BatchJobExitReason.LOST,
    }.get(state, BatchJobExitReason.ERROR)
    return EXIT_STATUS_UNAVAILABLE_VALUE, reason


def _system_logs(task: Mapping[str, Any]) -> list[str]:
    return [str(s) for log in task.get("logs") or [] for s in log.get("system_logs") or []]


def _rfc3339(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python 3.11 reads at most 6 fractional digits; some TESs send nanoseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _wall_time(task: Mapping[str, Any]) -> float | None:
    logs = task.get("logs") or []
    if not logs:
        return None
    start = _rfc3339(logs[-1].get("start_time"))
    end = _rfc3339(logs[-1].get("end_time"))
    if start is None or end is None or end < start:
        return None
    return end - start


# -- where the TES is -------------------------------------------------------------------------
_secrets_taken: dict[str, str] = {}
_secrets_lock = threading.Lock()


def _take_secrets() -> dict[str, str]:
    """The TES credentials of the environment, removed from it on first use (and remembered)."""
    with _secrets_lock:
        for name in _SECRET_NAMES:
            value = os.environ.pop(_ENV_PREFIX + name, None)
            if value:
                _secrets_taken[name] = value
        return dict(_secrets_taken)


def _option(config: Config, name: str) -> Any:
    return getattr(config, name, None)


def resolve_endpoint(config: Config, environ: Mapping[str, str] | None = None) -> TesEndpoint:
    """The TES of this workflow: the environment's endpoint, with the options' overrides.

    Raises InconsistentConfigurationError when neither names a TES.
    """
    env = dict(os.environ if environ is None else environ)
    if environ is None:
        for key, value in _take_secrets().items():
            env[_ENV_PREFIX + key] = value
    url = _option(config, "tes_url") or env.get(_ENV_PREFIX + "URL")
    if not url:
        raise InconsistentConfigurationError(
            "The wes_bridge_tes batch system needs a GA4GH TES: give --tesUrl URL (or "
            f"{_ENV_PREFIX}URL in the environment; credentials go in {_ENV_PREFIX}TOKEN, or "
            f"{_ENV_PREFIX}USERNAME and {_ENV_PREFIX}PASSWORD)"
        )
    env[_ENV_PREFIX + "URL"] = url
    from_env = TesEndpoint.from_env(env, _ENV_PREFIX)
    assert from_env is not None
    shared = _option(config, "tes_shared_filesystem")
    containers = _option(config, "tes_containers")
    if containers is None:
        # A TES nobody described is taken to run containers, as TES is meant to.
        described = _ENV_PREFIX + "USES_CONTAINERS" in env
        containers = from_env.uses_containers if described else True
    return replace(
        from_env,
        # Outside a wes-bridge run, the tasks are the Toil workflow's.
        run_id=from_env.run_id or str(config.workflowID or ""),
        shared_filesystem=from_env.shared_filesystem if shared is None else bool(shared),
        uses_containers=bool(containers),
        description=f"the TES at {url}",
    )


def check_job_store(locator: str, endpoint: TesEndpoint) -> None:
    """Refuse a job store the TES's workers cannot reach (see the module documentation)."""
    problem = job_store_problem(locator, endpoint)
    if problem is not None:
        raise InconsistentConfigurationError(
            problem + " Declare a TES that shares the file system, without containers, with "
            "--tesSharedFilesystem true --tesContainers false."
        )


def _worker_program() -> str | None:
    """This installation's ``_toil_worker``: beside the interpreter, else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), _WORKER)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which(_WORKER)


def _gib(amount: float | int | None) -> float:
    """Bytes as GiB, rounded up to a thousandth (never asking for less than the job)."""
    if not amount:
        return 0.0
    return math.ceil(float(amount) / _GIB * 1000) / 1000


# -- the batch system -------------------------------------------------------------------------
@dataclass
class _Job:
    id: int
    name: str
    task: dict[str, Any]
    task_id: str | None = None
    state: str = "PENDING"  # PENDING, SUBMITTING (POST /tasks is out), then the TES state
    running_since: float | None = None
    ended: bool = False


class TesBatchSystem(BatchSystemLocalSupport):  # type: ignore[misc]
    """Toil batch system running each (non-local) job as a GA4GH TES task."""

    @classmethod
    def supportsAutoDeployment(cls) -> bool:
        # Workers run the installed Toil; user scripts must be where the leader has them.
        return False

    @classmethod
    def supportsWorkerCleanup(cls) -> bool:
        # A TES task is not a node that runs one worker after another: there is no "last
        # worker on this node" to clean up after, and Toil's per-node cleanup would delete a
        # work directory that tasks on other hosts of a shared file system still use. Each
        # worker removes its own job directory (--cleanWorkDir); no shared caching.
        return False

    @classmethod
    def add_options(cls, parser: ArgumentParser | _ArgumentGroup) -> None:
        parser.add_argument(
            "--tesUrl",
            dest="tes_url",
            default=None,
            help="The GA4GH TES API (e.g. https://host/ga4gh/tes/v1) the wes_bridge_tes batch "
            f"system submits tasks to. Default: {_ENV_PREFIX}URL from the environment. "
            f"Credentials are read from {_ENV_PREFIX}TOKEN, or {_ENV_PREFIX}USERNAME and "
            f"{_ENV_PREFIX}PASSWORD, only.",
        )
        parser.add_argument(
            "--tesSharedFilesystem",
            dest="tes_shared_filesystem",
            type=strtobool,
            default=None,
            metavar="BOOL",
            help="Whether the TES's executors see this machine's file system at the same paths "
            f"(default: {_ENV_PREFIX}SHARED_FILESYSTEM, else false). Needed for a file: job "
            "store.",
        )
        parser.add_argument(
            "--tesContainers",
            dest="tes_containers",
            type=strtobool,
            default=None,
            metavar="BOOL",
            help="Whether the TES runs executors in their image (default: "
            f"{_ENV_PREFIX}USES_CONTAINERS, else true).",
        )
        parser.add_argument(
            "--tesImage",
            dest="tes_image",
            default=None,
            help="The image of the Toil worker tasks, used where the TES runs containers. "
            "Default: the Toil appliance of this Toil version (TOIL_APPLIANCE_SELF).",
        )

    @classmethod
    def setOptions(cls, setOption: Callable[..., Any]) -> None:
        setOption("tes_url")
        setOption("tes_shared_filesystem")
        setOption("tes_containers")
        setOption("tes_image")

    def __init__(
        self,
        config: Config,
        maxCores: float,
        maxMemory: float,
        maxDisk: int,
        client: TesClient | None = None,
    ) -> None:
        # Refused before anything starts (the local batch system has threads).
        self.endpoint = resolve_endpoint(config)
        check_job_store(str(config.jobStore), self.endpoint)
        super().__init__(config, maxCores, maxMemory, maxDisk)
        self.image: str = _option(config, "tes_image") or applianceSelf(forceDockerAppliance=True)
        self._local_worker = _worker_program()
        wait = _option(config, "statePollingWait")
        self._poll_ceiling = float(wait) if wait else _DEFAULT_POLL
        self._give_up_after = float(_option(config, "state_polling_timeout") or 1200)
        self._max_active = int(_option(config, "max_jobs") or sys.maxsize)
        self._batch = uuid.uuid4().hex
        self._client = client or self.endpoint.client(timeout=60.0, retries=8)
        self._owns_client = client is None

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[int, _Job] = {}
        self._pending: deque[int] = deque()
        self._updates: queue.Queue[UpdatedBatchJobInfo] = queue.Queue()
        self._stopping = False
        self._failing_since: float | None = None
        logger.info("Toil jobs run as tasks on the TES at %s", self.endpoint.url)
        self._thread = threading.Thread(
            target=self._monitor, name="wes-bridge-tes-monitor", daemon=True
        )
        self._thread.start()

    # -- issuing ------------------------------------------------------------------------------
    def issueBatchJob(
        self,
        command: str,
        job_desc: JobDescription,
        job_environment: dict[str, str] | None = None,
    ) -> int:
        local_id = self.handleLocalJob(self._local_command(command), job_desc)
        if local_id is not None:
            return int(local_id)
        self.check_resource_request(job_desc)
        job_id = int(self.getNextJobID())
        name = str(job_desc.unitName or job_desc.jobName or f"toil-job-{job_id}")
        job = _Job(job_id, name, self._task(job_id, name, command, job_desc, job_environment))
        with self._wake:
            self._jobs[job_id] = job
            self._pending.append(job_id)
            self._wake.notify_all()
        logger.debug("Queued job %s (%s) for the TES", job_id, name)
        return job_id

    def _host_worker(self, argv: list[str]) -> list[str]:
        """A worker command, ``argv``, with the program of workers that run on the host: the
        runner's (:func:`toil_wes_bridge.use_host_worker`), else this installation's
        ``_toil_worker``."""
        if not argv or os.path.basename(argv[0]) != _WORKER:
            return argv
        program = host_worker() or [self._local_worker or argv[0]]
        return [*program, *argv[1:]]

    def _local_command(self, command: str) -> str:
        """The command of a job run on the leader, with the host's worker program."""
        return shlex.join(self._host_worker(shlex.split(command)))

    def _command(self, command: str) -> list[str]:
        """The executor command of a job's task (see the module documentation)."""
        argv = shlex.split(command)
        if self.endpoint.uses_containers:
            # In a container: the image's worker, on PATH.
            return [_WORKER, *argv[1:]] if argv and os.path.basename(argv[0]) == _WORKER else argv
        return self._host_worker(argv)

    def _task(
        self,
        job_id: int,
        name: str,
        command: str,
        job_desc: JobDescription,
        job_environment: dict[str, str] | None,
    ) -> dict[str, Any]:
        env = {str(k): str(v) for k, v in self.environment.items()}
        env.update({str(k): str(v) for k, v in (job_environment or {}).items()})
        workflow = str(self.config.workflowID)
        return {
            "name": name,
            "description": f"Toil job {job_desc} of workflow {workflow}",
            "executors": [{"image": self.image, "command": self._command(command), "env": env}],
            "resources": {
                "cpu_cores": max(1, math.ceil(float(job_desc.cores or 1))),
                "ram_gb": _gib(job_desc.memory),
                "disk_gb": _gib(job_desc.disk),
                "preemptible": bool(job_desc.preemptible),
            },
            "tags": self.endpoint.task_tags(
                name,
                **{
                    WORKFLOW_TAG: workflow,
                    JOB_TAG: str(job_desc.jobStoreID),
                    BATCH_TAG: self._batch,
                    "toil_batch_job_id": str(job_id),
                },
            ),
        }

    # -- what Toil asks -----------------------------------------------------------------------
    def getIssuedBatchJobIDs(self) -> list[int]:
        with self._lock:
            ours = list(self._jobs)
        return [*self.getIssuedLocalJobIDs(), *ours]

    def getRunningBatchJobIDs(self) -> dict[int, float]:
        now = time.time()
        with self._lock:
            ours = {
                job.id: now - job.running_since
                for job in self._jobs.values()
                if job.running_since is not None and not job.ended
            }
        return {**self.getRunningLocalJobIDs(), **ours}

    def getUpdatedBatchJob(self, maxWait: int) -> UpdatedBatchJobInfo | None:
        deadline = time.monotonic() + maxWait
        while True:
            local = self.getUpdatedLocalJob(0)
            if local is not None:
                return local
            remaining = deadline - time.monotonic()
            try:
                # Short waits, so that local jobs ending meanwhile are not kept waiting.
                update = self._updates.get(timeout=min(max(remaining, 0.0), 0.1))
            except queue.Empty:
                if remaining <= 0:
                    return None
                continue
            with self._lock:
                known = self._jobs.pop(update.jobID, None) is not None
            if known:  # not killed meanwhile
                return update

    def getSchedulingStatusMessage(self) -> str | None:
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state in _WAITING_STATES)
            pending = len(self._pending)
        if not waiting:
            return None
        held = f", {pending} held back by --maxJobs" if pending else ""
        return f"{waiting} TES tasks are waiting to start on {self.endpoint.url}{held}"

    def killBatchJobs(self, jobIDs: list[int]) -> None:
        self.killLocalJobs(jobIDs)
        cancel: list[tuple[str, str]] = []
        with self._wake:
            for job_id in jobIDs:
                job = self._jobs.pop(job_id, None)
                if job is None:
                    continue
                if job_id in self._pending:
                    self._pending.remove(job_id)
                if job.task_id and not job.ended:
                    cancel.append((job.task_id, job.name))
            self._wake.notify_all()
        for task_id, name in cancel:
            logger.debug("Cancelling TES task %s (%s)", task_id, name)
            self._cancel(task_id)

    def shutdown(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        # The monitor stops at its next step; a request it has out (with its retries, when the
        # TES is down) is not waited for: it cancels a task it creates after this point.
        self._thread.join(timeout=_SHUTDOWN_WAIT)
        with self._lock:
            left = [j.task_id for j in self._jobs.values() if j.task_id and not j.ended]
            self._jobs.clear()
            self._pending.clear()
        try:
            if left:
                logger.info("Cancelling %d TES tasks still running", len(left))
                # Best effort, and quick: the workflow is ending (maybe on a signal, with a
                # deadline), and a wes-bridge node cancels the run's tasks by tag as well.
                quick = (
                    self.endpoint.client(timeout=_SHUTDOWN_WAIT, retries=1)
                    if self._owns_client
                    else self._client
                )
                try:
                    for task_id in left:
                        self._cancel(task_id, quick)
                finally:
                    if quick is not self._client:
                        quick.close()
            self.shutdownLocal()
        finally:
            if self._owns_client:
                self._client.close()

    def _cancel(self, task_id: str, client: TesClient | None = None) -> None:
        try:
            (client or self._client).cancel_task(task_id)
        except TesError as exc:
            if exc.status_code not in (400, 404):  # 400: it had ended; 404: it is gone
                logger.warning("Could not cancel TES task %s: %s", task_id, exc)

    # -- the monitor thread -------------------------------------------------------------------
    def _monitor(self) -> None:
        pause = _MIN_POLL
        while True:
            with self._wake:
                if self._stopping:
                    return
            busy = False
            try:
                busy = self._submit_ready()
                busy = self._poll() or busy
            except Exception:  # the thread must outlive any one bad round
                logger.exception("The TES monitor hit an unexpected error; going on")
            pause = _MIN_POLL if busy else min(pause * 2, self._poll_ceiling)
            with self._wake:
                if self._stopping:
                    return
                if not (self._pending and self._active_count() < self._max_active):
                    self._wake.wait(pause)

    def _active_count(self) -> int:
        """Tasks submitted (or being submitted) that have not ended; under the lock."""
        return sum(1 for j in self._jobs.values() if j.state != "PENDING" and not j.ended)

    def _submit_ready(self) -> bool:
        """Create the tasks of queued jobs, within --maxJobs. True if any was submitted."""
        submitted = False
        while True:
            with self._lock:
                if self._stopping or not self._pending:
                    return submitted
                if self._active_count() >= self._max_active:
                    return submitted
                job = self._jobs[self._pending.popleft()]
                # Counted as active from here on, so --maxJobs holds while the POST is out.
                job.state = "SUBMITTING"
            try:
                task_id = self._client.create_task(job.task)
            except TesError as exc:
                logger.error("Could not submit job %s (%s) to the TES: %s", job.id, job.name, exc)
                with self._lock:
                    job.ended = True
                self._updates.put(
                    UpdatedBatchJobInfo(
                        jobID=job.id,
                        exitStatus=EXIT_STATUS_UNAVAILABLE_VALUE,
                        exitReason=BatchJobExitReason.ERROR,
                    )
                )
                submitted = True
                continue
            with self._lock:
                job.task_id = task_id
                job.state = "QUEUED"
                killed = self._jobs.get(job.id) is not job or self._stopping
            if killed:  # killed (or shut down) while the POST was out
                self._cancel(task_id)
            else:
                logger.info("Job %s (%s) is TES task %s", job.id, job.name, task_id)
            submitted = True

    def _poll(self) -> bool:
        """Look at the active tasks; report those that ended. True if anything changed."""
        with self._lock:
            active = {j.task_id: j for j in self._jobs.values() if j.task_id and not j.ended}
        if not active:
            self._failing_since = None
            return False
        try:
            states = self._states(list(active))
        except TesError as exc:
            return self._polling_failed(exc, active.values())
        self._failing_since = None
        changed = False
        now = time.time()
        for task_id, state in states.items():
            job = active[task_id]
            if state == job.state:
                continue
            changed = True
            with self._lock:
                job.state = state
                if state == "RUNNING" and job.running_since is None:
                    job.running_since = now
            if state in TERMINAL_STATES:
                self._finish(job)
        return changed

    def _states(self, task_ids: list[str]) -> dict[str, str]:
        """The TES state of each task (a task the TES no longer has reads SYSTEM_ERROR)."""
        if len(task_ids) > _FEW_TASKS:
            wanted = set(task_ids)
            seen: dict[str, str] = {}
            for state in ACTIVE_STATES:
                for task in self._client.iter_tasks(
                    view="MINIMAL", state=state, tags={BATCH_TAG: self._batch}
                ):
                    task_id = str(task.get("id"))
                    if task_id in wanted:
                        seen[task_id] = str(task.get("state") or state)
            # Those in no list have ended (or moved between two listings): ask each.
            return {**{t: self._state(t) for t in wanted - set(seen)}, **seen}
        return {task_id: self._state(task_id) for task_id in task_ids}

    def _state(self, task_id: str) -> str:
        try:
            return str(self._client.get_task(task_id, "MINIMAL").get("state") or "UNKNOWN")
        except TesError as exc:
            if exc.status_code == 404:
                logger.error("TES task %s has disappeared from the TES", task_id)
                return "SYSTEM_ERROR"
            raise

    def _finish(self, job: _Job) -> None:
        assert job.task_id
        try:
            task = self._client.get_task(job.task_id, "FULL")
        except TesError as exc:
            logger.warning("Could not read the log of TES task %s: %s", job.task_id, exc)
            task = {"id": job.task_id, "state": job.state}
        task = {**task, "state": job.state}  # the state that was seen to be terminal
        status, reason = task_outcome(task)
        wall = _wall_time(task)
        if wall is None and job.running_since is not None:
            wall = max(time.time() - job.running_since, 0.0)
        if reason != BatchJobExitReason.FINISHED:
            self._log_failure(job, task, status)
        with self._lock:
            job.ended = True
        self._updates.put(
            UpdatedBatchJobInfo(
                jobID=job.id,
                exitStatus=status,
                exitReason=reason,
                wallTime=wall,
                backing_id=job.task_id,
            )
        )

    def _log_failure(self, job: _Job, task: Mapping[str, Any], status: int) -> None:
        state = str(task.get("state"))
        what = f"exited with code {status}" if state == "EXECUTOR_ERROR" else f"ended {state}"
        lines = [f"TES task {job.task_id} (job {job.id}, {job.name}) {what}"]
        system = _system_logs(task)
        if system:
            lines.append("TES system logs: " + "; ".join(system[-5:]))
        tail = stderr_tail(task)
        if tail:
            lines.append("stderr tail:\n" + tail.rstrip("\n"))
        logger.warning("\n".join(lines))

    def _polling_failed(self, exc: TesError, jobs: Iterable[_Job]) -> bool:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        failing_for = now - self._failing_since
        logger.warning("Could not read task states from the TES (for %.0f s): %s", failing_for, exc)
        if failing_for < self._give_up_after:
            return False
        logger.error(
            "The TES has not answered for %.0f s (--statePollingTimeout); failing its jobs",
            failing_for,
        )
        for job in jobs:
            with self._lock:
                if job.ended:
                    continue
                job.ended = True
            self._updates.put(
                UpdatedBatchJobInfo(
                    jobID=job.id,
                    exitStatus=EXIT_STATUS_UNAVAILABLE_VALUE,
                    exitReason=BatchJobExitReason.LOST,
                    backing_id=job.task_id,
                )
            )
        self._failing_since = None
        return True
