"""`wes-bridge tes serve` as a real process: the py-tes client, kill -9, SIGTERM and restarts.

Every response these tests read with httpx is checked against the official TES document;
py-tes's own requests cannot be intercepted, so its key reads are repeated with httpx.

The restart tests hold tasks open with gate files (an executor loops until its gate exists)
rather than with fixed sleeps, so that "still running when the server comes back" and "finished
while the server was down" are facts the test sets up, not races it hopes to win on a busy
machine. Each task appends a line to a marks file when it starts and ends: that is how a test
sees that no task was lost and none ran twice.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import tes  # type: ignore[import-untyped]

from wes_bridge.app import create_app
from wes_bridge.config import load_settings

from .conftest import SpecCheckedClient, free_port
from .live_tes import (
    TesServer,
    find_task_dir,
    group_members,
    kill_groups,
    process_groups_under,
    wait_groups_gone,
)

pytestmark = pytest.mark.integration

MakeServer = Callable[[dict[str, str]], TesServer]

# $0 task name, $1 marks file, $2 gate file.
GATED = (
    'echo "start $0" >> "$1"; '
    'while [ ! -e "$2" ]; do sleep 0.1; done; '
    'echo done; echo "end $0" >> "$1"'
)
# $0 task name, $1 marks file; /results/out.txt is the task's declared output.
QUICK = 'echo "run $0" >> "$1"; echo "$0" > /results/out.txt'


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    found = {name: (tmp_path / name).resolve() for name in ("in", "out", "elsewhere")}
    for path in found.values():
        path.mkdir()
    return found


@pytest.fixture
def make_server(tmp_path: Path, dirs: dict[str, Path]) -> Iterator[MakeServer]:
    """Servers on one data dir; at the end, they and every task process they left are killed."""
    made: list[TesServer] = []

    def make(settings: dict[str, str]) -> TesServer:
        server = TesServer(
            tmp_path,
            {
                "WES_BRIDGE_TES__INPUT_ROOTS": json.dumps([str(dirs["in"])]),
                "WES_BRIDGE_TES__OUTPUT_ROOTS": json.dumps([str(dirs["out"])]),
                "WES_BRIDGE_TES__CANCEL_GRACE_SECONDS": "2",
                **settings,
            },
        )
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()
    # Task runners are sessions of their own and outlive a killed server.
    leftovers = process_groups_under(tmp_path)
    kill_groups(leftovers)
    wait_groups_gone(leftovers)


def gated_task(name: str, marks: Path, gate: Path) -> dict[str, Any]:
    return {
        "name": name,
        "executors": [
            {"image": "alpine", "command": ["sh", "-c", GATED, name, str(marks), str(gate)]}
        ],
    }


def quick_task(name: str, marks: Path, out: Path) -> dict[str, Any]:
    return {
        "name": name,
        "executors": [{"image": "alpine", "command": ["sh", "-c", QUICK, name, str(marks)]}],
        "outputs": [{"path": "/results/out.txt", "url": (out / f"{name}.txt").as_uri()}],
    }


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_lines(path: Path, wanted: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= set(lines(path)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path.name} has {lines(path)}, not all of {sorted(wanted)}")


def task_groups(server: TesServer, task_id: str, timeout: float = 30) -> set[int]:
    """The process group of the task's runner (its session: the runner and its executors)."""
    task_dir = find_task_dir(server.data_dir, task_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = process_groups_under(task_dir)
        if groups:
            assert server.proc is not None
            assert server.pgid not in groups, "the task runs in the server's process group"
            return groups
        time.sleep(0.1)
    raise AssertionError(f"no process of task {task_id} found under {task_dir}")


def kill_server_group(server: TesServer) -> None:
    """kill -9 of the server, its supervisor and its forkserver; waits until all are gone."""
    pgid = server.pgid
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_groups_gone([pgid])


def scheduler_mentions(server: TesServer, task_id: str) -> list[str]:
    """Lines the server logged about the task since it last started, requests left out."""
    return [
        line
        for line in server.log_text(since_start=True).splitlines()
        if task_id in line and "HTTP/" not in line
    ]


def status_of(error: requests.HTTPError) -> int:
    assert error.response is not None
    return int(error.response.status_code)


def is_multiprocessing_helper(proc: psutil.Process) -> bool:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "multiprocessing.forkserver" in command or "multiprocessing.resource_tracker" in command


def describe(procs: list[psutil.Process]) -> list[str]:
    found = []
    for proc in procs:
        try:
            found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return found


def system_logs(task: dict[str, Any]) -> list[str]:
    return [line for log in task.get("logs") or [] for line in log.get("system_logs") or []]


# -- 1. py-tes, the third-party client -------------------------------------------------------
def test_py_tes_client_against_tes_serve(make_server: MakeServer, dirs: dict[str, Path]) -> None:
    server = make_server({"WES_BRIDGE_TES__CPU_CORES": "3"})
    server.start()
    client = tes.HTTPClient(server.url, timeout=60)

    info = client.get_service_info()
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert dirs["out"].as_uri() in info.storage
    server.get("/service-info")

    # Refused up front: locations outside tes.input_roots / tes.output_roots.
    outside_in = tes.Task(
        executors=[tes.Executor(image="alpine", command=["true"])],
        inputs=[tes.Input(url=(dirs["elsewhere"] / "x").as_uri(), path="/data/x")],
    )
    outside_out = tes.Task(
        executors=[tes.Executor(image="alpine", command=["true"])],
        outputs=[tes.Output(url=(dirs["elsewhere"] / "x").as_uri(), path="/data/x")],
    )
    for bad in (outside_in, outside_out):
        with pytest.raises(requests.HTTPError) as refused:
            client.create_task(bad)
        assert status_of(refused.value) == 400
        response = server.request("POST", "/tasks", json=json.loads(bad.as_json()))
        assert response.status_code == 400
        assert "outside" in response.json()["msg"]

    greeting = "hello from py-tes\n"
    numbers = "1\n2\n3\n"
    (dirs["in"] / "numbers.txt").write_text(numbers)
    shared = greeting + numbers
    count_url = (dirs["out"] / "count.txt").as_uri()
    shared_url = (dirs["out"] / "nested" / "shared.txt").as_uri()
    pipeline = tes.Task(
        name="pipeline",
        description="two executors sharing a volume",
        tags={"suite": "e2e", "kind": "pipeline"},
        resources=tes.Resources(cpu_cores=1, ram_gb=0.1),
        inputs=[
            tes.Input(path="/data/greeting.txt", content=greeting),
            tes.Input(url=(dirs["in"] / "numbers.txt").as_uri(), path="/data/numbers.txt"),
        ],
        outputs=[
            tes.Output(path="/results/count.txt", url=count_url),
            tes.Output(path="/vol/shared.txt", url=shared_url),
        ],
        volumes=["/vol"],
        executors=[
            tes.Executor(
                image="alpine",
                command=[
                    "sh",
                    "-c",
                    "cat /data/greeting.txt /data/numbers.txt > /vol/shared.txt && echo first",
                ],
            ),
            tes.Executor(
                image="alpine",
                command=["sh", "-c", "wc -l < shared.txt > /results/count.txt && cat shared.txt"],
                workdir="/vol",
            ),
        ],
    )
    assert pipeline.is_valid() == (True, None)
    pipeline_id = client.create_task(pipeline)
    long_id = client.create_task(
        tes.Task(
            name="long",
            tags={"suite": "e2e", "kind": "long"},
            executors=[tes.Executor(image="alpine", command=["sleep", "300"])],
        )
    )
    quick_tags = [
        {"suite": "e2e", "kind": "quick"},
        {"suite": "e2e", "kind": "quick"},
        {"kind": "quick", "other": "x"},
    ]
    quick_ids = [
        client.create_task(
            tes.Task(
                name=f"quick-{i}",
                tags=tags,
                executors=[tes.Executor(image="alpine", command=["echo", str(i)])],
            )
        )
        for i, tags in enumerate(quick_tags)
    ]
    all_ids = {pipeline_id, long_id, *quick_ids}

    # wait() polls the MINIMAL view until the task has left QUEUED/INITIALIZING/RUNNING.
    done = client.wait(pipeline_id, timeout=60)
    assert (done.id, done.state) == (pipeline_id, "COMPLETE"), server.task(pipeline_id)
    for quick_id in quick_ids:
        assert client.wait(quick_id, timeout=60).state == "COMPLETE"

    full = client.get_task(pipeline_id, view="FULL")
    assert isinstance(full, tes.Task)
    assert (full.id, full.state, full.name) == (pipeline_id, "COMPLETE", "pipeline")
    assert full.tags == {"suite": "e2e", "kind": "pipeline"}
    assert full.resources == tes.Resources(cpu_cores=1, ram_gb=0.1)
    assert full.volumes == ["/vol"]
    assert [i.content for i in full.inputs] == [greeting, None]
    assert [e.command for e in full.executors] == [e.command for e in pipeline.executors]
    assert isinstance(full.creation_time, datetime)
    (log,) = full.logs
    assert isinstance(log, tes.TaskLog)
    assert [e.exit_code for e in log.logs] == [0, 0]
    assert [e.stdout for e in log.logs] == ["first\n", shared]
    assert [e.stderr for e in log.logs] == ["", ""]
    assert log.start_time <= log.logs[0].start_time <= log.logs[0].end_time
    assert log.logs[0].end_time <= log.logs[1].start_time <= log.logs[1].end_time <= log.end_time
    assert {(o.path, o.url, o.size_bytes) for o in log.outputs} == {
        ("/results/count.txt", count_url, 2),
        ("/vol/shared.txt", shared_url, len(shared.encode())),
    }
    assert all(isinstance(line, str) for line in log.system_logs)
    assert (dirs["out"] / "count.txt").read_text() == "4\n"
    assert (dirs["out"] / "nested" / "shared.txt").read_text() == shared

    # The same reads with httpx, spec-checked; py-tes makes the same objects of them.
    full_doc = server.task(pipeline_id, "FULL")
    assert tes.unmarshal(full_doc, tes.Task) == full
    assert {o["size_bytes"] for o in full_doc["logs"][0]["outputs"]} == {"2", str(len(shared))}
    basic_doc = server.task(pipeline_id, "BASIC")
    assert all("content" not in i for i in basic_doc["inputs"])
    assert all("stdout" not in e for e in basic_doc["logs"][0]["logs"])
    assert "system_logs" not in basic_doc["logs"][0]

    # Listing: MINIMAL one task a page, following page_token to the end.
    seen: list[str] = []
    token = None
    for _ in range(len(all_ids) + 1):
        page = client.list_tasks(view="MINIMAL", page_size=1, page_token=token)
        assert isinstance(page, tes.ListTasksResponse)
        (task,) = page.tasks
        assert task.state is not None
        assert task.executors is None
        assert task.logs is None
        seen.append(task.id)
        token = page.next_page_token
        if token is None:
            break
    assert sorted(seen) == sorted(all_ids)
    basic = client.list_tasks(view="BASIC")
    assert basic.next_page_token is None
    by_id = {t.id: t for t in basic.tasks}
    assert set(by_id) == all_ids
    listed_pipeline = by_id[pipeline_id]
    assert listed_pipeline.executors == full.executors
    assert [i.content for i in listed_pipeline.inputs] == [None, None]
    assert [e.exit_code for e in listed_pipeline.logs[0].logs] == [0, 0]
    assert [e.stdout for e in listed_pipeline.logs[0].logs] == [None, None]
    basic_list_doc = server.get("/tasks", params={"view": "BASIC"}).json()
    again = {t.id: t for t in tes.unmarshal(basic_list_doc, tes.ListTasksResponse).tasks}
    assert set(again) == all_ids
    assert again[pipeline_id] == listed_pipeline
    minimal_page = server.get("/tasks", params={"view": "MINIMAL", "page_size": 1}).json()
    assert len(minimal_page["tasks"]) == 1
    assert minimal_page["next_page_token"]

    # Tag filters (py-tes 1.1.4's list_tasks has no tag parameters, so httpx).
    def listed(params: list[tuple[str, str]]) -> list[str]:
        body = server.get("/tasks", params=params).json()
        return [t["id"] for t in body["tasks"]]

    assert set(listed([("tag_key", "kind"), ("tag_value", "quick")])) == set(quick_ids)
    both = [("tag_key", "suite"), ("tag_value", "e2e"), ("tag_key", "kind"), ("tag_value", "quick")]
    assert set(listed(both)) == set(quick_ids[:2])
    assert listed([("tag_key", "other")]) == [quick_ids[2]]  # no value: any value
    assert listed([("tag_key", "kind"), ("tag_value", "nothing")]) == []
    paged: list[str] = []
    params = [("tag_key", "kind"), ("tag_value", "quick"), ("page_size", "1")]
    for _ in range(len(quick_ids) + 1):
        body = server.get("/tasks", params=params).json()
        (task_doc,) = body["tasks"]
        paged.append(task_doc["id"])
        if "next_page_token" not in body:
            break
        params = [*params[:3], ("page_token", body["next_page_token"])]
    assert sorted(paged) == sorted(quick_ids)

    # Cancel a running task: it ends CANCELED and its processes are gone.
    deadline = time.monotonic() + 60
    while client.get_task(long_id, view="MINIMAL").state != "RUNNING":
        assert time.monotonic() < deadline, server.task(long_id)
        time.sleep(0.1)
    groups = task_groups(server, long_id)
    assert client.cancel_task(long_id) is None
    canceled = server.wait(long_id, {"CANCELED", "COMPLETE", "SYSTEM_ERROR", "EXECUTOR_ERROR"})
    assert canceled["state"] == "CANCELED", canceled
    wait_groups_gone(groups)
    assert client.get_task(long_id, view="FULL").state == "CANCELED"

    # Ended tasks cannot be cancelled; unknown tasks are 404 (py-tes tries its fallback URLs).
    with pytest.raises(requests.HTTPError) as ended:
        client.cancel_task(pipeline_id)
    assert status_of(ended.value) == 400
    assert server.cancel(pipeline_id).status_code == 400
    with pytest.raises(requests.HTTPError) as unknown:
        client.get_task("no-such-task", view="FULL")
    assert status_of(unknown.value) == 404
    assert server.get("/tasks/no-such-task").status_code == 404


# -- 2. kill -9 with queued tasks -----------------------------------------------------------
def test_kill_9_with_queued_tasks_loses_none_and_runs_none_twice(
    make_server: MakeServer, dirs: dict[str, Path]
) -> None:
    marks = dirs["out"] / "marks.txt"
    server = make_server({"WES_BRIDGE_TES__CPU_CORES": "1"})
    server.start()
    first = server.create(
        {
            "name": "S",
            "executors": [
                {
                    "image": "alpine",
                    "command": [
                        "sh",
                        "-c",
                        'echo "start $0" >> "$1"; sleep 3; echo "end $0" >> "$1"',
                        "S",
                        str(marks),
                    ],
                }
            ],
        }
    )
    queued = [server.create(quick_task(f"Q{i}", marks, dirs["out"])) for i in (1, 2, 3)]
    server.wait(first, {"RUNNING"})
    assert set(server.states(queued).values()) == {"QUEUED"}  # one core, and S holds it

    kill_server_group(server)
    server.start()

    for task_id in [first, *queued]:
        done = server.wait(task_id)
        assert done["state"] == "COMPLETE", done
        assert len(done["logs"]) == 1, done["logs"]
        assert [e["exit_code"] for e in done["logs"][0]["logs"]] == [0]
    got = lines(marks)
    assert Counter(got) == Counter(["start S", "end S", "run Q1", "run Q2", "run Q3"]), got
    # One core: the queued tasks ran one after another, in order, after S.
    assert [line for line in got if line != "start S"] == ["end S", "run Q1", "run Q2", "run Q3"]
    for name in ("Q1", "Q2", "Q3"):
        assert (dirs["out"] / f"{name}.txt").read_text() == f"{name}\n"
    listed = server.get("/tasks", params={"view": "BASIC"}).json()["tasks"]
    assert sorted(t["id"] for t in listed) == sorted([first, *queued])


# -- 3. kill -9 with running tasks ------------------------------------------------------------
def test_kill_9_with_running_tasks_reattaches_or_fails_with_the_reason(
    make_server: MakeServer, dirs: dict[str, Path]
) -> None:
    """A: still running when the server is back (re-attached, COMPLETE). B: its runner was
    killed too (SYSTEM_ERROR, with the reason). C: ended while the server was down (COMPLETE,
    from what its runner left)."""
    marks = dirs["out"] / "marks.txt"
    gates = {name: dirs["out"] / f"gate-{name}" for name in "ABC"}
    server = make_server({"WES_BRIDGE_TES__CPU_CORES": "3"})
    server.start()
    ids = {name: server.create(gated_task(name, marks, gates[name])) for name in "ABC"}
    for task_id in ids.values():
        server.wait(task_id, {"RUNNING"})
    wait_for_lines(marks, {"start A", "start B", "start C"})
    groups = {name: task_groups(server, task_id) for name, task_id in ids.items()}

    kill_server_group(server)
    for name, task_groups_ in groups.items():
        assert all(group_members(g) for g in task_groups_), f"task {name}'s runner died too"
    kill_groups(groups["B"])  # the runner of B, and its executor
    wait_groups_gone(groups["B"])
    gates["C"].touch()
    wait_groups_gone(groups["C"])  # C's runner wrote its result and exited
    assert "end C" in lines(marks)

    server.start()
    b = server.wait(ids["B"])
    assert b["state"] == "SYSTEM_ERROR", b
    assert any("no longer running" in line for line in system_logs(b)), system_logs(b)
    c = server.wait(ids["C"])
    assert c["state"] == "COMPLETE", c
    assert c["logs"][0]["logs"][0]["stdout"] == "done\n"
    # Recovery handles the tasks in order, so A has been dealt with: re-attached, still running.
    assert server.state(ids["A"]) == "RUNNING"
    gates["A"].touch()
    a = server.wait(ids["A"])
    assert a["state"] == "COMPLETE", a
    (executor,) = a["logs"][0]["logs"]
    assert (executor["exit_code"], executor["stdout"]) == (0, "done\n")
    wait_groups_gone(groups["A"])

    assert Counter(lines(marks)) == Counter(["start A", "start B", "start C", "end C", "end A"]), (
        lines(marks)
    )
    states = {t["id"]: t["state"] for t in server.get("/tasks").json()["tasks"]}
    assert states == {ids["A"]: "COMPLETE", ids["B"]: "SYSTEM_ERROR", ids["C"]: "COMPLETE"}


# -- 4. SIGTERM -------------------------------------------------------------------------------
def test_sigterm_is_a_clean_stop_and_queued_tasks_run_after_a_restart(
    make_server: MakeServer, dirs: dict[str, Path]
) -> None:
    marks = dirs["out"] / "marks.txt"
    server = make_server({"WES_BRIDGE_TES__CPU_CORES": "1"})
    server.start()
    blocker = server.create(gated_task("S", marks, dirs["out"] / "never"))
    queued = [server.create(quick_task(f"Q{i}", marks, dirs["out"])) for i in (1, 2)]
    server.wait(blocker, {"RUNNING"})
    wait_for_lines(marks, {"start S"})
    runner = task_groups(server, blocker)
    assert set(server.states(queued).values()) == {"QUEUED"}

    old_group = server.pgid
    started = time.monotonic()
    status = server.stop(signal.SIGTERM, timeout=15)
    assert time.monotonic() - started < 15
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so the status is
    # "terminated by SIGTERM"; a crash would skip the shutdown it logs.
    assert status in (0, -signal.SIGTERM), server.log_text()
    assert "Application shutdown complete" in server.log_text(since_start=True)
    # The supervisor (the scheduler) has stopped. What is left of the old server's group is
    # multiprocessing's forkserver and resource tracker, which CPython keeps alive while a
    # process forked from them (the task runner) runs; they go when it does (checked below).
    deadline = time.monotonic() + 15
    while left := [p for p in group_members(old_group) if not is_multiprocessing_helper(p)]:
        assert time.monotonic() < deadline, f"still running after SIGTERM: {describe(left)}"
        time.sleep(0.1)
    assert all(group_members(g) for g in runner), "the running task's runner was stopped"
    assert lines(marks) == ["start S"]

    server.start()
    # Wait until the new scheduler has dealt with S (it logs the task's id when it re-attaches),
    # then give it a few passes: S still holds the only core, so the others must still wait.
    deadline = time.monotonic() + 60
    while not scheduler_mentions(server, blocker):
        assert time.monotonic() < deadline, "the restarted TES never took up the running task"
        time.sleep(0.1)
    time.sleep(1.0)
    assert server.state(blocker) == "RUNNING"
    assert set(server.states(queued).values()) == {"QUEUED"}
    assert lines(marks) == ["start S"]

    assert server.cancel(blocker).status_code == 200
    canceled = server.wait(blocker)
    assert canceled["state"] == "CANCELED", canceled
    wait_groups_gone(runner)
    wait_groups_gone([old_group])
    for task_id in queued:
        done = server.wait(task_id)
        assert done["state"] == "COMPLETE", done
    assert lines(marks) == ["start S", "run Q1", "run Q2"]
    assert (dirs["out"] / "Q1.txt").read_text() == "Q1\n"


def test_a_node_pointed_at_an_external_tes_lists_and_cancels_a_runs_tasks_there(
    make_server: MakeServer, tmp_path: Path
) -> None:
    # The external TES is a separate `wes-bridge tes serve`; the node has no TES of its own.
    # It shares the node's file system (as Funnel on the same host would) and may read and
    # write the node's run directories.
    node_dir = tmp_path / "node"
    external = make_server(
        {
            "WES_BRIDGE_TES__INPUT_ROOTS": json.dumps([str(node_dir)]),
            "WES_BRIDGE_TES__OUTPUT_ROOTS": json.dumps([str(node_dir)]),
        }
    )
    external.start()
    settings = load_settings(
        data_dir=node_dir,
        tes={"url": external.url, "shared_filesystem": True, "uses_containers": False},
        port=free_port(),
    )
    with SpecCheckedClient(create_app(settings)) as node:
        assert node.get("/ga4gh/tes/v1/service-info").status_code == 404
        run = node.submit("cwl/sleep/sleep.cwl", {"seconds": 60}).json()["run_id"]
        node.wait(run, states={"RUNNING"})
        step = {
            "name": "step",
            "tags": {"wes_run_id": run, "wes_step": "align"},
            "executors": [{"image": "alpine", "command": ["sleep", "300"]}],
        }
        task_id = external.create(step)
        external.wait(task_id, states={"RUNNING"})
        deadline = time.monotonic() + 15
        listed: dict[str, Any] = {}
        while time.monotonic() < deadline and len(listed) < 2:
            body = node.get(f"/ga4gh/wes/v1/runs/{run}/tasks").json()
            listed = {t["id"]: t for t in body["task_logs"]}
            time.sleep(0.1)
        assert listed[task_id]["name"] == "align"
        assert listed[task_id]["tes_uri"] == f"{external.base}/tasks/{task_id}"
        assert listed[task_id]["start_time"]
        # The run's own step (cwltool's job) is a task on the external TES too.
        [own] = [t for t in listed.values() if t["name"] == "sleep.cwl"]
        assert own["tes_uri"] == f"{external.base}/tasks/{own['id']}"
        assert own["cmd"][-1].startswith("sleep 60")
        assert node.post(f"/ga4gh/wes/v1/runs/{run}/cancel").status_code == 200
        assert node.wait(run, timeout=30) == "CANCELED"
        assert external.wait(task_id)["state"] == "CANCELED"
        assert external.wait(own["id"])["state"] == "CANCELED"
