"""The process tasks of a Nextflow run, listed in the run's task list as they start and end.

Two sources, the same tasks:

* :class:`WorkDirWatcher` follows Nextflow's task work directories, whose files are the
  contract between Nextflow and every executor it has (``.command.run`` names the task in its
  header, the task wrapper creates ``.command.begin`` when the task starts and writes its exit
  status to ``.exitcode`` when it ends). It needs nothing but Nextflow itself, so it is what a
  node without the ``nf-weblog`` plugin uses (Nextflow 24.10 moved ``-with-weblog`` into that
  plugin, which is not on Maven Central).
* :class:`WeblogListener` receives Nextflow's ``-with-weblog`` events (``process_started``,
  ``process_completed``, ... with the task's trace record) on a secret path of a small HTTP
  server, when the node has ``nf-weblog``.

Either one calls :class:`ProcessTasks`, which reports each task through the run's
:class:`~wes_bridge.plugin.TaskReporter` (its id is ``nf-`` and its work directory's hash, its
logs the task's ``.command.out``/``.command.err``) and remembers the failures for the run log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from wes_bridge.plugin import TaskReporter

__all__ = ["ProcessFailure", "ProcessTasks", "WeblogListener", "WorkDirWatcher", "file_tail"]

log = logging.getLogger(__name__)

_MAX_EVENT = 4 << 20
_TAIL = 2000
_NAME = re.compile(r"^### name: '((?:[^']|'')*)'$", re.MULTILINE)
_HEX = re.compile(r"^[0-9a-f]{2}$")


def file_tail(path: Path, limit: int = _TAIL) -> str:
    """The last ``limit`` bytes of a text file (decoded leniently), or "" if unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


_STOPPED = frozenset({130, 137, 143})  # the task wrapper's status after SIGINT, SIGKILL, SIGTERM


def _exit_code(workdir: Path) -> int | None:
    """The status the task wrapper wrote to ``.exitcode``, or None (none yet, or unreadable)."""
    text = file_tail(workdir / ".exitcode").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def task_key(workdir: Path) -> str:
    """The WES task id of the Nextflow task working in ``workdir`` (``work/ab/cdef...``)."""
    return f"nf-{workdir.parent.name}{workdir.name}"


@dataclass
class ProcessFailure:
    """A process task that did not complete, as the run log reports it."""

    task_id: str
    name: str
    status: str
    exit_code: int | None
    workdir: str

    def describe(self) -> str:
        what = (
            f"exited with code {self.exit_code}"
            if self.exit_code is not None
            else f"ended {self.status}"
        )
        text = f"step {self.name} (task {self.task_id}) {what}"
        if self.workdir:
            text += f" in {self.workdir}"
            tail = file_tail(Path(self.workdir) / ".command.err").rstrip("\n")
            if tail:
                text += f"; stderr tail:\n{tail}"
        return text


@dataclass
class ProcessTasks:
    """Reports Nextflow's process tasks to the run's task list, each start and end once.

    ``tes_uri`` maps a task's native id to its TES task URL when processes are TES tasks.
    """

    reporter: TaskReporter
    tes_uri: Callable[[str], str | None] | None = None
    failures: list[ProcessFailure] = field(default_factory=list)
    _started: set[str] = field(default_factory=set)
    _ended: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, workdir: Path, name: str, native_id: str = "") -> None:
        key = task_key(workdir)
        with self._lock:
            if key in self._started:
                return
            self._started.add(key)
            uri = self.tes_uri(native_id) if self.tes_uri is not None and native_id else None
            self.reporter.started(
                key,
                name,
                cmd=["bash", "-ue", str(workdir / ".command.sh")],
                stdout=workdir / ".command.out",
                stderr=workdir / ".command.err",
                tes_uri=uri,
            )

    def finish(
        self,
        workdir: Path,
        name: str,
        exit_code: int | None,
        status: str,
        native_id: str = "",
        report_start: bool = True,
    ) -> None:
        if report_start:
            self.start(workdir, name, native_id)
        key = task_key(workdir)
        with self._lock:
            if key in self._ended:
                return
            self._ended.add(key)
            notes = [f"Nextflow task {workdir.parent.name}/{workdir.name[:6]} {status}"]
            if native_id:
                notes.append(f"native id {native_id}")
            notes.append(f"work dir {workdir}")
            if status in ("COMPLETED", "CACHED") and exit_code in (0, None):
                state = "COMPLETE"
            elif status == "ABORTED":
                state = "CANCELED"
            else:
                state = "EXECUTOR_ERROR"
                self.failures.append(ProcessFailure(key, name, status, exit_code, str(workdir)))
            self.reporter.finished(key, state, exit_code=exit_code, system_logs=notes)

    def abandon(self, workdir: Path, name: str) -> None:
        """A task a lost driver's Nextflow left unfinished: it ended with that Nextflow."""
        key = task_key(workdir)
        with self._lock:
            if key in self._ended:
                return
            self._ended.add(key)
            self._started.add(key)
            self.reporter.finished(
                key,
                "CANCELED",
                system_logs=[
                    f"Nextflow task {workdir.parent.name}/{workdir.name[:6]} was stopped with "
                    "the run's earlier Nextflow (its driver was lost)",
                    f"work dir {workdir}",
                ],
            )

    # -- weblog events --------------------------------------------------------------------------
    def handle(self, event: dict[str, Any]) -> None:
        """One ``-with-weblog`` event."""
        kind = str(event.get("event") or "")
        trace = event.get("trace")
        if not isinstance(trace, dict) or not trace.get("workdir"):
            return
        workdir = Path(str(trace["workdir"]))
        name = str(trace.get("name") or trace.get("process") or workdir.name)
        native = str(trace.get("native_id") or "")
        if kind == "process_started":
            self.start(workdir, name, native)
        elif kind == "process_completed":
            code = trace.get("exit")
            exit_code = code if isinstance(code, int) and code != 2147483647 else None
            self.finish(workdir, name, exit_code, str(trace.get("status") or ""), native)


