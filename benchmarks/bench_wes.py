#!/usr/bin/env python3
"""Compare wes-bridge with Toil's WES server and the GA4GH wes-service.

All servers run on this machine, on free 127.0.0.1 ports, in one invocation,
executing a trivial CWL CommandLineTool (``data/echo.cwl``) with cwltool /
toil-cwl-runner and ``--no-container``.  Measurements:

a) latency:     submit -> terminal state for one run at a time, status polled
                every --poll seconds; N runs per server, interleaved round-robin
                across servers together with ``cwltool --no-container`` run
                directly on the same tool (the floor any WES server adds to).
b) throughput:  --throughput-runs runs pushed through --throughput-concurrency
                client workers (each submits a run, polls it to completion,
                submits the next); runs/min = completed / (first submit ->
                last terminal state).
c) submissions: --submissions POST /runs at --submit-concurrency; accepted/s
                and per-request latency.  The runs submitted here are not
                waited for: the server (and its backlog) is stopped right after
                its burst, unless --drain.  Guards stop a burst early if
                MemAvailable drops below --mem-floor-mb or the server's process
                tree grows past --max-server-procs, because the peers start an
                engine process per accepted run, with no queue.

Prints plain-text tables (and optionally JSON with --json).  See --help.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wes_servers import (
    ECHO_JOB,
    ECHO_TOOL,
    SERVER_KINDS,
    ServerStartError,
    WesClient,
    WesError,
    WesServer,
    Workflow,
    add_bin_flags,
    bin_overrides,
    command_version,
    descendants,
    make_server,
    parse_servers,
    resolve_bin,
    temp_root,
)

DIRECT = "cwltool (direct)"
REFERENCE = "wes-service"


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("inf")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def pctl(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass
class Latency:
    samples: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    outputs_ok: bool | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Throughput:
    runs: int = 0
    completed: int = 0
    wall_s: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def per_min(self) -> float | None:
        if not self.wall_s or not self.completed:
            return None
        return self.completed / self.wall_s * 60.0


@dataclass
class Submissions:
    attempted: int = 0
    accepted: int = 0
    wall_s: float | None = None
    req_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""
    drain_s: float | None = None
    drained: int | None = None
    peak_procs: int = 0

    @property
    def per_s(self) -> float | None:
        if not self.wall_s or not self.accepted:
            return None
        return self.accepted / self.wall_s


@dataclass
class Target:
    name: str
    server: WesServer | None = None  # None: direct cwltool
    version: str = ""
    engine: str = ""
    start_error: str = ""
    latency: Latency = field(default_factory=Latency)
    throughput: Throughput | None = None
    submissions: Submissions | None = None
    transport_errors: int = 0


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


async def run_direct(cwltool: str, workdir: Path, i: int, timeout_s: float) -> float:
    """Wall time of ``cwltool --no-container echo.cwl echo-job.json``."""
    outdir = workdir / f"direct-{i}"
    outdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(outdir))
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        cwltool,
        "--no-container",
        "--outdir",
        str(outdir / "out"),
        str(ECHO_TOOL),
        str(ECHO_JOB),
        cwd=outdir,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WesError(f"cwltool direct run timed out after {timeout_s:.0f}s") from None
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise WesError(f"cwltool exited {proc.returncode}: {' / '.join(tail)}")
    return dt


async def latency_phase(
    targets: list[Target],
    clients: dict[str, WesClient],
    cwltool: str | None,
    args: argparse.Namespace,
    workdir: Path,
) -> None:
    wf = Workflow.echo_from_job(ECHO_JOB)
    order = [t for t in targets if t.server is not None or cwltool]

    async def one(t: Target, i: int, record: bool) -> None:
        try:
            if t.server is None:
                assert cwltool is not None
                dt = await run_direct(cwltool, workdir, i, args.run_timeout)
                if record:
                    t.latency.samples.append(dt)
                return
            c = clients[t.name]
            res = await c.run(wf, poll_s=args.poll, timeout_s=args.run_timeout)
            if res.state != "COMPLETE":
                t.latency.failures.append(f"{res.run_id}: {res.state}")
            elif record:
                t.latency.samples.append(res.total_s)
                t.latency.submit.append(res.submit_s)
            if t.latency.outputs_ok is None and res.state == "COMPLETE":
                log = await c.run_log(res.run_id)
                out = (log.get("outputs") or {}).get("out") or {}
                t.latency.outputs_ok = bool(out)
        except (WesError, httpx.HTTPError) as e:
            t.latency.failures.append(f"{type(e).__name__}: {e}")

    for w in range(args.warmup):
        for t in order:
            await one(t, -1 - w, record=False)
    for i in range(args.runs):
        k = i % len(order)
        for t in order[k:] + order[:k]:  # rotate who goes first each round
            await one(t, i, record=True)
        if args.progress:
            print(f"  latency round {i + 1}/{args.runs} done", file=sys.stderr)


async def throughput_phase(t: Target, client: WesClient, args: argparse.Namespace) -> Throughput:
    wf = Workflow.echo_from_job(ECHO_JOB)
    res = Throughput(runs=args.throughput_runs)
    remaining = list(range(args.throughput_runs))
    first: list[float] = []
    last: list[float] = []

    async def worker() -> None:
        while remaining:
            remaining.pop()
            try:
                t0 = time.perf_counter()
                first.append(t0)
                run_id = await client.submit(wf)
                state, _ = await client.wait(run_id, args.throughput_poll, args.run_timeout)
                last.append(time.perf_counter())
                if state == "COMPLETE":
                    res.completed += 1
                else:
                    res.failures.append(f"{run_id}: {state}")
            except (WesError, httpx.HTTPError) as e:
                last.append(time.perf_counter())
                res.failures.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(worker() for _ in range(args.throughput_concurrency)))
    if first and last:
        res.wall_s = max(last) - min(first)
    return res


async def submission_phase(
    t: Target, client: WesClient, args: argparse.Namespace
) -> tuple[Submissions, list[str]]:
    wf = Workflow.echo_from_job(ECHO_JOB)
    raw = client.raw_submitter(wf) if args.submit_client == "raw" else None
    res = Submissions()
    run_ids: list[str] = []
    budget = [args.submissions]
    stop = [False]
    t_first: list[float] = []
    t_last: list[float] = []
    server_pid = t.server.proc.pid if t.server and t.server.proc else None

    def halt(why: str) -> None:
        if not stop[0]:
            res.note = f"{why} after {res.attempted} submissions"
        stop[0] = True

    async def guard() -> None:
        """Stop the burst before it swamps the machine (memory, process count)."""
        while not stop[0]:
            if mem_available_mb() < args.mem_floor_mb:
                halt(f"memory guard (MemAvailable < {args.mem_floor_mb:.0f} MB)")
            if server_pid is not None:
                n = len(await asyncio.to_thread(descendants, [server_pid]))
                res.peak_procs = max(res.peak_procs, n)
                if n > args.max_server_procs:
                    halt(f"process guard ({n} > {args.max_server_procs} server processes)")
            await asyncio.sleep(0.5)

    async def worker() -> None:
        while budget[0] > 0 and not stop[0]:
            budget[0] -= 1
            res.attempted += 1
            t0 = time.perf_counter()
            t_first.append(t0)
            try:
                run_ids.append(await (raw.submit() if raw else client.submit(wf)))
                res.accepted += 1
            except (WesError, httpx.HTTPError, OSError, ValueError) as e:
                res.errors.append(f"{type(e).__name__}: {e}"[:300])
            t1 = time.perf_counter()
            t_last.append(t1)
            res.req_s.append(t1 - t0)

    monitor = asyncio.create_task(guard())
    try:
        await asyncio.gather(*(worker() for _ in range(args.submit_concurrency)))
    finally:
        stop[0] = True
        await monitor
    if t_first and t_last:
        res.wall_s = max(t_last) - min(t_first)
    return res, run_ids


async def drain(client: WesClient, run_ids: list[str], timeout_s: float, poll_s: float) -> int:
    """Wait (bounded) until all runs are terminal; returns how many are."""
    deadline = time.monotonic() + timeout_s
    pending = set(run_ids)
    sem = asyncio.Semaphore(8)

    async def check(rid: str) -> None:
        async with sem:
            with contextlib.suppress(WesError, httpx.HTTPError):
                if await client.status(rid) in (
                    "COMPLETE",
                    "EXECUTOR_ERROR",
                    "SYSTEM_ERROR",
                    "CANCELED",
                    "PREEMPTED",
                ):
                    pending.discard(rid)

    while pending and time.monotonic() < deadline:
        await asyncio.gather(*(check(r) for r in list(pending)))
        if pending:
            await asyncio.sleep(poll_s)
    return len(run_ids) - len(pending)


# --------------------------------------------------------------------------
# Orchestration and report
# --------------------------------------------------------------------------


def print_report(targets: list[Target], args: argparse.Namespace, meta: dict[str, Any]) -> None:
    print()
    print("== versions")
    rows = [[t.name, t.version or "-", t.engine or "-"] for t in targets]
    print(table(["target", "version", "cwltool used"], rows))
    print()
    print(
        f"== machine: {meta['cpus']} CPUs, loadavg at start {meta['load_start']}, "
        f"at end {meta['load_end']}; HTTP keep-alive "
        f"{'on' if args.keepalive else 'off (new connection per request)'}"
    )
    errs = [f"{t.name}={t.transport_errors}" for t in targets if t.transport_errors]
    if errs:
        print("!! HTTP transport errors (GETs were retried): " + ", ".join(errs))
    for t in targets:
        if t.start_error:
            print(f"!! {t.name} did not start: {t.start_error.splitlines()[0]}")

    if "latency" in args.phases:
        print()
        print(
            f"== a) latency: submit -> terminal, {args.runs} runs each "
            f"(+{args.warmup} warm-up), poll {args.poll * 1000:.0f} ms, interleaved"
        )
        rows = []
        for t in targets:
            lat = t.latency
            if t.start_error:
                continue
            n_ok = len(lat.samples)
            rows.append(
                [
                    t.name,
                    f"{n_ok}/{args.runs}",
                    fmt(lat.median),
                    fmt(min(lat.samples, default=None)),
                    fmt(max(lat.samples, default=None)),
                    fmt(statistics.median(lat.submit) * 1000 if lat.submit else None, ".1f"),
                    "-" if lat.outputs_ok is None else ("yes" if lat.outputs_ok else "NO"),
                ]
            )
        print(
            table(["target", "ok", "median s", "min s", "max s", "POST ms (med)", "outputs"], rows)
        )

    if "throughput" in args.phases:
        print()
        print(
            f"== b) throughput: {args.throughput_runs} runs, "
            f"{args.throughput_concurrency} client workers, poll "
            f"{args.throughput_poll * 1000:.0f} ms"
        )
        rows = []
        for t in targets:
            tp = t.throughput
            if tp is None:
                continue
            rows.append(
                [t.name, f"{tp.completed}/{tp.runs}", fmt(tp.wall_s, ".1f"), fmt(tp.per_min, ".1f")]
            )
        print(table(["server", "completed", "wall s", "runs/min"], rows))

    if "submit" in args.phases:
        print()
        print(
            f"== c) POST /runs: {args.submissions} submissions at concurrency "
            f"{args.submit_concurrency} ({args.submit_client} client)"
        )
        rows = []
        for t in targets:
            sb = t.submissions
            if sb is None:
                continue
            rows.append(
                [
                    t.name,
                    f"{sb.accepted}/{sb.attempted}",
                    fmt(sb.wall_s, ".1f"),
                    fmt(sb.per_s, ".1f"),
                    fmt((statistics.median(sb.req_s) * 1000) if sb.req_s else None, ".1f"),
                    fmt((pctl(sb.req_s, 0.95) or 0) * 1000 if sb.req_s else None, ".1f"),
                    (
                        f"{sb.drained}/{sb.accepted} in {sb.drain_s:.0f}s"
                        if sb.drain_s is not None
                        else "-"
                    ),
                    str(sb.peak_procs),
                    "; ".join(
                        x
                        for x in (
                            sb.note,
                            f"{len(sb.errors)} failed: "
                            + ", ".join(sorted({e.split(":")[0] for e in sb.errors}))
                            if sb.errors
                            else "",
                        )
                        if x
                    ),
                ]
            )
        print(
            table(
                [
                    "server",
                    "accepted",
                    "wall s",
                    "submissions/s",
                    "req ms (med)",
                    "req ms (p95)",
                    "drained",
                    "peak server procs",
                    "note",
                ],
                rows,
            )
        )

    print()
    print(
        "== summary (medians; ratios are value / wes-service value: latency < 1 is better, "
        "throughput and submissions > 1 are better)"
    )
    ref = next((t for t in targets if t.name == REFERENCE and not t.start_error), None)

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}x"

    rows = []
    for t in targets:
        if t.start_error:
            rows.append([t.name, "did not start", "", "", "", "", ""])
            continue
        lat_med = t.latency.median
        tpm = t.throughput.per_min if t.throughput else None
        sps = t.submissions.per_s if t.submissions else None
        r_lat = ref.latency.median if ref else None
        r_tpm = ref.throughput.per_min if ref and ref.throughput else None
        r_sps = ref.submissions.per_s if ref and ref.submissions else None
        rows.append(
            [
                t.name,
                fmt(lat_med),
                fmt(tpm, ".1f") if t.server else "-",
                fmt(sps, ".1f") if t.server else "-",
                ratio(lat_med, r_lat),
                ratio(tpm, r_tpm) if t.server else "-",
                ratio(sps, r_sps) if t.server else "-",
            ]
        )
    print(
        table(
            [
                "server",
                "latency median s",
                "throughput runs/min",
                "submissions/s",
                "latency vs ws",
                "throughput vs ws",
                "submissions vs ws",
            ],
            rows,
        )
    )

    problems = [(t.name, f) for t in targets for f in t.latency.failures]
    problems += [(t.name, f) for t in targets if t.throughput for f in t.throughput.failures]
    if problems:
        print()
        print("== failures (first 10)")
        for name, f in problems[:10]:
            print(f"  {name}: {f[:300]}")


async def bench(args: argparse.Namespace) -> int:
    overrides = bin_overrides(args)
    targets: list[Target] = []
    meta: dict[str, Any] = {"cpus": os.cpu_count(), "load_start": loadavg()}
    cwltool = resolve_bin("cwltool", overrides["cwltool"]) if "latency" in args.phases else None

    with temp_root(args.keep) as root:
        clients: dict[str, WesClient] = {}
        try:
            for kind in args.servers:
                exe = resolve_bin(kind, overrides[kind])
                t = Target(kind)
                targets.append(t)
                if exe is None:
                    t.start_error = "executable not found (see --help for flags/env vars)"
                    continue
                t.server = make_server(
                    kind,
                    exe,
                    root / kind,
                    bridge_concurrency=args.bridge_concurrency,
                    toil_workers=args.toil_workers,
                )
                t.version = t.server.version()
                t.engine = t.server.engine_version()
                print(f"starting {kind} ({exe}) ...", file=sys.stderr)
                try:
                    await t.server.start()
                except ServerStartError as e:
                    t.start_error = str(e)
                    t.server = None
                    print(str(e), file=sys.stderr)
                    continue
                clients[kind] = WesClient(
                    t.server.base_url,
                    timeout=args.http_timeout,
                    keepalive=args.keepalive,
                    headers=t.server.headers,
                )
            if cwltool and "latency" in args.phases:
                d = Target(DIRECT, version=command_version([cwltool, "--version"]), engine=cwltool)
                targets.append(d)
            live = [t for t in targets if not t.start_error]

            if "latency" in args.phases:
                print("phase a) latency ...", file=sys.stderr)
                await latency_phase(live, clients, cwltool, args, root / "direct")

            if "throughput" in args.phases:
                for t in live:
                    if t.server is None:
                        continue
                    print(f"phase b) throughput: {t.name} ...", file=sys.stderr)
                    t.throughput = await throughput_phase(t, clients[t.name], args)

            if "submit" in args.phases:
                for t in live:
                    if t.server is None:
                        continue
                    print(f"phase c) submissions: {t.name} ...", file=sys.stderr)
                    sb, run_ids = await submission_phase(t, clients[t.name], args)
                    if args.drain:
                        t0 = time.perf_counter()
                        sb.drained = await drain(clients[t.name], run_ids, args.drain_timeout, 0.5)
                        sb.drain_s = time.perf_counter() - t0
                    t.submissions = sb
                    # Stop this server now so its backlog cannot slow the next one.
                    t.server.remember_children()
                    await asyncio.to_thread(t.server.stop)
                    await asyncio.sleep(args.settle)
        finally:
            for t in targets:
                if t.name in clients:
                    t.transport_errors = clients[t.name].transport_errors
            for c in clients.values():
                with contextlib.suppress(Exception):
                    await c.aclose()
            for t in targets:
                if t.server is not None:
                    t.server.stop()
        meta["load_end"] = loadavg()

    print_report(targets, args, meta)
    if args.json:
        out = {
            "meta": meta,
            "args": {
                k: v for k, v in vars(args).items() if isinstance(v, int | float | str | list)
            },
            "targets": [
                {
                    "name": t.name,
                    "version": t.version,
                    "engine": t.engine,
                    "start_error": t.start_error,
                    "latency": asdict(t.latency) | {"median": t.latency.median},
                    "throughput": (asdict(t.throughput) | {"per_min": t.throughput.per_min})
                    if t.throughput
                    else None,
                    "submissions": (asdict(t.submissions) | {"per_s": t.submissions.per_s})
                    if t.submissions
                    else None,
                }
                for t in targets
            ],
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nJSON written to {args.json}")
    bad = any(t.start_error for t in targets) or any(t.latency.failures for t in targets)
    return 1 if bad else 0


def parse_phases(text: str) -> list[str]:
    allowed = ("latency", "throughput", "submit")
    ph = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in ph if p not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {bad}; choose from {allowed}")
    return ph


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Example: python benchmarks/bench_wes.py --toil ~/peers/toil/bin/toil "
        "--wes-server ~/peers/wes/bin/wes-server --cwltool ~/peers/wes/bin/cwltool",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--servers",
        type=parse_servers,
        default=list(SERVER_KINDS),
        help="comma-separated subset of " + ",".join(SERVER_KINDS),
    )
    p.add_argument(
        "--phases",
        type=parse_phases,
        default=["latency", "throughput", "submit"],
        help="comma-separated subset of latency,throughput,submit",
    )
    g = p.add_argument_group("a) latency")
    g.add_argument("-n", "--runs", type=int, default=10, help="measured runs per target")
    g.add_argument("--warmup", type=int, default=1, help="unmeasured runs per target first")
    g.add_argument("--poll", type=float, default=0.025, help="status poll interval, seconds")
    g = p.add_argument_group("b) throughput")
    g.add_argument("--throughput-runs", type=int, default=20)
    g.add_argument("--throughput-concurrency", type=int, default=8)
    g.add_argument(
        "--throughput-poll",
        type=float,
        default=0.2,
        help="status poll interval per in-flight run, seconds",
    )
    g = p.add_argument_group("c) submissions")
    g.add_argument("--submissions", type=int, default=200)
    g.add_argument("--submit-concurrency", type=int, default=8)
    g.add_argument(
        "--submit-client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: one pre-encoded request sent over a new socket each time (default; the "
        "client costs little CPU); httpx: build each request with httpx",
    )
    g.add_argument(
        "--mem-floor-mb",
        type=float,
        default=6144.0,
        help="stop a burst early when MemAvailable falls below this",
    )
    g.add_argument(
        "--max-server-procs",
        type=int,
        default=200,
        help="stop a burst early when the server's process tree exceeds this",
    )
    g.add_argument(
        "--drain",
        action="store_true",
        help="after a burst, wait for its runs to finish (bounded by "
        "--drain-timeout) before stopping the server",
    )
    g.add_argument("--drain-timeout", type=float, default=900.0)
    g.add_argument(
        "--settle", type=float, default=3.0, help="pause after stopping a server, seconds"
    )
    g = p.add_argument_group("servers")
    g.add_argument(
        "--bridge-concurrency",
        type=int,
        default=8,
        help="WES_BRIDGE_MAX_CONCURRENT_RUNS for wes-bridge",
    )
    g.add_argument(
        "--toil-workers", type=int, default=2, help="toil server --workers (gunicorn processes)"
    )
    g.add_argument(
        "--run-timeout",
        type=float,
        default=300.0,
        help="give up waiting for one run after this many seconds",
    )
    g.add_argument(
        "--http-timeout", type=float, default=60.0, help="timeout of one HTTP request, seconds"
    )
    p.add_argument(
        "--keepalive",
        action="store_true",
        help="reuse HTTP connections (off by default: Toil's server hangs on "
        "reused connections while runs are in flight)",
    )
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp work directory")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    add_bin_flags(p)
    args = p.parse_args(argv)
    for name in (
        "runs",
        "throughput_runs",
        "throughput_concurrency",
        "submissions",
        "submit_concurrency",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the finally blocks that stop the servers

    signal.signal(signal.SIGTERM, _term)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
