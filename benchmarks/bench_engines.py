#!/usr/bin/env python3
"""Fan-out through wes-bridge on its TES vs. each engine's own local execution.

The workflow is the fan-out of 20 trivial steps plus one gather step
(``test-workflows/cwl/fanout`` for cwltool and Toil, ``test-workflows/snakemake/fanout`` for
Snakemake, ``test-workflows/nextflow/fanout`` for Nextflow).  For each engine, in one
invocation and on this machine:

direct:      the engine run directly on a fresh copy/output directory, timed from spawn to exit:
             ``cwltool --no-container --parallel --outdir D workflow.cwl inputs.json``,
             ``toil-cwl-runner --no-container --jobStore file:J --outdir D workflow.cwl
             inputs.json`` (Toil's default single-machine batch system) and ``snakemake
             --cores 2 --snakefile Snakefile --configfile config.yaml`` in a copy of the folder,
             ``nextflow run main.nf -params-file params.json --outdir R`` (local executor) in
             a copy of the folder, with the trace, report and timeline the node keeps of
             every Nextflow run (``--direct-logs none``: without them).
wes-bridge:  the same workflow submitted to one real ``wes-bridge serve`` (started once, on a
             free 127.0.0.1 port, data directory in a temporary directory) as a multipart
             ``POST /runs`` (every file of the folder as a ``workflow_attachment``), timed from
             the POST until ``GET /runs/{id}/status`` (polled every --poll seconds) reports a
             terminal state.  Every step is a task on the node's embedded TES (Nextflow: without
             a Nextflow TES executor plugin, Nextflow is one task); the run must end
             COMPLETE, its outputs must match ``expected.json`` and all its TES tasks must be
             COMPLETE.

Per engine: one unmeasured warm-up of each side (the node's first run starts its warm
processes), then --repeat rounds of (direct, wes-bridge), interleaved so that machine noise
hits both alike.  Reported: every sample, the medians, ratio = median(wes-bridge) /
median(direct) against the target of 1.5x, the TES tasks per run, and where a run's time went
(from the TES tasks' timestamps: POST -> first task created, queue wait and run time per task,
idle time with no task in flight, last task end -> terminal state seen).  Executables are the
ones next to this Python (its venv's bin directory), not PATH lookups.  Both sides run at the
same --niceness (default 0; the node's drivers and executors otherwise run at 10, which on a
busy machine slows them against everything else).

    python benchmarks/bench_engines.py                      # all engines, 5 rounds each
    python benchmarks/bench_engines.py --engines cwltool,snakemake --repeat 3 --json out.json
    python benchmarks/bench_engines.py --engines toil --repeat 1 --keep

Prints plain-text tables (and all samples as JSON with --json).  See --help.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_wes import fmt, loadavg, table
from wes_servers import LOOPBACK, free_port

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "test-workflows"
BIN = Path(sys.executable).parent
WES_PREFIX = "/ga4gh/wes/v1"
TES_PREFIX = "/ga4gh/tes/v1"
TERMINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
ENGINES = ("cwltool", "toil", "snakemake", "nextflow")
TARGET_RATIO = 1.5


class BenchError(RuntimeError):
    """A run failed, timed out, or gave the wrong outputs."""


# --------------------------------------------------------------------------
# Workflows
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workflow:
    folder: Path
    workflow_type: str  # CWL / SMK
    main: str  # workflow_url, relative to the folder
    params_file: str
    expected: dict[str, Any]

    @classmethod
    def load(cls, folder: Path, workflow_type: str) -> Workflow:
        expected = json.loads((folder / "expected.json").read_text())
        return cls(folder, workflow_type, expected["workflow"], expected["params"], expected)

    def params(self) -> dict[str, Any]:
        text = (self.folder / self.params_file).read_text()
        if self.params_file.endswith(".json"):
            return dict(json.loads(text))
        return flat_yaml(text)

    def files(self) -> list[str]:
        """Every file of the folder, relative, in a stable order."""
        return sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file()
        )


def flat_yaml(text: str) -> dict[str, Any]:
    """``key: value`` lines (the Snakemake config of the fan-out) without a YAML library."""
    out: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or line[0].isspace() or not value.strip():
            raise BenchError(f"config line {raw!r}: only flat 'key: value' YAML is supported")
        out[key.strip()] = json_scalar(value.strip())
    return out


def json_scalar(value: str) -> Any:
    lowered = {"true": True, "false": False, "null": None, "~": None}
    if value in lowered:
        return lowered[value]
    try:
        return json.loads(value)
    except ValueError:
        return value.strip("'")


def sha1_of(path: Path) -> str:
    return "sha1$" + hashlib.sha1(path.read_bytes()).hexdigest()


def check_files(root: Path, wanted: dict[str, str]) -> None:
    """Each ``relative path -> sha1$...`` in ``wanted`` exists under ``root`` with that sha1."""
    for rel, checksum in wanted.items():
        path = root / rel
        if not path.is_file():
            raise BenchError(f"missing output {path}")
        if sha1_of(path) != checksum:
            raise BenchError(f"{path}: {sha1_of(path)}, expected {checksum}")


# --------------------------------------------------------------------------
# Engines: the direct command and the WES submission
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    name: str
    workflow: Workflow
    engine_parameters: dict[str, Any]
    direct_logs: bool = True

    def direct(self, where: Path) -> tuple[list[str], Path, dict[str, str]]:
        """(command, working directory, file -> checksum expected under it)."""
        wf = self.workflow
        if self.name == "nextflow":
            work = where / "work"
            shutil.copytree(wf.folder, work)
            results = where / "results"
            cmd = [nextflow_command(), "-log", str(where / "nextflow.log"), "run", wf.main]
            cmd += ["-params-file", wf.params_file, "--outdir", str(results)]
            cmd += ["-ansi-log", "false", "-work-dir", str(where / "nextflow-work")]
            if self.direct_logs:  # what the node keeps of every Nextflow run
                cmd += ["-with-trace", str(where / "trace.txt")]
                cmd += ["-with-report", str(where / "report.html")]
                cmd += ["-with-timeline", str(where / "timeline.html")]
            want = {rel: o["checksum"] for rel, o in wf.expected["outputs"].items()}
            return cmd, results, want
        if self.name == "snakemake":
            work = where / "work"
            shutil.copytree(wf.folder, work)
            cmd = [str(BIN / "snakemake"), "--cores", "2", "--nocolor"]
            cmd += ["--snakefile", wf.main, "--configfile", wf.params_file]
            want = {rel: o["checksum"] for rel, o in wf.expected["outputs"].items()}
            return cmd, work, want
        outdir = where / "out"
        want = {o["basename"]: o["checksum"] for o in wf.expected["outputs"].values()}
        main, params = str(wf.folder / wf.main), str(wf.folder / wf.params_file)
        if self.name == "cwltool":
            cmd = [str(BIN / "cwltool"), "--no-container", "--parallel", "--outdir", str(outdir)]
        else:
            cmd = [str(BIN / "toil-cwl-runner"), "--no-container"]
            cmd += ["--jobStore", f"file:{where / 'jobstore'}", "--outdir", str(outdir)]
        return [*cmd, main, params], outdir, want

    def check_outputs(self, outputs: dict[str, Any]) -> None:
        """The WES outputs object against expected.json (CWL output ids, Snakemake paths)."""
        for key, exp in self.workflow.expected["outputs"].items():
            got = outputs.get(key)
            if not isinstance(got, dict):
                raise BenchError(f"output {key!r} missing (have {sorted(outputs)[:5]})")
            if got.get("checksum") != exp["checksum"]:
                raise BenchError(f"output {key!r}: {got.get('checksum')}, expected {exp}")


def make_engines(names: Sequence[str], direct_logs: bool = True) -> list[Engine]:
    cwl = Workflow.load(WORKFLOWS / "cwl" / "fanout", "CWL")
    smk = Workflow.load(WORKFLOWS / "snakemake" / "fanout", "SMK")
    nfl = Workflow.load(WORKFLOWS / "nextflow" / "fanout", "NFL")
    known = {
        "cwltool": Engine("cwltool", cwl, {"parallel": True}),
        "toil": Engine("toil", cwl, {}),
        "snakemake": Engine("snakemake", smk, {}),
        "nextflow": Engine("nextflow", nfl, {}, direct_logs),
    }
    return [known[n] for n in names]


def nextflow_command() -> str:
    """The ``nextflow`` the node runs (on PATH, else where scripts/install-nextflow put it)."""
    from wes_bridge_nextflow import find_nextflow

    found = find_nextflow()
    if found is None:
        raise BenchError("no nextflow command: run scripts/install-nextflow")
    return found


def child_env(tmp: Path) -> dict[str, str]:
    """This environment with the venv's bin first on PATH and TMPDIR in ``tmp``."""
    env = dict(os.environ)
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env.pop("VIRTUAL_ENV", None)
    tmp.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    return env


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def lower_priority(niceness: int) -> None:
    """As the node lowers its drivers and executors: ``nice`` this process and, with Linux's
    scheduler autogroups, the session it leads (call it in a new session's first process)."""
    if not niceness:
        return
    os.nice(niceness)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w", encoding="ascii") as fh:
        fh.write(str(niceness))