class WorkDirWatcher:
    """Follows the task directories under Nextflow's work directory (see the module doc)."""

    def __init__(self, work_dir: Path, tasks: ProcessTasks, interval: float = 1.0) -> None:
        self.work_dir = work_dir
        self.tasks = tasks
        self.interval = interval
        self._names: dict[Path, str] = {}
        self._done: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nextflow-tasks", daemon=True)

    def close_previous(self) -> None:
        """Before Nextflow starts again on a run whose driver was lost: the task directories
        already there are the earlier Nextflow's. Those that ended were reported then; those
        that had not are reported stopped; none of them is followed again."""
        for workdir in self._task_dirs():
            self._done.add(workdir)
            if not (workdir / ".command.begin").exists():
                continue  # never started
            match = _NAME.search(file_tail(workdir / ".command.run", 1 << 16)[:4096])
            name = match.group(1).replace("''", "'") if match else "?"
            code = _exit_code(workdir)
            if code is None or code in _STOPPED:
                self.tasks.abandon(workdir, name)
            else:  # it ended before: the lost driver may not have said so
                status = "COMPLETED" if code == 0 else "FAILED"
                self.tasks.finish(workdir, name, code, status, report_start=False)

    def _task_dirs(self) -> list[Path]:
        try:
            prefixes = [d for d in os.scandir(self.work_dir) if _HEX.match(d.name) and d.is_dir()]
        except OSError:
            return []
        found = []
        for prefix in prefixes:
            try:
                found += [Path(e.path) for e in os.scandir(prefix.path) if e.is_dir()]
            except OSError:
                continue
        return found

    def scan(self) -> None:
        """Report what changed since the last scan."""
        for workdir in self._task_dirs():
            if workdir not in self._done:
                self._visit(workdir)

    def _visit(self, workdir: Path) -> None:
        name = self._names.get(workdir)
        if name is None:
            match = _NAME.search(file_tail(workdir / ".command.run", 1 << 16)[:4096])
            if match is None:
                return  # not written yet
            name = self._names[workdir] = match.group(1).replace("''", "'")
        if (workdir / ".exitcode").exists():
            code = _exit_code(workdir)
            if code is None:
                return  # being written
            self.tasks.finish(workdir, name, code, "COMPLETED" if code == 0 else "FAILED")
            self._done.add(workdir)
        elif (workdir / ".command.begin").exists():
            self.tasks.start(workdir, name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # the watcher must outlive one odd directory
                log.exception("could not follow Nextflow's task directories")

    def __enter__(self) -> WorkDirWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.scan()  # what ended last


class WeblogListener:
    """An HTTP endpoint for Nextflow's weblog, on ``host`` at a free port, one secret path."""

    def __init__(self, handle: Callable[[dict[str, Any]], None], host: str = "127.0.0.1"):
        self._handle = handle
        self._path = "/weblog/" + secrets.token_urlsafe(24)
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != listener._path:
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > _MAX_EVENT:
                    self.send_error(400)
                    return
                try:
                    event = json.loads(self.rfile.read(length))
                except ValueError:
                    self.send_error(400)
                    return
                if isinstance(event, dict):
                    try:
                        listener._handle(event)
                    except Exception:  # one bad event must not stop the next ones
                        log.exception("could not record a Nextflow weblog event")
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # no access log on the run's stderr

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="nextflow-weblog", daemon=True
        )

    @property
    def url(self) -> str:
        address = self._server.server_address
        host, port = str(address[0]), address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{self._path}"

    def __enter__(self) -> WeblogListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
