#!/usr/bin/env python3
"""GET /runs latency for a page of 100 with N runs in the store (default 100,000).

Seeds a fresh wes-bridge data directory straight through its database (bulk inserts: going
through POST /runs 100,000 times would measure submission, not listing), starts
`wes-bridge serve` on it, and times first pages, deep pages (following next_page_token),
tag-filtered and state-filtered pages and service-info. Prints medians over --repeat requests.

    python benchmarks/list_runs.py [--runs 100000] [--repeat 50] [--wes-bridge PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import MetaData, create_engine, insert

STATES = ["COMPLETE"] * 8 + ["EXECUTOR_ERROR", "CANCELED"]


def seed(data_dir: Path, count: int) -> None:
    from wes_bridge.store import RunStore  # creates the schema exactly as the server would

    url = f"sqlite:///{data_dir / 'wes-bridge.sqlite'}"
    RunStore(url).close()
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    runs, tags, events = meta.tables["runs"], meta.tables["run_tags"], meta.tables["run_events"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = 5000
    with engine.begin() as conn:
        for offset in range(0, count, batch):
            run_rows, tag_rows, event_rows = [], [], []
            for i in range(offset, min(offset + batch, count)):
                run_id = str(uuid.UUID(int=i + 1))
                when = start + timedelta(seconds=i)
                state = STATES[i % len(STATES)]
                request = {
                    "workflow_type": "CWL",
                    "workflow_type_version": "v1.2",
                    "workflow_url": "hello.cwl",
                    "workflow_params": {},
                    "tags": {"project": f"p{i % 100}"},
                }
                run_rows.append(
                    {
                        "seq": i + 1,
                        "id": run_id,
                        "state": state,
                        "engine": "cwltool",
                        "request": request,
                        "tags": {"project": f"p{i % 100}"},
                        "run_dir": str(data_dir / "runs" / run_id),
                        "staged": {},
                        "created_at": when,
                        "start_time": when,
                        "end_time": when,
                        "cmd": [],
                        "outputs": {},
                        "system_logs": [],
                    }
                )
                tag_rows.append({"run_seq": i + 1, "key": "project", "value": f"p{i % 100}"})
                event_rows.append({"run_id": run_id, "state": state, "at": when})
            conn.execute(insert(runs), run_rows)
            conn.execute(insert(tags), tag_rows)
            conn.execute(insert(events), event_rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(client: httpx.Client, url: str, params: dict[str, object]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    response = client.get(url, params=params)
    elapsed = time.perf_counter() - t0
    response.raise_for_status()
    return elapsed, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--wes-bridge", default=os.environ.get("WES_BRIDGE_BIN", "wes-bridge"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wes-bridge-list-"))
    data = tmp / "data"
    data.mkdir()
    t0 = time.perf_counter()
    seed(data, args.runs)
    print(f"seeded {args.runs} runs in {time.perf_counter() - t0:.1f} s")
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which(args.wes_bridge) or args.wes_bridge,
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/ga4gh/wes/v1"
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(600):
                try:
                    client.get(f"{base}/service-info")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            cases: dict[str, list[float]] = {
                "first page": [],
                "deep page (token)": [],
                "tag filter": [],
                "state filter": [],
                "service-info": [],
            }
            _, first = timed(client, f"{base}/runs", {"page_size": 100})
            token = first["next_page_token"]
            # walk 200 pages deep to get a token from the middle of the store
            for _ in range(200):
                _, page = timed(client, f"{base}/runs", {"page_size": 100, "page_token": token})
                token = page["next_page_token"]
            for _ in range(args.repeat):
                e, body = timed(client, f"{base}/runs", {"page_size": 100})
                assert len(body["runs"]) == 100
                cases["first page"].append(e)
                e, body = timed(client, f"{base}/runs", {"page_size": 100, "page_token": token})
                assert len(body["runs"]) == 100
                cases["deep page (token)"].append(e)
                e, body = timed(
                    client,
                    f"{base}/runs",
                    {"page_size": 100, "tag_key": "project", "tag_value": "p7"},
                )
                assert len(body["runs"]) == 100
                cases["tag filter"].append(e)
                e, body = timed(client, f"{base}/runs", {"page_size": 100, "state": "CANCELED"})
                assert len(body["runs"]) == 100
                cases["state filter"].append(e)
                e, _ = timed(client, f"{base}/service-info", {})
                cases["service-info"].append(e)
        print(
            f"GET /runs, page_size=100, {args.runs} runs in the store, {args.repeat} requests each"
        )
        print(f"{'case':<20} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
        for name, values in cases.items():
            values.sort()
            p90 = values[int(len(values) * 0.9) - 1]
            print(
                f"{name:<20} {statistics.median(values) * 1000:>10.1f} {p90 * 1000:>8.1f} "
                f"{values[-1] * 1000:>8.1f}"
            )
        print(json.dumps({k: round(statistics.median(v) * 1000, 2) for k, v in cases.items()}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
