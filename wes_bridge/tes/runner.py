"""The life of one TES task, in its own process: inputs, executors in order, outputs, logs.

The scheduler starts one runner per task (forked from the warm forkserver, in a session of its
own, so cancelling signals the runner and every executor process together). The runner reports
progress by appending to ``events.jsonl`` in the task directory and leaves ``result.json``
(state and the TES task log) when it ends; it never touches the database, so a server restart
does not disturb it, and a restarted scheduler re-attaches to it or reads its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..drivers import lower_priority
from ..errors import WesError
from ..staging import check_url_host
from .backends import (
    Backend,
    ExecutorCommand,
    PathMap,
    SandboxBackend,
    SandboxPolicy,
    SandboxRefused,
    declared_paths,
    in_place_paths,
    make_backend,
)
from .models import TesExecutor, TesInput, TesOutput, TesTask, has_wildcards
from .paths import link_or_copy, local_path, within

__all__ = ["TaskFiles", "TaskLaunch", "runner_main"]

_CHUNK = 1 << 20


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FetchPolicy:
    allowed_hosts: list[str]
    allow_private: bool
    max_bytes: int
    timeout_seconds: float


@dataclass
class TaskLaunch:
    """What a runner needs; pickled into the forked runner process."""

    task_id: str
    task_dir: Path
    task: dict[str, Any]
    backend: str
    container_binary: str | None
    input_roots: list[Path]
    output_roots: list[Path]
    fetch: FetchPolicy
    tail_bytes: int
    niceness: int = 0
    claim: str = ""
    sandbox: SandboxPolicy | None = None


@dataclass
class TaskFiles:
    task_dir: Path

    @property
    def root(self) -> Path:
        return self.task_dir / "root"

    @property
    def tmp(self) -> Path:
        return self.task_dir / "tmp"

    @property
    def events(self) -> Path:
        return self.task_dir / "events.jsonl"

    @property
    def result(self) -> Path:
        return self.task_dir / "result.json"

    @property
    def runner_log(self) -> Path:
        return self.task_dir / "runner.log"

    @property
    def claim(self) -> Path:
        """The token of the one launch allowed to run the task (see :func:`take_claim`)."""
        return self.task_dir / "claim"

    @property
    def lock(self) -> Path:
        """Held (flock) by the task's runner for as long as it lives."""
        return self.task_dir / "runner.lock"

    @property
    def pid(self) -> Path:
        return self.task_dir / "runner.pid"

    def executor_stream(self, index: int, stream: str) -> Path:
        return self.task_dir / f"executor-{index}.{stream}"