def run_direct(engine: Engine, where: Path, timeout_s: float, niceness: int) -> float:
    """Wall time of the engine run directly (in a session of its own, at ``niceness``);
    checks its exit code and outputs."""
    where.mkdir(parents=True)
    cmd, out_root, want = engine.direct(where)
    env = child_env(where / "tmp")
    if engine.name == "toil":
        env["TOIL_HISTORY"] = "False"  # as the adapter runs its leader: no ~/.toil database
    if engine.name == "nextflow":  # as the adapter runs it: its own home, offline
        env.update(NXF_HOME=str(where / "nextflow-home"), NXF_OFFLINE="true")
    log = where / "engine.log"
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=where / "work" if engine.name in ("snakemake", "nextflow") else where,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid() runs before preexec_fn
            preexec_fn=(lambda: lower_priority(niceness)) if niceness else None,
        )
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise BenchError(f"{engine.name} direct: timed out after {timeout_s:.0f} s") from None
        except BaseException:  # Ctrl-C / SIGTERM: the engine is in a session of its own
            kill_group(proc)
            raise
        dt = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{engine.name} direct exited {rc}: {' / '.join(tail)} (log: {log})")
    check_files(out_root, want)
    return dt


# --------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------


class Node:
    """One ``wes-bridge serve`` in its own process group, data dir under ``workdir``."""

    def __init__(self, workdir: Path, niceness: int) -> None:
        self.workdir = workdir
        self.niceness = niceness
        self.port = free_port()
        self.root = f"http://{LOOPBACK}:{self.port}"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.in_flight: set[str] = set()
        self.http = httpx.Client(base_url=self.root, timeout=60.0, trust_env=False)

    def start(self, timeout_s: float = 90.0) -> None:
        cmd = [sys.executable, "-m", "wes_bridge", "serve", "--host", LOOPBACK]
        cmd += ["--port", str(self.port), "--data-dir", str(self.workdir / "data")]
        cmd += ["--log-level", "warning"]
        env = child_env(self.workdir / "tmp")
        env["WES_BRIDGE_DRIVER_NICENESS"] = str(self.niceness)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so that SIGKILL can take the whole node down
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if self.http.get(WES_PREFIX + "/service-info").status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"wes-bridge did not start; log:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> str:
        """SIGTERM the server; SIGKILL its process group if it has not stopped in time.

        Runs still in flight (an interrupted benchmark) are cancelled first: their drivers
        run in sessions of their own and would outlive the node."""
        for run_id in list(self.in_flight):
            self.cancel(run_id)
            deadline = time.monotonic() + 30
            with contextlib.suppress(httpx.HTTPError, BenchError):
                while time.monotonic() < deadline:
                    state = self.get(f"{WES_PREFIX}/runs/{run_id}/status").get("state")
                    if state in TERMINAL:
                        break
                    time.sleep(0.2)
        self.http.close()
        proc = self.proc
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return f"did not stop within {grace_s:.0f} s of SIGTERM: SIGKILLed its group"
        return f"stopped, exit code {proc.returncode}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join("    | " + ln for ln in text[-lines:])

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        r = self.http.get(path, params=params)
        if r.status_code != 200:
            raise BenchError(f"GET {path} {params or ''} -> HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def service_info(self) -> dict[str, Any]:
        return dict(self.get(WES_PREFIX + "/service-info"))

    def submit(self, engine: Engine, type_version: str) -> str:
        wf = engine.workflow
        files = [
            ("workflow_attachment", (rel, (wf.folder / rel).read_bytes())) for rel in wf.files()
        ]
        data = {
            "workflow_type": wf.workflow_type,
            "workflow_type_version": type_version,
            "workflow_url": wf.main,
            "workflow_params": json.dumps(wf.params()),
            "workflow_engine": engine.name,
            "workflow_engine_parameters": json.dumps(engine.engine_parameters),
        }
        r = self.http.post(WES_PREFIX + "/runs", data=data, files=files)
        if r.status_code != 200:
            raise BenchError(f"POST /runs -> HTTP {r.status_code}: {r.text[:500]}")
        return str(r.json()["run_id"])

    def cancel(self, run_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.post(f"{WES_PREFIX}/runs/{run_id}/cancel")

    def paged(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.get(path, {**params, "page_token": token} if token else params)
            out += page.get(key) or []
            token = page.get("next_page_token") or ""
            if not token:
                return out


# --------------------------------------------------------------------------
# A run through wes-bridge and where its time went
# --------------------------------------------------------------------------


@dataclass
class WesRun:
    run_id: str
    total_s: float
    tasks: int
    breakdown: dict[str, float | int | None] = field(default_factory=dict)
    task_times: list[dict[str, Any]] = field(default_factory=list)


def ts(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def task_state(task_log: dict[str, Any]) -> str | None:
    """A WES task log's TES state (WES 1.1 has no field for it; the node's system log says)."""
    for line in task_log.get("system_logs") or []:
        if str(line).startswith("state: "):
            return str(line).removeprefix("state: ")
    return None


def breakdown(tes_tasks: list[dict[str, Any]], posted: float, seen: float) -> dict[str, Any]:
    """Where a run's time went, from its TES tasks' timestamps (seconds, wall clock).

    to_first_task: POST -> first task created; fanout_created_over: first -> last-but-one task
    created (the fan-out's tasks; the last one is the gather step's);
    queue: created -> runner start, per task; run: runner start -> end, per task; exec: the
    executor's own start -> end, per task; idle: time between the first task's creation and
    the last task's end when no task of the run was in flight (created, not yet ended), and
    max_gap the longest such stretch; last_gap: the last-created task's creation minus the
    latest end before it (the gather step's wait on the engine); tail: last task end ->
    terminal state seen by the client; peak_running: most tasks running at once.
    """
    rows = []
    for t in tes_tasks:
        log = (t.get("logs") or [{}])[0]
        ex = (log.get("logs") or [{}])[0]
        created, start, end = (
            ts(t.get("creation_time")),
            ts(log.get("start_time")),
            ts(log.get("end_time")),
        )
        rows.append((created, start, end, ts(ex.get("start_time")), ts(ex.get("end_time"))))
    rows = [r for r in rows if r[0] is not None and r[1] is not None and r[2] is not None]
    if not rows:
        return {}
    rows.sort()
    created = [r[0] for r in rows]
    queue = [r[1] - r[0] for r in rows]
    run = [r[2] - r[1] for r in rows]
    execs = [r[4] - r[3] for r in rows if r[3] is not None and r[4] is not None]
    idle, max_gap, horizon = 0.0, 0.0, rows[0][0]
    for c, _s, e, _xs, _xe in rows:  # union of [created, end], in creation order
        if c > horizon:
            idle += c - horizon
            max_gap = max(max_gap, c - horizon)
        horizon = max(horizon, e)
    last_c = rows[-1][0]
    ends_before = [r[2] for r in rows[:-1] if r[2] <= last_c]
    events = sorted([(r[1], 1) for r in rows] + [(r[2], -1) for r in rows])
    running = peak = 0
    for _t, d in events:
        running += d
        peak = max(peak, running)
    last_end = max(r[2] for r in rows)
    return {
        "to_first_task": created[0] - posted,
        "fanout_created_over": created[-2] - created[0] if len(created) > 1 else 0.0,
        "queue_median": statistics.median(queue),
        "queue_max": max(queue),
        "run_median": statistics.median(run),
        "run_max": max(run),
        "exec_median": statistics.median(execs) if execs else None,
        "busy": last_end - created[0] - idle,
        "idle": idle,
        "max_gap": max_gap,
        "last_gap": last_c - max(ends_before) if ends_before else None,
        "tail": seen - last_end,
        "peak_running": peak,
    }


def run_wes(
    node: Node, engine: Engine, type_version: str, poll_s: float, timeout_s: float
) -> WesRun:
    posted = time.time()
    t0 = time.perf_counter()
    run_id = node.submit(engine, type_version)
    node.in_flight.add(run_id)
    deadline = t0 + timeout_s
    state = "UNKNOWN"
    while True:
        state = str(node.get(f"{WES_PREFIX}/runs/{run_id}/status").get("state"))
        if state in TERMINAL:
            break
        if time.perf_counter() > deadline:
            node.cancel(run_id)
            raise BenchError(f"run {run_id}: still {state} after {timeout_s:.0f} s (cancelled)")
        time.sleep(poll_s)
    total = time.perf_counter() - t0
    node.in_flight.discard(run_id)
    seen = time.time()
    log = node.get(f"{WES_PREFIX}/runs/{run_id}")
    if state != "COMPLETE":
        why = "; ".join(str(s) for s in (log.get("run_log") or {}).get("system_logs") or [])
        raise BenchError(f"run {run_id} ended {state}: {why[:800]}")
    engine.check_outputs(log.get("outputs") or {})
    tasks = node.paged(f"{WES_PREFIX}/runs/{run_id}/tasks", "task_logs", {})
    states = [task_state(t) for t in tasks]
    if not tasks or any(s != "COMPLETE" for s in states):
        raise BenchError(f"run {run_id}: task states {sorted(set(map(str, states)))}")
    tes = node.paged(
        TES_PREFIX + "/tasks",
        "tasks",
        {"view": "FULL", "tag_key": "wes_run_id", "tag_value": run_id, "page_size": 100},
    )
    return WesRun(run_id, total, len(tasks), breakdown(tes, posted, seen), task_times(tes, posted))


def task_times(tes_tasks: list[dict[str, Any]], posted: float) -> list[dict[str, Any]]:
    """Each TES task's timestamps, seconds after the POST (for the JSON)."""

    def rel(value: Any) -> float | None:
        t = ts(value)
        return None if t is None else round(t - posted, 4)

    out = []
    for t in tes_tasks:
        log = (t.get("logs") or [{}])[0]
        ex = (log.get("logs") or [{}])[0]
        out.append(
            {
                "id": t.get("id"),
                "name": t.get("name"),
                "created": rel(t.get("creation_time")),
                "start": rel(log.get("start_time")),
                "exec_start": rel(ex.get("start_time")),
                "exec_end": rel(ex.get("end_time")),
                "end": rel(log.get("end_time")),
            }
        )
    return sorted(out, key=lambda x: x["created"] if x["created"] is not None else 1e18)


# --------------------------------------------------------------------------
# Results and report
# --------------------------------------------------------------------------


@dataclass
class Result:
    engine: str
    version: str = ""
    type_version: str = ""
    direct: list[float] = field(default_factory=list)
    wes: list[float] = field(default_factory=list)
    warmup: dict[str, float | None] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median_direct(self) -> float | None:
        return statistics.median(self.direct) if self.direct else None

    @property
    def median_wes(self) -> float | None:
        return statistics.median(self.wes) if self.wes else None

    @property
    def ratio(self) -> float | None:
        d, w = self.median_direct, self.median_wes
        return w / d if d and w is not None else None

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        return "met" if self.ratio <= TARGET_RATIO else "not met"


def pick_type_version(info: dict[str, Any], engine: Engine) -> str:
    """CWL v1.2; for SMK the accepted version that is the installed Snakemake's major."""
    wf_type = engine.workflow.workflow_type
    accepted = [
        str(v)
        for v in (info.get("workflow_type_versions") or {})
        .get(wf_type, {})
        .get("workflow_type_version", [])
    ]
    if not accepted:
        raise BenchError(f"the node accepts no {wf_type} workflows")
    if wf_type == "CWL":
        return "v1.2" if "v1.2" in accepted else accepted[-1]
    if wf_type == "NFL":
        return accepted[-1]
    versions = (info.get("workflow_engine_versions") or {}).get(engine.name, {})
    installed = [str(v) for v in versions.get("workflow_engine_version", [])]
    major = installed[0].split(".")[0] if installed else ""
    return major if major in accepted else accepted[-1]


def engine_version(info: dict[str, Any], name: str) -> str:
    versions = (info.get("workflow_engine_versions") or {}).get(name, {})
    return ", ".join(str(v) for v in versions.get("workflow_engine_version", [])) or "?"


def secs(xs: Sequence[float]) -> str:
    return " ".join(f"{x:.1f}" for x in xs) or "-"


def med(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def print_report(results: list[Result], args: argparse.Namespace, meta: dict[str, Any]) -> None:
    print()
    print(
        f"== machine: {meta['cpus']} CPUs, loadavg at start {meta['load_start']}, "
        f"at end {meta['load_end']}; wes-bridge {meta['wes_bridge']}; node {meta['node_stop']}"
    )
    print(
        f"== fan-out of 20 steps + gather: direct vs. through wes-bridge on its TES, "
        f"{args.repeat} round(s) each after 1 warm-up, interleaved; "
        f"poll {args.poll * 1000:.0f} ms; niceness {args.niceness} (both sides); "
        f"--direct-logs {args.direct_logs}"
    )
    rows = []
    for r in results:
        rows.append(
            [
                f"{r.engine} {r.version}",
                secs(r.direct),
                secs(r.wes),
                fmt(r.median_direct),
                fmt(r.median_wes),
                fmt(r.ratio),
                "/".join(sorted({str(n) for n in r.tasks})) or "-",
                f"{TARGET_RATIO:g}x: {r.verdict}",
            ]
        )
    heads = ["engine", "direct s", "wes-bridge s", "direct med", "wes med", "ratio", "tasks"]
    print(table([*heads, "target"], rows))
    print()
    print("== warm-up runs (not counted), s")
    rows = [
        [r.engine, fmt(r.warmup.get("direct")), fmt(r.warmup.get("wes-bridge"))] for r in results
    ]
    print(table(["engine", "direct", "wes-bridge"], rows))
    print()
    print(
        "== where the wes-bridge runs' time went (medians over the measured runs, s; "
        "queue/run: per-task median/max)"
    )
    rows = []
    for r in results:
        rs = [x["breakdown"] for x in r.runs if x.get("breakdown")]
        if not rs:
            continue
        rows.append(
            [
                r.engine,
                fmt(med(rs, "to_first_task")),
                fmt(med(rs, "fanout_created_over")),
                f"{fmt(med(rs, 'queue_median'), '.3f')}/{fmt(med(rs, 'queue_max'))}",
                f"{fmt(med(rs, 'run_median'), '.3f')}/{fmt(med(rs, 'run_max'))}",
                fmt(med(rs, "exec_median"), ".3f"),
                fmt(med(rs, "busy")),
                fmt(med(rs, "idle")),
                fmt(med(rs, "max_gap")),
                fmt(med(rs, "last_gap")),
                fmt(med(rs, "tail")),
                fmt(med(rs, "peak_running"), ".0f"),
            ]
        )
    heads = ["engine", "POST->1st task", "fan-out created over", "queue", "run", "exec"]
    heads += ["tasks in flight", "idle", "max gap", "gather wait", "end->seen", "peak running"]
    print(table(heads, rows) if rows else "(no measured run through wes-bridge completed)")
    for r in results:
        for f in r.failures:
            print(f"!! {r.engine}: {f}")


def measure(
    node: Node,
    engine: Engine,
    res: Result,
    side: str,
    record: bool,
    where: Path,
    args: argparse.Namespace,
) -> None:
    """One direct or wes-bridge run, recorded in ``res`` (a failure too)."""
    label = f"{engine.name} {where.name}"
    try:
        if side == "direct":
            dt = run_direct(engine, where, args.timeout, args.niceness)
            extra: dict[str, Any] = {}
        else:
            wr = run_wes(node, engine, res.type_version, args.poll, args.timeout)
            dt, extra = wr.total_s, asdict(wr)
    except (BenchError, httpx.HTTPError, OSError) as e:
        res.failures.append(f"{label}: {type(e).__name__}: {e}")
        print(f"  {label}: FAILED {e}", file=sys.stderr)
        return
    print(f"  {label}: {dt:.2f} s (load {loadavg()})", file=sys.stderr)
    if not record:
        res.warmup[side] = dt
    elif side == "direct":
        res.direct.append(dt)
    else:
        res.wes.append(dt)
        res.tasks.append(int(extra["tasks"]))
        res.runs.append(extra)


def bench(args: argparse.Namespace) -> int:
    engines = make_engines(args.engines, args.direct_logs == "node")
    root = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    results = [Result(e.name) for e in engines]
    meta: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_start": loadavg(),
        "load_end": "?",
        "python": sys.executable,
        "wes_bridge": "?",
        "node_stop": "",
    }
    print(f"loadavg at start: {meta['load_start']} ({meta['cpus']} CPUs)", file=sys.stderr)
    node = Node(root / "node", args.niceness)
    node.workdir.mkdir(parents=True)
    failed = False
    try:
        node.start()
        info = node.service_info()
        meta["wes_bridge"] = str(info.get("version", "?"))
        for engine, res in zip(engines, results, strict=True):
            res.version = engine_version(info, engine.name)
            res.type_version = pick_type_version(info, engine)
            plan = [("direct", False), ("wes-bridge", False)]
            plan += [("direct", True), ("wes-bridge", True)] * args.repeat
            print(f"{engine.name} (load {loadavg()}) ...", file=sys.stderr)
            for n, (side, record) in enumerate(plan):
                name = f"{side}-{(n - 2) // 2 + 1}" if record else f"{side}-warmup"
                measure(node, engine, res, side, record, root / engine.name / name, args)
    except BenchError as e:
        print(f"!! {e}", file=sys.stderr)
        failed = True
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop, then report what was measured
        print("!! interrupted", file=sys.stderr)
        meta["interrupted"] = True
        failed = True
    finally:
        meta["node_stop"] = node.stop()
        meta["load_end"] = loadavg()
    failed = failed or any(r.failures for r in results)
    print_report(results, args, meta)
    if args.json:
        out = {
            "meta": meta,
            "args": vars(args),
            "target_ratio": TARGET_RATIO,
            "engines": [
                asdict(r)
                | {
                    "median_direct": r.median_direct,
                    "median_wes": r.median_wes,
                    "ratio": r.ratio,
                    "target": r.verdict,
                }
                for r in results
            ],
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nJSON written to {args.json}")
    if args.keep or failed:
        print(f"work directory kept: {root} (server log: {node.log_path})")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def parse_engines(text: str) -> list[str]:
    names = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in names if e not in ENGINES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {bad}; choose from {ENGINES}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--engines",
        type=parse_engines,
        default=list(ENGINES),
        help="comma-separated subset of " + ",".join(ENGINES),
    )
    p.add_argument("--repeat", type=int, default=5, help="measured rounds per engine")
    p.add_argument("--poll", type=float, default=0.05, help="status poll interval, seconds")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="give up on one run after this many seconds"
    )
    p.add_argument(
        "--niceness",
        type=int,
        default=0,
        help="niceness of both sides: the node's drivers and TES executors "
        "(WES_BRIDGE_DRIVER_NICENESS, whose own default is 10) and the direct runs (each "
        "in a session, i.e. scheduler autogroup, of its own, niced as the node does it); "
        "10 measures the node as it runs by default",
    )
    p.add_argument(
        "--direct-logs",
        choices=("node", "none"),
        default="node",
        help="node: the direct runs write the run logs the node keeps of every run (Nextflow: "
        "-with-trace, -with-report, -with-timeline), so both sides do the same work; none: "
        "the engine's defaults",
    )
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if not 0 <= args.niceness <= 19:
        p.error("--niceness must be 0..19")

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the finally block that stops the node

    signal.signal(signal.SIGTERM, _term)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
