"""A JSON-lines record of the TES tasks of one Snakemake run, and what failed in the end.

The executor appends one line when it submits a job's task and one when the task ends (or could
not be submitted). Whoever ran Snakemake reads it back afterwards: wes-bridge's Snakemake
adapter reports the failing step, its TES task, exit code and stderr tail from it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Journal", "TaskFailure", "final_failures", "read_journal"]


class Journal:
    """Appends records to a file; one ``write()`` of an O_APPEND file per record, so lines of
    concurrent writers never interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps(
            {"event": event, "time": time.time(), **fields},
            separators=(",", ":"),
            default=str,
        )
        data = (line + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The records in ``path`` (none if it does not exist; a torn last line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass(frozen=True)
class TaskFailure:
    """The last attempt of a Snakemake job, which failed."""

    step: str
    jobid: int | None
    task_id: str | None
    state: str
    exit_code: int | None
    stderr_tail: str
    message: str
    time: float


def final_failures(records: Iterable[dict[str, Any]]) -> list[TaskFailure]:
    """The jobs whose last attempt failed, the earliest failure first.

    A job that failed and then succeeded on a retry (Snakemake's ``--retries``, or after a
    preemption) is not among them.
    """
    last: dict[Any, dict[str, Any]] = {}
    for record in records:
        if record.get("event") not in ("submitted", "finished"):
            continue
        key = record.get("jobid", record.get("task_id"))
        last[key] = record
    failures = []
    for record in last.values():
        if record.get("event") != "finished" or record.get("state") == "COMPLETE":
            continue
        code = record.get("exit_code")
        jobid = record.get("jobid")
        failures.append(
            TaskFailure(
                step=str(record.get("step") or "?"),
                jobid=jobid if isinstance(jobid, int) else None,
                task_id=str(record["task_id"]) if record.get("task_id") else None,
                state=str(record.get("state") or "UNKNOWN"),
                exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                stderr_tail=str(record.get("stderr_tail") or ""),
                message=str(record.get("message") or ""),
                time=float(record.get("time") or 0.0),
            )
        )
    failures.sort(key=lambda f: f.time)
    return failures
