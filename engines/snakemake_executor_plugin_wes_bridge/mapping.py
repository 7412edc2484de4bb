"""Snakemake <-> TES, as pure functions: task states, resources and failure reports."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

from wes_bridge.tes.client import task_exit_code as exit_code
from wes_bridge.tes.client import task_stderr_tail as stderr_tail
from wes_bridge.tes.client import task_system_logs as system_logs

__all__ = [
    "ACTIVE_STATES",
    "FAILED_STATES",
    "TAIL_CHARS",
    "Verdict",
    "classify",
    "exit_code",
    "failure_message",
    "runtime_seconds",
    "stderr_tail",
    "system_logs",
    "tes_resources",
]

TAIL_CHARS = 2000
"""How much of a failed task's stderr a report carries."""

#: States a task may still leave: Snakemake keeps waiting. UNKNOWN (or a state this TES
#: client has never heard of) is waited through as well.
ACTIVE_STATES = frozenset({"QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING", "UNKNOWN"})
#: Ends that fail the job. PREEMPTED too: Snakemake's own --retries decides about another try.
FAILED_STATES = frozenset({"EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})


class Verdict(enum.Enum):
    ACTIVE = "active"
    SUCCESS = "success"
    FAILURE = "failure"


def classify(state: str | None) -> Verdict:
    """What a task state means for its Snakemake job."""
    if state == "COMPLETE":
        return Verdict.SUCCESS
    if state in FAILED_STATES:
        return Verdict.FAILURE
    return Verdict.ACTIVE


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def tes_resources(
    resources: Mapping[str, Any], threads: int | None = None, preemptible: bool = False
) -> dict[str, Any]:
    """A TES ``resources`` block for a job's Snakemake resources.

    ``_cores`` (the job's threads; a group job's total) becomes ``cpu_cores``, ``mem_mb``
    (else ``mem_mib``) ``ram_gb`` and ``disk_mb`` (else ``disk_mib``) ``disk_gb``; Snakemake's
    megabytes are 10**6 bytes, TES's gigabytes 10**9 (mebibytes are converted as such).
    """
    cores = _number(resources.get("_cores")) or _number(threads) or 1.0
    block: dict[str, Any] = {"cpu_cores": max(1, math.ceil(cores))}
    for tes_key, decimal_key, binary_key in (
        ("ram_gb", "mem_mb", "mem_mib"),
        ("disk_gb", "disk_mb", "disk_mib"),
    ):
        megabytes = _number(resources.get(decimal_key))
        if megabytes is None:
            mebibytes = _number(resources.get(binary_key))
            megabytes = mebibytes * 1.048576 if mebibytes is not None else None
        if megabytes is not None:
            block[tes_key] = round(megabytes / 1000, 3)
    if preemptible:
        block["preemptible"] = True
    return block


def runtime_seconds(resources: Mapping[str, Any]) -> float | None:
    """The job's ``runtime`` resource (minutes, as Snakemake keeps it) in seconds, or None.

    TES 1.1 has no time limit, so the executor enforces it: it cancels a task that has been
    RUNNING for longer.
    """
    minutes = _number(resources.get("runtime"))
    return minutes * 60 if minutes is not None else None


def failure_message(
    task_id: str,
    task: Mapping[str, Any],
    *,
    timed_out_after: float | None = None,
) -> str:
    """Why a job failed, from its task (FULL view): the state, exit code, the TES's notes and
    the tail of stderr."""
    state = str(task.get("state") or "UNKNOWN")
    code = exit_code(task)
    if timed_out_after is not None:
        head = (
            f"TES task {task_id} exceeded the job's runtime of {timed_out_after / 60:g} min "
            f"and was cancelled (state {state})"
        )
    elif state == "PREEMPTED":
        head = f"TES task {task_id} was preempted (state PREEMPTED)"
    else:
        head = f"TES task {task_id} ended {state}"
    if code is not None:
        head += f" with exit code {code}"
    parts = [head + "."]
    notes = system_logs(task)
    if notes:
        parts.append("TES system log: " + "; ".join(notes))
    tail = stderr_tail(task)
    if tail:
        parts.append("stderr tail:\n" + tail.rstrip("\n"))
    return "\n".join(parts) + "\n"