class TaskFailure(Exception):
    """The task cannot go on; ``state`` is how it ends."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message


@dataclass
class _Run:
    launch: TaskLaunch
    task: TesTask
    files: TaskFiles
    backend: Backend
    paths: PathMap
    system_logs: list[str] = field(default_factory=list)
    executor_logs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    current: ExecutorCommand | None = None

    def event(self, kind: str, **data: Any) -> None:
        line = json.dumps({"event": kind, "time": now_rfc3339(), **data}) + "\n"
        with open(self.files.events, "a", encoding="utf-8") as fh:
            fh.write(line)


def idle_runner_main(channel: tuple[Connection, Connection]) -> None:
    """A runner forked ahead of need: it waits for its task, so starting one costs no fork.

    It ends without doing anything when the scheduler that forked it goes away (end of file
    on its pipe) or sends None.
    """
    tasks, done = channel
    try:
        launch = tasks.recv()
    except (EOFError, OSError):
        os._exit(0)
    tasks.close()
    if not isinstance(launch, TaskLaunch):
        os._exit(0)
    runner_main(launch, done)


def runner_main(launch: TaskLaunch, done: Connection | None = None) -> None:
    """Entry point of a runner process (the forked child).

    ``done`` is told the task's id once its result is written, so the scheduler records the end
    (and frees its cores) without waiting for this process to be reaped.
    """
    os.setsid()
    files = TaskFiles(launch.task_dir)
    log_fd = os.open(files.runner_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)  # noqa: SIM115
    if not take_claim(files, launch.claim):
        print(f"task {launch.task_id}: this launch was withdrawn; not running it", flush=True)
        os._exit(0)
    task = TesTask.model_validate(launch.task)
    network = launch.sandbox.network if launch.sandbox is not None else True
    backend = make_backend(launch.backend, launch.container_binary, sandbox_network=network)
    # Only the host backends can use a path in place: a container sees the task's mounts.
    same = in_place_paths(task) if not backend.uses_images else set()
    run = _Run(launch, task, files, backend, PathMap(files.root, declared_paths(task), same))

    def on_term(signum: int, _frame: Any) -> None:
        # Cancelled: the executors share this process group and got the signal too; what a
        # container runtime runs outside it is removed here.
        if run.current is not None:
            with contextlib.suppress(Exception):
                backend.cleanup(run.current)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = now_rfc3339()
    try:
        state = _run_task(run)
    except TaskFailure as failure:
        state = failure.state
        run.system_logs.append(failure.message)
    except Exception as exc:  # a bug here must still end the task with a reason
        state = "SYSTEM_ERROR"
        run.system_logs.append(f"task runner failed: {type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
    log = {
        "logs": run.executor_logs,
        "start_time": started,
        "end_time": now_rfc3339(),
        "outputs": run.outputs,
        "system_logs": run.system_logs,
    }
    tmp = files.result.with_suffix(".tmp")
    tmp.write_text(json.dumps({"state": state, "log": log}), encoding="utf-8")
    os.replace(tmp, files.result)
    if done is not None:
        with contextlib.suppress(OSError, ValueError):
            done.send_bytes(launch.task_id.encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def take_claim(files: TaskFiles, token: str) -> bool:
    """Lock the task for this runner (for its whole life) if its launch still stands.

    The scheduler writes a fresh token to ``claim`` before it forks a runner. A scheduler that
    recovers a task it cannot tell was started takes the lock itself and withdraws the claim,
    so a runner forked just before a crash can never run a task a second time.
    """
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until this process exits; the fd is never closed
    try:
        current = files.claim.read_text(encoding="ascii").strip()
    except OSError:
        current = ""
    if not token or current != token:
        return False
    files.pid.write_text(f"{os.getpid()}\n", encoding="ascii")
    return True


def probe_runner(files: TaskFiles, patience: float = 5.0) -> int | None:
    """The pid of the runner holding the task, or None when no runner holds it.

    When none does, the claim is withdrawn under the lock, so that no runner forked earlier
    can start the task afterwards. A runner writes its pid right after taking the lock; if the
    lock is held and the pid not there yet, this waits (up to ``patience`` seconds).
    """
    try:
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o640)
    except FileNotFoundError:
        return None  # no task directory: nothing was ever started
    deadline = time.monotonic() + patience
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return int(files.pid.read_text(encoding="ascii").strip())
                except (OSError, ValueError):
                    # Taken a moment ago (pid not written yet), or by a runner that found the
                    # claim withdrawn and is leaving: ask again.
                    if time.monotonic() > deadline:
                        raise TaskFailure(
                            "SYSTEM_ERROR", "the task's runner holds its lock but gave no pid"
                        ) from None
                    time.sleep(0.02)
                    continue
            with contextlib.suppress(FileNotFoundError):
                files.claim.unlink()
            return None
    finally:
        os.close(fd)


def _lower_priority(niceness: int) -> None:
    """Executors run at the node's niceness so the API stays responsive on a busy machine.

    Set here, once the inputs are staged, rather than when the runner starts: the runner's
    own start is then not held back by the server it reports to. The session's scheduler
    autogroup gets it too (see ``wes_bridge.drivers``).
    """
    lower_priority(niceness)


def _run_task(run: _Run) -> str:
    files, task = run.files, run.task
    files.root.mkdir(parents=True, exist_ok=True)
    files.tmp.mkdir(parents=True, exist_ok=True)
    if not run.backend.uses_images:
        images = sorted({ex.image for ex in task.executors})
        run.system_logs.append(run.backend.describe() + f" (image {', '.join(images)} not used)")
    else:
        run.system_logs.append(run.backend.describe())
    _prepare_sandbox(run)  # refuses what the sandbox never shows before anything is copied
    for item in task.inputs or []:
        _stage_input(run, item)
    for volume in task.volumes or []:
        run.paths.host(volume).mkdir(parents=True, exist_ok=True)
    for out in task.outputs or []:
        # Where executors write outputs must exist: directories (and the prefix of a wildcard
        # output) themselves, and the parent of a file.
        if has_wildcards(out.path) and out.path_prefix:
            run.paths.host(out.path_prefix).mkdir(parents=True, exist_ok=True)
        elif out.type == "DIRECTORY":
            run.paths.host(out.path).mkdir(parents=True, exist_ok=True)
        else:
            run.paths.host(out.path).parent.mkdir(parents=True, exist_ok=True)
    if _prepare_sandbox(run):
        assert isinstance(run.backend, SandboxBackend)
        run.system_logs.append(run.backend.summary())
    _lower_priority(run.launch.niceness)
    run.event("state", state="RUNNING")
    state = "COMPLETE"
    for index, executor in enumerate(task.executors):
        exit_code = _run_executor(run, index, executor)
        if exit_code != 0 and not executor.ignore_error:
            run.system_logs.append(f"executor {index} exited with code {exit_code}")
            state = "EXECUTOR_ERROR"
            break
    if state == "COMPLETE":
        for out in task.outputs or []:
            _deliver_output(run, out)
    return state


def _prepare_sandbox(run: _Run) -> bool:
    """Work out what a sandboxed task sees (False: not sandboxed)."""
    if not isinstance(run.backend, SandboxBackend):
        return False
    policy = run.launch.sandbox
    if policy is None:
        raise TaskFailure("SYSTEM_ERROR", "the sandbox backend was started without its policy")
    try:
        run.backend.prepare(run.task, run.paths, run.files.task_dir, policy)
    except SandboxRefused as exc:
        raise TaskFailure("SYSTEM_ERROR", f"refused by the sandbox: {exc}") from exc
    return True


def progress_log(task_dir: Path, tail_bytes: int) -> dict[str, Any] | None:
    """The task log so far of a task whose runner is still going, from its events file.

    Executors that have ended are listed with their exit codes and output tails (the one
    running has no exit code yet, which the spec requires, so it is not listed).
    """
    files = TaskFiles(task_dir)
    try:
        lines = files.events.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    started: dict[int, str] = {}
    executors: list[dict[str, Any]] = []
    first: str | None = None
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        first = first or event.get("time")
        if event.get("event") == "executor_started":
            started[int(event["index"])] = event["time"]
        elif event.get("event") == "executor_ended":
            index = int(event["index"])
            executors.append(
                {
                    "start_time": started.get(index, event["time"]),
                    "end_time": event["time"],
                    "stdout": _tail(files.executor_stream(index, "stdout"), tail_bytes),
                    "stderr": _tail(files.executor_stream(index, "stderr"), tail_bytes),
                    "exit_code": int(event["exit_code"]),
                }
            )
    if first is None:
        return None
    return {"logs": executors, "outputs": [], "start_time": first}


# -- inputs ---------------------------------------------------------------------------------
def _local_path(url: str, what: str) -> Path | None:
    try:
        return local_path(url)
    except ValueError as exc:
        raise TaskFailure("SYSTEM_ERROR", f"{what}: {exc}") from exc


def _checked_local(url: str, roots: list[Path], what: str) -> Path:
    path = _local_path(url, what)
    assert path is not None
    if not within(path, roots):
        raise TaskFailure(
            "SYSTEM_ERROR",
            f"{what}: {path} is outside the directories this TES may use for that",
        )
    return Path(os.path.realpath(path))


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    link_or_copy(source, target)


def _stage_input(run: _Run, item: TesInput) -> None:
    target = run.paths.host(item.path)
    what = f"input {item.path}"
    if (
        item.url is not None
        and run.paths.is_in_place(item.path)
        and item.path in run.paths.in_place
    ):
        # The input is its own place on this host: checked against the roots, not copied.
        source = _checked_local(item.url, run.launch.input_roots, what)
        if not source.exists():
            raise TaskFailure("SYSTEM_ERROR", f"{what}: {item.path} does not exist")
        return
    if item.content is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content, encoding="utf-8")
        return
    assert item.url is not None
    local = _local_path(item.url, what)
    if local is None:
        scheme = urlsplit(item.url).scheme
        if scheme not in ("http", "https"):
            raise TaskFailure(
                "SYSTEM_ERROR", f"{what}: URL scheme {scheme!r} is not supported by this TES"
            )
        if item.type == "DIRECTORY":
            raise TaskFailure("SYSTEM_ERROR", f"{what}: a DIRECTORY cannot come from http(s)")
        _fetch(run, item.url, target, what)
        return
    source = _checked_local(item.url, run.launch.input_roots, what)
    if item.type == "DIRECTORY":
        if not source.is_dir():
            raise TaskFailure("SYSTEM_ERROR", f"{what}: {local} is not a directory")
        _copy_tree(source, target, run.launch.input_roots, what)
    else:
        if not source.is_file():
            raise TaskFailure("SYSTEM_ERROR", f"{what}: {local} is not a file")
        _link_or_copy(source, target)


def _copy_tree(source: Path, target: Path, roots: list[Path], what: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        rel = Path(dirpath).relative_to(source)
        for name in dirnames:
            (target / rel / name).mkdir(exist_ok=True)
        for name in filenames:
            real = Path(os.path.realpath(Path(dirpath) / name))
            if not within(real, roots):
                raise TaskFailure(
                    "SYSTEM_ERROR", f"{what}: {rel / name} links outside the allowed directories"
                )
            if real.is_file():
                _link_or_copy(real, target / rel / name)


def _fetch(run: _Run, url: str, target: Path, what: str) -> None:
    policy = run.launch.fetch
    settings = _FetchSettings(policy)
    try:
        check_url_host(url, settings)  # type: ignore[arg-type]
    except WesError as exc:
        raise TaskFailure("SYSTEM_ERROR", f"{what}: {exc.msg}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(policy.timeout_seconds),
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise TaskFailure(
                    "SYSTEM_ERROR", f"{what}: GET {url} gave HTTP {response.status_code}"
                )
            with open(target, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise TaskFailure(
                            "SYSTEM_ERROR", f"{what}: {url} is over {policy.max_bytes} bytes"
                        )
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise TaskFailure("SYSTEM_ERROR", f"{what}: fetching {url} failed: {exc}") from exc


class _FetchSettings:
    """The two settings ``check_url_host`` reads, from a task's fetch policy."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.url_fetch_allowed_hosts = policy.allowed_hosts
        self.url_fetch_allow_private = policy.allow_private


