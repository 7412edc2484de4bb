#!/usr/bin/env python3
"""Benchmark the embedded GA4GH TES of wes-bridge (``wes-bridge tes serve``).

The server runs on a free 127.0.0.1 port with its data directory in a temporary directory; a
fresh server is started for each phase and stopped after it (SIGTERM, then SIGKILL of its
process group if it does not stop).  Measurements:

1) overhead:  a trivial task (``echo hi``, image ``alpine``: the host backend records the image
              but runs the command on the host) from ``POST /tasks`` until the client sees
              COMPLETE, polling ``GET /tasks/{id}?view=MINIMAL`` every --poll seconds; -n tasks
              one at a time after --warmup, interleaved with running ``echo hi`` directly
              (subprocess).  Overhead = median(TES) - median(direct); the target is < 50 ms.
              The FULL view's timestamps split each task into steps (medians).
2) drain:     after one warm-up task, --tasks tasks of ``sleep --task-seconds`` (cpu_cores 1
              each) submitted as fast as --concurrency client workers can, then waited for
              until all are terminal.
              tasks/s over first submit -> last terminal state, against the ideal
              cores / task-seconds (cores as GET /service-info reports them); peak RSS of the
              server's process tree (sampled every --sample-interval) and of its HTTP process;
              the most executors (and runners) that ever ran at once, from the FULL view logs,
              which must never exceed the cores.

Prints plain-text tables (and all samples as JSON with --json).  See --help.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_wes import fmt, loadavg, pctl, table
from wes_servers import (
    LOOPBACK,
    ServerStartError,
    WesServer,
    command_version,
    resolve_bin,
)

TES_PREFIX = "/ga4gh/tes/v1"
TERMINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
# Non-terminal states in the order a task moves through them (see all_terminal()).
ACTIVE_ORDER = ("QUEUED", "INITIALIZING", "RUNNING", "CANCELING")
TARGET_OVERHEAD_MS = 50.0
MB = 1024 * 1024


class BenchError(RuntimeError):
    """A request failed or a task did not end as expected."""


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


class TesServer(WesServer):
    """``wes-bridge tes serve`` in its own process group, data dir under ``workdir``."""

    kind = "wes-bridge tes"
    ready_timeout_s = 90.0

    def __init__(
        self,
        exe: str,
        workdir: Path,
        cores: int | None = None,
        log_level: str | None = None,
        niceness: int | None = None,
    ) -> None:
        super().__init__(exe, workdir)
        self.cores = cores
        self.log_level = log_level
        self.niceness = niceness
        self.stop_note = ""
        self.leftovers: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{TES_PREFIX}"

    def command(self) -> list[str]:
        cmd = [self.exe, "tes", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        cmd += ["--data-dir", str(self.workdir / "data")]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd

    def extra_env(self) -> dict[str, str]:
        env = {}
        if self.cores:
            env["WES_BRIDGE_TES__CPU_CORES"] = str(self.cores)
        if self.niceness is not None:
            env["WES_BRIDGE_DRIVER_NICENESS"] = str(self.niceness)
        return env

    def version(self) -> str:
        return command_version([self.exe, "--version"])

    def exited(self) -> str:
        """'' while the server process runs, else how it ended."""
        if self.proc is None or self.proc.poll() is None:
            return ""
        return f"exit code {self.proc.returncode}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def shutdown(self, grace_s: float = 15.0, leftover_grace_s: float = 5.0) -> None:
        """SIGTERM the server process; SIGKILL its process group if it does not stop in time.

        Records how it stopped (``stop_note``) and which of its descendants outlived it
        (``leftovers``), then kills those too (by pid, checking their start times).
        """
        proc = self.proc
        if proc is None:
            return
        seen: dict[int, tuple[psutil.Process, str]] = {}

        def track() -> None:
            with contextlib.suppress(psutil.Error):
                for p in psutil.Process(proc.pid).children(recursive=True):
                    if p.pid not in seen:
                        with contextlib.suppress(psutil.Error):
                            seen[p.pid] = (p, " ".join(p.cmdline())[:120])

        def alive() -> list[tuple[psutil.Process, str]]:
            out = []
            for p, cmd in seen.values():
                with contextlib.suppress(psutil.Error):
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        out.append((p, cmd))
            return out

        track()
        self.remember_children()
        if proc.poll() is not None:
            self.stop_note = f"had already exited with code {proc.returncode}"
        else:
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            while proc.poll() is None and time.monotonic() - t0 < grace_s:
                track()
                time.sleep(0.05)
            if proc.poll() is None:
                self.stop_note = (
                    f"did NOT stop within {grace_s:.0f} s of SIGTERM; SIGKILLed its process group"
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                self.stop_note = (
                    f"stopped {time.monotonic() - t0:.1f} s after SIGTERM, exit code "
                    f"{proc.returncode}"
                )
                if proc.returncode == -signal.SIGTERM:
                    self.stop_note += " (uvicorn re-raises the signal after a graceful shutdown)"
        # The forkserver and the resource tracker exit on their own once their parents have
        # gone (the forkserver ~0.5 s later); what is still running after that is left over.
        deadline = time.monotonic() + leftover_grace_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        for p, cmd in alive():
            self.leftovers.append(f"pid {p.pid}: {cmd}")
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.stop(grace_s=0.0)  # closes the log; sweeps anything remember_children() saw


# --------------------------------------------------------------------------
# Process-tree memory sampler
# --------------------------------------------------------------------------

ROLES = ("http", "supervisor", "forkserver", "runners", "executors", "other")


class TreeSampler:
    """Samples RSS of a process and all its descendants every ``interval`` seconds (a thread).

    Roles: the server's HTTP process; its ``multiprocessing.spawn`` child (the supervisor);
    the supervisor's forkserver; the forkserver's children (task runners); anything below a
    runner (executors); anything else (the resource tracker).
    """

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cmd: dict[tuple[int, float], str] = {}
        self._lock = threading.Lock()
        self.reset()
        self.first: dict[str, int] | None = None

    def reset(self) -> None:
        with self._lock:
            self.peak_total = 0
            self.peak_role = dict.fromkeys(ROLES, 0)
            self.peak_procs = 0
            self.peak_runners = 0
            self.samples = 0
            self.cost_s = 0.0

    def _cmdline(self, p: psutil.Process) -> str:
        key = (p.pid, p.create_time())
        if key not in self._cmd:
            self._cmd[key] = " ".join(p.cmdline())
        return self._cmd[key]

    def sample(self) -> dict[str, int] | None:
        t0 = time.perf_counter()
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        parent: dict[int, int] = {}
        rss: dict[int, int] = {}
        cmd: dict[int, str] = {}
        for p in procs:
            try:
                parent[p.pid] = p.ppid()
                rss[p.pid] = p.memory_info().rss
                cmd[p.pid] = self._cmdline(p)  # cached per process
            except psutil.Error:
                continue
        role: dict[int, str] = {self.pid: "http"}

        def role_of(pid: int, depth: int = 0) -> str:
            if pid in role:
                return role[pid]
            up = parent.get(pid)
            if up is None or depth > 50:
                return "other"
            r_up = role_of(up, depth + 1)
            if r_up == "http":
                r = "supervisor" if "multiprocessing.spawn" in cmd.get(pid, "") else "other"
            elif r_up == "supervisor":
                r = "forkserver" if "forkserver" in cmd.get(pid, "") else "other"
            elif r_up == "forkserver":
                r = "runners"
            elif r_up in ("runners", "executors"):
                r = "executors"
            else:
                r = "other"
            role[pid] = r
            return r

        sums = dict.fromkeys(ROLES, 0)
        runners = 0
        for pid, value in rss.items():
            r = role_of(pid)
            sums[r] += value
            runners += r == "runners"
        total = sum(sums.values())
        with self._lock:
            self.samples += 1
            self.peak_total = max(self.peak_total, total)
            self.peak_procs = max(self.peak_procs, len(rss))
            self.peak_runners = max(self.peak_runners, runners)
            for r in ROLES:
                self.peak_role[r] = max(self.peak_role[r], sums[r])
            self.cost_s += time.perf_counter() - t0
        out = {**sums, "total": total, "n_procs": len(rss)}
        if self.first is None:
            self.first = out
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def peaks(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.peak_total,
                **{r: v for r, v in self.peak_role.items()},
                "n_procs": self.peak_procs,
                "n_runners": self.peak_runners,
                "samples": self.samples,
                "sampler_cpu_s": round(self.cost_s, 3),
            }


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


def trivial_task(name: str) -> bytes:
    task = {"name": name, "executors": [{"image": "alpine", "command": ["echo", "hi"]}]}
    return json.dumps(task).encode()


def sleep_task(name: str, seconds: float) -> bytes:
    task = {
        "name": name,
        "resources": {"cpu_cores": 1},
        "executors": [{"image": "alpine", "command": ["sleep", f"{seconds:g}"]}],
    }
    return json.dumps(task).encode()


def describe_response(method: str, url: str, r: httpx.Response) -> str:
    return f"{method} {url} -> HTTP {r.status_code}: {r.text[:500]}"


class TesClient:
    def __init__(self, base_url: str, timeout: float, connections: int = 16) -> None:
        self.base = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            timeout=timeout,
            trust_env=False,  # loopback only, never through a proxy
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        try:
            r = await self.http.get(url, params=params)
        except httpx.HTTPError as e:
            raise BenchError(f"GET {url} params={params}: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise BenchError(describe_response("GET", str(r.request.url), r))
        return r.json()

    async def create(self, body: bytes) -> str:
        url = self.base + "/tasks"
        try:
            r = await self.http.post(
                url, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as e:
            raise BenchError(f"POST {url} {body[:200]!r}: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise BenchError(f"POST {url} {body[:200]!r} -> HTTP {r.status_code}: {r.text[:500]}")
        task_id = r.json().get("id")
        if not task_id:
            raise BenchError(f"POST {url} returned no id: {r.text[:500]}")
        return str(task_id)

    async def state(self, task_id: str) -> str:
        body = await self.get(f"/tasks/{task_id}", {"view": "MINIMAL"})
        return str(body.get("state", "UNKNOWN"))

    async def full(self, task_id: str) -> dict[str, Any]:
        return dict(await self.get(f"/tasks/{task_id}", {"view": "FULL"}))

    async def list_all(self, view: str, page_size: int = 256) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"view": view, "page_size": page_size}
            if token:
                params["page_token"] = token
            body = await self.get("/tasks", params)
            out += body.get("tasks") or []
            token = body.get("next_page_token")
            if not token:
                return out

    async def all_terminal(self) -> bool:
        """True if no task is in a non-terminal state.

        Queried state by state with page_size=1, in the order tasks move through the states:
        a task that moves on between two queries is caught by a later one, so an all-empty
        answer means every task was terminal at the last query.
        """
        for st in ACTIVE_ORDER:
            body = await self.get("/tasks", {"state": st, "page_size": 1, "view": "MINIMAL"})
            if body.get("tasks"):
                return False
        return True


# --------------------------------------------------------------------------
# Timestamps and statistics
# --------------------------------------------------------------------------


def ts(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def task_times(task: dict[str, Any]) -> dict[str, float | None]:
    logs = task.get("logs") or [{}]
    tl = logs[-1] if logs else {}
    ex = (tl.get("logs") or [{}])[0]
    return {
        "created": ts(task.get("creation_time")),
        "runner_start": ts(tl.get("start_time")),
        "exec_start": ts(ex.get("start_time")),
        "exec_end": ts(ex.get("end_time")),
        "runner_end": ts(tl.get("end_time")),
    }


# "2026-01-31 12:00:00,123 INFO    wes_bridge.tes: task <id> -> COMPLETE" (the supervisor's log,
# local time, millisecond resolution): when the scheduler recorded the task's final state.
_LOGGED_END = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+wes_bridge\.tes: "
    r"task ([0-9A-Za-z_-]+) -> ([A-Z_]+)\s*$"
)


def logged_ends(log_path: Path) -> dict[str, float]:
    """task id -> epoch seconds at which the server logged its final state (empty if none)."""
    out: dict[str, float] = {}
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = _LOGGED_END.match(line)
        if m and m.group(3) in TERMINAL:
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out[m.group(2)] = when + 0.0005  # the log truncates to the millisecond
    return out


def ms_stats(xs: Sequence[float]) -> dict[str, float | None]:
    return {
        "median": statistics.median(xs) if xs else None,
        "p90": pctl(xs, 0.9),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
    }


def max_overlap(intervals: Sequence[tuple[float, float]]) -> tuple[int, float | None]:
    """Most intervals open at one instant (touching ends do not overlap), and when."""
    events: list[tuple[float, int]] = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end (-1) before a start (+1) at the same time
    cur = best = 0
    when: float | None = None
    for t, d in events:
        cur += d
        if cur > best:
            best, when = cur, t
    return best, when


def handover_gaps(intervals: Sequence[tuple[float, float]], cores: int) -> list[float]:
    """ms from a slot becoming free to the next runner start, for a backlog on ``cores`` slots.

    The k-th runner to start (k >= cores) can only start after ``k - cores + 1`` runners have
    ended, so with the runners sorted by start and by end, start[k] - end[k - cores] is how
    long the slot it took stood empty.
    """
    starts = sorted(s for s, _ in intervals)
    ends = sorted(e for _, e in intervals)
    return [(starts[k] - ends[k - cores]) * 1000.0 for k in range(cores, len(starts))]


def cells(st: dict[str, float | None], keys: Sequence[str], spec: str = ".1f") -> list[str]:
    return [fmt(st[k], spec) for k in keys]


def mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / MB:.0f}"


# --------------------------------------------------------------------------
# Phase 1: overhead of a trivial task
# --------------------------------------------------------------------------


@dataclass
class Overhead:
    n: int = 0
    warmup: int = 0
    poll_s: float = 0.005
    tes_ms: list[float] = field(default_factory=list)
    direct_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    steps: list[dict[str, float | None]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    warmup_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rss: dict[str, Any] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)
    stop_note: str = ""
    leftovers: list[str] = field(default_factory=list)

    @property
    def overhead_ms(self) -> float | None:
        if not self.tes_ms or not self.direct_ms:
            return None
        return statistics.median(self.tes_ms) - statistics.median(self.direct_ms)


STEPS = (
    ("submit -> runner start", "client_submit", "runner_start"),
    ("  of which POST sent -> creation_time", "client_submit", "created"),
    ("  of which creation_time -> runner start", "created", "runner_start"),
    ("runner start -> executor start", "runner_start", "exec_start"),
    ("executor (echo hi)", "exec_start", "exec_end"),
    ("executor end -> task end", "exec_end", "runner_end"),
    ("task end -> client saw COMPLETE", "runner_end", "client_seen"),
    ("  of which task end -> server logged COMPLETE", "runner_end", "logged_end"),
    ("  of which that log line -> client saw it", "logged_end", "client_seen"),
)


def direct_echo() -> float:
    t0 = time.perf_counter()
    subprocess.run(["echo", "hi"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t0) * 1000.0


async def one_trivial(
    client: TesClient, i: int, poll_s: float, timeout_s: float
) -> tuple[str, float, float, int, dict[str, float | None]]:
    """(task id, total ms, POST ms, polls, step timestamps) of one echo task."""
    body = trivial_task(f"bench-echo-{i}")
    wall0 = time.time()
    t0 = time.perf_counter()
    task_id = await client.create(body)
    t1 = time.perf_counter()
    polls = 0
    while True:
        state = await client.state(task_id)
        polls += 1
        if state in TERMINAL:
            break
        if time.perf_counter() - t0 > timeout_s:
            full = await client.full(task_id)
            raise BenchError(
                f"task {task_id} still {state} after {timeout_s:.0f} s: {json.dumps(full)[:800]}"
            )
        await asyncio.sleep(poll_s)
    t2 = time.perf_counter()
    wall_seen = wall0 + (t2 - t0)
    full = await client.full(task_id)
    if state != "COMPLETE":
        raise BenchError(f"task {task_id} ended {state}: {json.dumps(full)[:1500]}")
    steps: dict[str, float | None] = {"client_submit": wall0, "client_seen": wall_seen}
    steps.update(task_times(full))
    return task_id, (t2 - t0) * 1000.0, (t1 - t0) * 1000.0, polls, steps


async def overhead_phase(
    server: TesServer, sampler: TreeSampler, args: argparse.Namespace, res: Overhead
) -> None:
    """Fills ``res`` as it goes (partial results survive an error)."""
    res.load.append(loadavg())
    client = TesClient(server.base_url, args.http_timeout, connections=4)
    try:
        for w in range(args.warmup):
            try:
                _, total, *_ = await one_trivial(client, -1 - w, args.poll, args.task_timeout)
                res.warmup_ms.append(total)
            except BenchError as e:
                res.failures.append(f"warm-up: {e}")
            direct_echo()
        sampler.reset()
        for i in range(args.n):
            try:
                task_id, total, post, polls, steps = await one_trivial(
                    client, i, args.poll, args.task_timeout
                )
            except BenchError as e:
                res.failures.append(str(e))
                if server.exited():
                    res.failures.append(f"the server exited: {server.exited()}")
                    break
            else:
                res.tes_ms.append(total)
                res.post_ms.append(post)
                res.polls.append(polls)
                res.steps.append(steps)
                res.ids.append(task_id)
            res.direct_ms.append(direct_echo())
            if args.progress:
                print(f"  overhead task {i + 1}/{args.n}", file=sys.stderr)
    finally:
        await client.aclose()
    res.rss = sampler.peaks()
    res.load.append(loadavg())
    logged = logged_ends(server.log_path)
    for task_id, steps in zip(res.ids, res.steps, strict=True):
        steps["logged_end"] = logged.get(task_id)


def step_rows(steps: Sequence[dict[str, float | None]]) -> list[tuple[str, list[float]]]:
    rows = []
    for label, a, b in STEPS:
        xs = []
        for s in steps:
            va, vb = s.get(a), s.get(b)
            if va is not None and vb is not None:
                xs.append((vb - va) * 1000.0)
        rows.append((label, xs))
    return rows


def print_overhead(res: Overhead) -> None:
    print(
        f"== 1) overhead of a trivial task: `echo hi` through TES vs. directly; "
        f"{res.n} tasks one at a time (+{res.warmup} warm-up), poll GET /tasks/{{id}} "
        f"(MINIMAL) every {res.poll_s * 1000:g} ms"
    )
    print(f"   load average during the phase: {res.load[0]} -> {res.load[-1]}")
    rows = []
    for label, xs in (
        ("TES: POST /tasks -> COMPLETE seen", res.tes_ms),
        ("direct: subprocess `echo hi`", res.direct_ms),
        ("TES: POST /tasks round trip", res.post_ms),
    ):
        st = ms_stats(xs)
        rows.append([label, str(len(xs)), *cells(st, ("median", "p90", "min", "max"))])
    print(table(["what", "n", "median ms", "p90 ms", "min ms", "max ms"], rows))
    if res.warmup_ms:
        print(
            "warm-up tasks (not counted), ms to COMPLETE seen: "
            + ", ".join(f"{x:.0f}" for x in res.warmup_ms)
            + " (the first one right after the server answered GET /service-info)"
        )
    oh = res.overhead_ms
    verdict = "n/a" if oh is None else ("OK" if oh < TARGET_OVERHEAD_MS else "OVER TARGET")
    print(
        f"overhead = median(TES) - median(direct) = {fmt(oh, '.1f')} ms "
        f"(target < {TARGET_OVERHEAD_MS:g} ms: {verdict}); "
        f"polls per task (median) {fmt(statistics.median(res.polls) if res.polls else None, 'g')}"
    )
    print()
    print("breakdown from the FULL view (creation_time, logs[0].start_time, executor start/end,")
    print("logs[0].end_time) and the client's clock (same machine), ms:")
    srows = []
    med_sum = 0.0
    for label, xs in step_rows(res.steps):
        st = ms_stats(xs)
        if not label.startswith("  ") and st["median"] is not None:
            med_sum += st["median"]
        srows.append(
            [label, fmt(st["median"], ".1f"), fmt(st["p90"], ".1f"), fmt(st["max"], ".1f")]
        )
    srows.append(["sum of the step medians", fmt(med_sum, ".1f"), "", ""])
    print(table(["step", "median ms", "p90 ms", "max ms"], srows))
    r = res.rss
    if r:
        print(
            f"server RSS during the phase (peak): tree {mb(r['total'])} MB, "
            f"HTTP process {mb(r['http'])} MB, {r['n_procs']} processes at most"
        )
    print(f"server stop: {res.stop_note}")


# --------------------------------------------------------------------------
# Phase 2: drain of a burst
# --------------------------------------------------------------------------


@dataclass
class Drain:
    tasks: int = 0
    task_s: float = 0.0
    concurrency: int = 8
    cores: int | None = None
    capacity: str = ""
    submitted: int = 0
    submit_wall_s: float | None = None
    post_ms: list[float] = field(default_factory=list)
    wall_s: float | None = None  # first submit -> all terminal (client)
    wall_server_s: float | None = None  # first submit -> last logs[0].end_time
    states: dict[str, int] = field(default_factory=dict)
    max_exec_overlap: int | None = None
    max_exec_overlap_at: float | None = None
    max_runner_overlap: int | None = None
    exec_ms: list[float] = field(default_factory=list)
    runner_to_exec_ms: list[float] = field(default_factory=list)
    exec_to_end_ms: list[float] = field(default_factory=list)
    end_to_logged_ms: list[float] = field(default_factory=list)
    queue_wait_s: list[float] = field(default_factory=list)
    handover_ms: list[float] = field(default_factory=list)
    warmup_ms: float | None = None
    failures: list[str] = field(default_factory=list)
    bad_tasks: list[str] = field(default_factory=list)
    timed_out: bool = False
    rss: dict[str, Any] = field(default_factory=dict)
    rss_idle: dict[str, int] | None = None
    load: list[str] = field(default_factory=list)
    stop_note: str = ""
    leftovers: list[str] = field(default_factory=list)
    intervals: list[list[float | None]] = field(default_factory=list)

    @property
    def per_s(self) -> float | None:
        return self.tasks / self.wall_s if self.wall_s else None

    @property
    def ideal(self) -> float | None:
        return self.cores / self.task_s if self.cores and self.task_s else None


CAPACITY_RE = re.compile(r"Capacity (\d+) CPU cores")


async def drain_phase(
    server: TesServer, sampler: TreeSampler, args: argparse.Namespace, res: Drain
) -> None:
    """Fills ``res`` as it goes (partial results survive an error)."""
    res.load.append(loadavg())
    client = TesClient(server.base_url, args.http_timeout, connections=args.concurrency + 4)
    try:
        info = await client.get("/service-info")
        res.capacity = str(info.get("description", ""))
        m = CAPACITY_RE.search(res.capacity)
        res.cores = int(m.group(1)) if m else None
        if res.cores is None:
            res.failures.append(f"service-info does not say 'Capacity N CPU cores': {info}")
        res.rss_idle = sampler.sample()
        # The server answers before its scheduler is up (the supervisor process and its
        # forkserver start in the background); one task first, so that the burst measures
        # the steady state and not the start-up.
        try:
            _, total, *_ = await one_trivial(client, -1, 0.02, args.task_timeout)
            res.warmup_ms = total
        except BenchError as e:
            res.failures.append(f"warm-up: {e}")
        sampler.reset()
        bodies = [sleep_task(f"bench-sleep-{i}", args.task_seconds) for i in range(args.tasks)]
        ids: dict[str, int] = {}
        submit_wall: dict[str, float] = {}
        todo = iter(range(args.tasks))
        t_first = time.perf_counter()
        wall_first = time.time()

        async def worker() -> None:
            for i in todo:
                t0 = time.perf_counter()
                try:
                    task_id = await client.create(bodies[i])
                except BenchError as e:
                    res.failures.append(str(e))
                    continue
                res.post_ms.append((time.perf_counter() - t0) * 1000.0)
                ids[task_id] = i
                submit_wall[task_id] = wall_first + (t0 - t_first)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        res.submitted = len(ids)
        res.submit_wall_s = time.perf_counter() - t_first
        if args.progress:
            print(
                f"  submitted {res.submitted}/{args.tasks} in {res.submit_wall_s:.1f} s",
                file=sys.stderr,
            )
        timeout = args.drain_timeout or (
            args.tasks * args.task_seconds / max(1, res.cores or 1) * 3 + 120
        )
        deadline = t_first + timeout
        last_report = time.perf_counter()
        queue_empty = False
        while True:
            try:
                # While tasks are queued, one cheap request per 0.5 s (the polling must not
                # compete with the server it measures); near the end, every --drain-poll.
                if not queue_empty:
                    body = await client.get("/tasks", {"state": "QUEUED", "page_size": 1})
                    queue_empty = not body.get("tasks")
                done = queue_empty and await client.all_terminal()
            except BenchError as e:
                res.failures.append(str(e))
                done = False
                if server.exited():
                    res.failures.append(f"the server exited: {server.exited()}")
                    break
            now = time.perf_counter()
            if done:
                res.wall_s = now - t_first
                break
            if now > deadline:
                res.timed_out = True
                res.failures.append(f"not all tasks terminal after {timeout:.0f} s")
                break
            if args.progress and now - last_report > 10:
                last_report = now
                print(f"  draining, {now - t_first:.0f} s since the first submit", file=sys.stderr)
            await asyncio.sleep(args.drain_poll if queue_empty else max(args.drain_poll, 0.5))
        res.rss = sampler.peaks()
        res.load.append(loadavg())

        # What happened, from the FULL view of every task.
        tasks = await client.list_all("FULL")
        seen = {t.get("id"): t for t in tasks}
        missing = [tid for tid in ids if tid not in seen]
        if missing:
            res.failures.append(f"{len(missing)} submitted tasks missing from GET /tasks")
        logged = logged_ends(server.log_path)
        ex_iv: list[tuple[float, float]] = []
        run_iv: list[tuple[float, float]] = []
        last_end: float | None = None
        for tid in ids:
            t = seen.get(tid)
            if t is None:
                continue
            st = str(t.get("state"))
            res.states[st] = res.states.get(st, 0) + 1
            tt = task_times(t)
            if st != "COMPLETE" and len(res.bad_tasks) < 5:
                res.bad_tasks.append(f"{tid}: {st}; {json.dumps(t.get('logs'))[:600]}")
            res.intervals.append(
                [
                    tt["created"],
                    tt["runner_start"],
                    tt["exec_start"],
                    tt["exec_end"],
                    tt["runner_end"],
                ]
            )
            if tt["exec_start"] is not None and tt["exec_end"] is not None:
                ex_iv.append((tt["exec_start"], tt["exec_end"]))
                res.exec_ms.append((tt["exec_end"] - tt["exec_start"]) * 1000.0)
            if tt["runner_start"] is not None and tt["runner_end"] is not None:
                run_iv.append((tt["runner_start"], tt["runner_end"]))
                last_end = max(last_end or 0.0, tt["runner_end"])
                res.queue_wait_s.append(tt["runner_start"] - submit_wall[tid])
            if tt["runner_start"] is not None and tt["exec_start"] is not None:
                res.runner_to_exec_ms.append((tt["exec_start"] - tt["runner_start"]) * 1000.0)
            if tt["exec_end"] is not None and tt["runner_end"] is not None:
                res.exec_to_end_ms.append((tt["runner_end"] - tt["exec_end"]) * 1000.0)
            if tt["runner_end"] is not None and tid in logged:
                res.end_to_logged_ms.append((logged[tid] - tt["runner_end"]) * 1000.0)
        res.max_exec_overlap, at = max_overlap(ex_iv)
        res.max_exec_overlap_at = at - wall_first if at is not None else None
        res.max_runner_overlap, _ = max_overlap(run_iv)
        if res.cores:
            res.handover_ms = handover_gaps(run_iv, res.cores)
        if last_end is not None:
            res.wall_server_s = last_end - wall_first
    finally:
        await client.aclose()


def print_drain(res: Drain) -> None:
    print(
        f"== 2) drain of a burst: {res.tasks} tasks `sleep {res.task_s:g}` (cpu_cores 1 each), "
        f"submitted by {res.concurrency} concurrent clients, then waited for"
    )
    print(f"   load average during the phase: {res.load[0]} -> {res.load[-1]}")
    m = CAPACITY_RE.search(res.capacity)
    cores = "n/a" if res.cores is None else str(res.cores)
    rows: list[list[str]] = []

    def row(k: str, v: str) -> None:
        rows.append([k, v])

    row("capacity (GET /service-info)", m.group(0) if m else "not reported")
    row("warm-up: first task right after start-up", f"{fmt(res.warmup_ms, '.0f')} ms to COMPLETE")
    pst = ms_stats(res.post_ms)
    row(
        "submitted",
        f"{res.submitted}/{res.tasks} in {fmt(res.submit_wall_s, '.1f')} s "
        f"({fmt(res.submitted / res.submit_wall_s if res.submit_wall_s else None, '.0f')}/s; "
        f"POST median {fmt(pst['median'], '.1f')} ms, p90 {fmt(pst['p90'], '.1f')} ms, "
        f"max {fmt(pst['max'], '.0f')} ms)",
    )
    row(
        "first submit -> all terminal (client)",
        f"{fmt(res.wall_s, '.2f')} s" + ("  (TIMED OUT)" if res.timed_out else ""),
    )
    row("first submit -> last task end (server logs)", f"{fmt(res.wall_server_s, '.2f')} s")
    row("tasks/s", fmt(res.per_s, ".3f"))
    row(f"ideal = cores / T = {cores} / {res.task_s:g}", fmt(res.ideal, ".3f"))
    ratio = res.per_s / res.ideal if res.per_s and res.ideal else None
    row("ratio tasks/s / ideal", fmt(ratio, ".3f"))
    if res.per_s and res.cores:
        lost = res.cores / res.per_s - res.task_s
        row("core-time lost per task (cores / (tasks/s) - T)", f"{lost * 1000:.0f} ms")
    states = ", ".join(f"{k} {v}" for k, v in sorted(res.states.items()) if k != "COMPLETE")
    row(
        "ended COMPLETE",
        f"{res.states.get('COMPLETE', 0)}/{res.tasks}" + (f" (others: {states})" if states else ""),
    )
    ok = (
        "n/a"
        if res.max_exec_overlap is None or res.cores is None
        else ("OK" if res.max_exec_overlap <= res.cores else f"EXCEEDS {res.cores} CORES")
    )
    row(
        "max executors running at once (FULL logs)",
        f"{res.max_exec_overlap} ({ok}; first reached {fmt(res.max_exec_overlap_at, '.1f')} s "
        "after the first submit)",
    )
    row("max runners alive at once (logs[0] start..end)", str(res.max_runner_overlap))
    rss = res.rss
    if rss:
        row("peak RSS, server process tree (sum)", f"{mb(rss['total'])} MB")
        row("peak RSS, HTTP process alone", f"{mb(rss['http'])} MB")
        row(
            "peak RSS by part (each at its own peak)",
            f"supervisor {mb(rss['supervisor'])} MB, forkserver {mb(rss['forkserver'])} MB, "
            f"runners {mb(rss['runners'])} MB, executors {mb(rss['executors'])} MB, "
            f"other {mb(rss['other'])} MB",
        )
        row(
            "peak processes in the tree / runners",
            f"{rss['n_procs']} / {rss['n_runners']} ({rss['samples']} samples)",
        )
    if res.rss_idle:
        row(
            "RSS when idle, before the burst",
            f"tree {mb(res.rss_idle['total'])} MB, HTTP {mb(res.rss_idle['http'])} MB, "
            f"{res.rss_idle['n_procs']} processes",
        )
    print(table(["metric", "value"], rows))
    print()
    print("per-task steps under load (FULL view), ms:")
    srows = []
    for label, xs in (
        ("slot free (a runner ended) -> next runner start", res.handover_ms),
        ("runner start -> executor start", res.runner_to_exec_ms),
        (f"executor (sleep {res.task_s:g})", res.exec_ms),
        ("executor end -> task end", res.exec_to_end_ms),
        ("task end -> server logged its final state", res.end_to_logged_ms),
    ):
        st = ms_stats(xs)
        srows.append([label, str(len(xs)), *cells(st, ("median", "p90", "max"))])
    print(table(["step", "n", "median ms", "p90 ms", "max ms"], srows))
    print(f"server stop: {res.stop_note}")


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


@contextlib.contextmanager
def work_root(keep: bool, failed: list[bool]) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tes-bench-"))
    try:
        yield d
    finally:
        if keep or failed[0]:
            why = "--keep" if keep else "there were failures"
            print(f"kept work directory ({why}): {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


async def run_phase(
    name: str, exe: str, root: Path, args: argparse.Namespace
) -> tuple[Overhead | Drain | None, TesServer, str]:
    server = TesServer(
        exe, root / name, cores=args.cores, log_level=args.log_level, niceness=args.niceness
    )
    print(f"phase {name}: starting {' '.join(server.command())} ...", file=sys.stderr)
    try:
        await server.start()
    except ServerStartError as e:
        return None, server, f"server did not start: {e}"
    assert server.pid is not None
    sampler = TreeSampler(server.pid, args.sample_interval)
    sampler.start()
    res: Overhead | Drain
    error = ""
    try:
        if name == "overhead":
            res = Overhead(n=args.n, warmup=args.warmup, poll_s=args.poll)
            await overhead_phase(server, sampler, args, res)
        else:
            res = Drain(tasks=args.tasks, task_s=args.task_seconds, concurrency=args.concurrency)
            await drain_phase(server, sampler, args, res)
    except (BenchError, httpx.HTTPError) as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        sampler.stop()
        await asyncio.to_thread(server.shutdown)
    if not res.rss:
        res.rss = sampler.peaks()
    if len(res.load) < 2:
        res.load.append(loadavg())
    res.stop_note = server.stop_note
    res.leftovers = server.leftovers
    return res, server, error


async def bench(args: argparse.Namespace) -> int:
    exe = resolve_bin("wes-bridge", args.wes_bridge)
    if exe is None:
        print("wes-bridge executable not found (--wes-bridge, WES_BRIDGE_BIN or PATH)")
        return 2
    meta: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_start": loadavg(),
        "python": platform.python_version(),
        "wes_bridge": exe,
        "wes_bridge_version": command_version([exe, "--version"]),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    results: dict[str, Any] = {}
    problems: list[str] = []
    failed = [False]
    with work_root(args.keep, failed) as root:
        for name in args.phases:
            res, server, error = await run_phase(name, exe, root, args)
            results[name] = res
            failures = list(res.failures) if res is not None else []
            if isinstance(res, Drain) and res.bad_tasks:
                failures += [f"not COMPLETE: {b}" for b in res.bad_tasks]
            if isinstance(res, Drain) and res.states.get("COMPLETE", 0) != res.tasks:
                failures.append(f"{res.tasks - res.states.get('COMPLETE', 0)} tasks not COMPLETE")
            if isinstance(res, Drain) and (
                res.max_exec_overlap is not None
                and res.cores is not None
                and res.max_exec_overlap > res.cores
            ):
                failures.append(
                    f"{res.max_exec_overlap} executors ran at once on {res.cores} cores"
                )
            if error:
                failures.insert(0, error)
            if res is not None and res.leftovers:
                failures.append(
                    f"{len(res.leftovers)} server processes outlived it: {res.leftovers[:3]}"
                )
            if "NOT stop" in server.stop_note or "already exited" in server.stop_note:
                failures.append(f"server {server.stop_note}")
            if failures:
                failed[0] = True
                problems.append(f"--- phase {name}: {len(failures)} problem(s)")
                problems += [f"  {f[:1500]}" for f in failures[:10]]
                problems.append(f"  server log: {server.log_path}")
                problems.append(server.log_tail(30))
        meta["load_end"] = loadavg()

        print()
        print(f"== TES benchmarks: {meta['wes_bridge_version']} ({exe}); Python {meta['python']}")
        print(
            f"   CPUs: {meta['cpus']} (usable by this process: {meta['cpus_usable']}); "
            f"load average at start {meta['load_start']}, at end {meta['load_end']}"
        )
        if isinstance(results.get("overhead"), Overhead):
            print()
            print_overhead(results["overhead"])
        if isinstance(results.get("drain"), Drain):
            print()
            print_drain(results["drain"])
        if problems:
            print()
            print("== problems")
            print("\n".join(problems))

        if args.json:
            out: dict[str, Any] = {
                "meta": meta,
                "args": {
                    k: v
                    for k, v in vars(args).items()
                    if isinstance(v, int | float | str | list) or v is None
                },
                "results": {k: (asdict(v) if v is not None else None) for k, v in results.items()},
                "problems": problems,
            }
            ov = results.get("overhead")
            if isinstance(ov, Overhead):
                out["results"]["overhead"]["overhead_ms"] = ov.overhead_ms
            dr = results.get("drain")
            if isinstance(dr, Drain):
                out["results"]["drain"]["per_s"] = dr.per_s
                out["results"]["drain"]["ideal_per_s"] = dr.ideal
            Path(args.json).write_text(json.dumps(out, indent=1))
            print(f"\nJSON written to {args.json}")
    return 1 if failed[0] else 0


def parse_phases(text: str) -> list[str]:
    allowed = ("overhead", "drain")
    ph = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in ph if p not in allowed]
    if bad or not ph:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {bad}; choose from {allowed}")
    return ph


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="Example: python benchmarks/bench_tes.py --quick; "
        "python benchmarks/bench_tes.py --cores 2 --json tes.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--phases",
        type=parse_phases,
        default=["overhead", "drain"],
        help="comma-separated subset of overhead,drain (default: both)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: -n 10 and --tasks 100 unless given"
    )
    g = p.add_argument_group("1) overhead")
    g.add_argument("-n", type=int, default=None, help="measured tasks [default 50, --quick 10]")
    g.add_argument(
        "--warmup", type=int, default=3, help="unmeasured tasks first (default: %(default)s)"
    )
    g.add_argument(
        "--poll", type=float, default=0.005, help="poll interval, s (default: %(default)s)"
    )
    g.add_argument(
        "--task-timeout",
        type=float,
        default=120.0,
        help="give up on one task after this, s (default: %(default)s)",
    )
    g = p.add_argument_group("2) drain")
    g.add_argument("--tasks", type=int, default=None, help="tasks [default 1000, --quick 100]")
    g.add_argument(
        "--task-seconds",
        type=float,
        default=0.5,
        help="each task runs `sleep T` (default: %(default)s)",
    )
    g.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="concurrent submitting clients (default: %(default)s)",
    )
    g.add_argument(
        "--drain-poll",
        type=float,
        default=0.1,
        help="once the queue is empty, check this often whether all tasks are terminal, s "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="give up waiting after this many seconds [default: 3 x tasks x T / cores + 120]",
    )
    g = p.add_argument_group("server")
    g.add_argument(
        "--cores",
        type=int,
        default=None,
        help="WES_BRIDGE_TES__CPU_CORES for the server [default: unset, the machine's]",
    )
    g.add_argument(
        "--niceness",
        type=int,
        default=None,
        help="WES_BRIDGE_DRIVER_NICENESS for the server: niceness of task runners and their "
        "executors [default: unset, the server's own default]",
    )
    g.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="the server's --log-level [default: its own, info; at warning or error the "
        "'server logged' steps are n/a]",
    )
    g.add_argument(
        "--wes-bridge",
        metavar="EXE",
        help="wes-bridge executable [env WES_BRIDGE_BIN, default: wes-bridge on PATH]",
    )
    g.add_argument(
        "--sample-interval",
        type=float,
        default=0.1,
        help="RSS sampling interval, s (default: %(default)s)",
    )
    g.add_argument(
        "--http-timeout",
        type=float,
        default=60.0,
        help="timeout of one HTTP request, s (default: %(default)s)",
    )
    p.add_argument("--json", metavar="FILE", help="also write all results and samples as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp work directory")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 10 if args.quick else 50
    if args.tasks is None:
        args.tasks = 100 if args.quick else 1000
    for name in ("n", "tasks", "concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.cores is not None and args.cores < 1:
        p.error("--cores must be >= 1")
    if args.task_seconds < 0:
        p.error("--task-seconds must be >= 0")

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the finally blocks that stop the server

    signal.signal(signal.SIGTERM, _term)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