# -- executors ------------------------------------------------------------------------------
def _tail(path: Path, limit: int) -> str:
    if limit <= 0:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _run_executor(run: _Run, index: int, executor: TesExecutor) -> int:
    paths, files = run.paths, run.files
    command = run.backend.command(run.launch.task_id, index, executor, paths, files.tmp)
    command.cwd.mkdir(parents=True, exist_ok=True)
    stdout_path = paths.host(executor.stdout) if executor.stdout else None
    stderr_path = paths.host(executor.stderr) if executor.stderr else None
    stdout_file = stdout_path or files.executor_stream(index, "stdout")
    stderr_file = stderr_path or files.executor_stream(index, "stderr")
    for p in (stdout_file, stderr_file):
        p.parent.mkdir(parents=True, exist_ok=True)
    started = now_rfc3339()
    run.event("executor_started", index=index)
    stdin_cm: Any = (
        open(paths.host(executor.stdin), "rb")  # noqa: SIM115
        if executor.stdin
        else open(os.devnull, "rb")  # noqa: SIM115
    )
    try:
        with stdin_cm as stdin, open(stdout_file, "wb") as out, open(stderr_file, "wb") as err:
            run.current = command
            try:
                proc = subprocess.Popen(
                    command.argv,
                    stdin=stdin,
                    stdout=out,
                    stderr=err,
                    cwd=command.cwd,
                    env=command.env,
                    close_fds=True,
                )
            except OSError as exc:
                err.write(f"cannot start {command.argv[0]!r}: {exc.strerror}\n".encode())
                exit_code = 127
            else:
                code = proc.wait()
                exit_code = code if code >= 0 else 128 - code
            run.current = None
    except FileNotFoundError as exc:
        raise TaskFailure(
            "EXECUTOR_ERROR", f"executor {index}: stdin {executor.stdin} does not exist"
        ) from exc
    for declared, stream in ((stdout_path, "stdout"), (stderr_path, "stderr")):
        if declared is not None:
            # The task's own copy of a redirected stream (the file may be moved or deleted
            # by whoever owns it, e.g. a workflow engine collecting its outputs).
            with contextlib.suppress(OSError):
                _link_or_copy(declared, files.executor_stream(index, stream))
    limit = run.launch.tail_bytes
    run.executor_logs.append(
        {
            "start_time": started,
            "end_time": now_rfc3339(),
            "stdout": _tail(stdout_file, limit),
            "stderr": _tail(stderr_file, limit),
            "exit_code": exit_code,
        }
    )
    run.event("executor_ended", index=index, exit_code=exit_code)
    return exit_code


# -- outputs --------------------------------------------------------------------------------
def _deliver_output(run: _Run, out: TesOutput) -> None:
    what = f"output {out.path}"
    destination = _local_path(out.url, what)
    if destination is None:
        raise TaskFailure(
            "SYSTEM_ERROR",
            f"{what}: only file:// output URLs are supported by this TES, not {out.url!r}",
        )
    roots = run.launch.output_roots
    if has_wildcards(out.path):
        assert out.path_prefix is not None
        prefix = out.path_prefix.rstrip("/")
        pattern = str(run.paths.host(out.path))
        for match in sorted(glob.glob(pattern)):
            container = "/" + str(Path(match).relative_to(run.paths.root))
            relative = container[len(prefix) :].lstrip("/")
            _deliver_one(run, Path(match), container, destination / relative, roots, what)
        return
    source = run.paths.host(out.path)
    if not source.exists():
        raise TaskFailure("SYSTEM_ERROR", f"{what}: the task did not create {out.path}")
    if out.path in run.paths.in_place:
        # Written where it belongs: nothing to deliver, once its place is allowed.
        if not within(destination, roots):
            raise TaskFailure(
                "SYSTEM_ERROR",
                f"{what}: {destination} is outside the directories outputs may go to",
            )
        run.outputs.append(
            {"url": out.url, "path": out.path, "size_bytes": str(_tree_size(source))}
        )
        return
    if out.type == "DIRECTORY" and not source.is_dir():
        raise TaskFailure("SYSTEM_ERROR", f"{what}: {out.path} is not a directory")
    if out.type == "FILE" and not source.is_file():
        raise TaskFailure("SYSTEM_ERROR", f"{what}: {out.path} is not a file")
    _deliver_one(run, source, out.path, destination, roots, what)


def _tree_size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(
        (Path(d) / f).stat().st_size
        for d, _dirs, files in os.walk(path)
        for f in files
        if not (Path(d) / f).is_symlink()
    )


def _deliver_one(
    run: _Run, source: Path, container: str, destination: Path, roots: list[Path], what: str
) -> None:
    resolved = Path(os.path.realpath(destination))
    if not within(resolved, roots):
        raise TaskFailure(
            "SYSTEM_ERROR", f"{what}: {destination} is outside the directories outputs may go to"
        )
    if source.is_dir():
        destination.mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(source):
            for name in sorted(dirnames):
                # Directories too, empty ones included: they can be outputs of their own.
                sub = Path(dirpath) / name
                if not sub.is_symlink():
                    (destination / sub.relative_to(source)).mkdir(exist_ok=True)
            for name in sorted(filenames):
                file = Path(dirpath) / name
                rel = file.relative_to(source)
                _deliver_file(run, file, f"{container}/{rel}", destination / rel)
        return
    _deliver_file(run, source, container, destination)


def _deliver_file(run: _Run, source: Path, container: str, destination: Path) -> None:
    if source.is_symlink() and not within(
        Path(os.path.realpath(source)), [run.paths.root, *run.launch.input_roots]
    ):
        raise TaskFailure(
            "SYSTEM_ERROR", f"output {container} links outside the task's directories"
        )
    tmp = destination.with_name(f".{destination.name}.wes-bridge-tmp")
    _link_or_copy(Path(os.path.realpath(source)), tmp)
    os.replace(tmp, destination)
    run.outputs.append(
        {
            "url": destination.as_uri(),
            "path": container,
            "size_bytes": str(destination.stat().st_size),
        }
    )
