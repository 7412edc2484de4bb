"""The embedded TES, through its HTTP API: every response checked against the TES document."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wes_bridge.app import create_app
from wes_bridge.config import load_settings

from .conftest import SpecCheckedClient, free_port

TES = "/ga4gh/tes/v1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


class TesClient(SpecCheckedClient):
    def create(self, task: dict[str, Any]) -> str:
        response = self.post(f"{TES}/tasks", json=task)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def task_doc(self, task_id: str, view: str = "FULL") -> dict[str, Any]:
        response = self.get(f"{TES}/tasks/{task_id}", params={"view": view})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_task(
        self, task_id: str, states: set[str] = TERMINAL, timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.task_doc(task_id, "MINIMAL")
            if task["state"] in states:
                return self.task_doc(task_id)
            time.sleep(0.02)
        raise AssertionError(f"task {task_id} still {task['state']} after {timeout} s")


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    found = {name: tmp_path / name for name in ("in", "out", "elsewhere")}
    for path in found.values():
        path.mkdir()
    return found


@pytest.fixture
def tes(tmp_path: Path, dirs: dict[str, Path]) -> Iterator[TesClient]:
    settings = load_settings(
        port=free_port(),
        data_dir=tmp_path / "data",
        url_fetch_allow_private=True,
        tes={
            "input_roots": [str(dirs["in"])],
            "output_roots": [str(dirs["out"])],
            "cpu_cores": 2,
            "cancel_grace_seconds": 2,
        },
    )
    with TesClient(create_app(settings)) as client:
        yield client


def echo_task(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["echo", text]}], **extra}


def test_service_info_says_how_tasks_run(tes: TesClient) -> None:
    info = tes.get(f"{TES}/service-info").json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert "host execution" in info["description"]
    assert "image is recorded but not used" in info["description"]
    assert "2 CPU cores" in info["description"]
    assert info["storage"]
    assert all(s.startswith("file:///") for s in info["storage"])
    assert info["tesResources_backend_parameters"] == []


def test_echo_task_and_its_views(tes: TesClient) -> None:
    task_id = tes.create(echo_task("hello TES", name="echo", tags={"wes_run_id": "r1"}))
    full = tes.wait_task(task_id)
    assert full["state"] == "COMPLETE", full
    assert full["name"] == "echo"
    assert full["tags"] == {"wes_run_id": "r1"}
    (log,) = full["logs"]
    (executor,) = log["logs"]
    assert executor["exit_code"] == 0
    assert executor["stdout"] == "hello TES\n"
    assert executor["start_time"] <= executor["end_time"]
    assert log["start_time"] <= executor["start_time"]
    assert any("image alpine not used" in line for line in log["system_logs"])
    basic = tes.task_doc(task_id, "BASIC")
    assert "stdout" not in basic["logs"][0]["logs"][0]
    assert "system_logs" not in basic["logs"][0]
    assert basic["executors"] == full["executors"]
    assert tes.task_doc(task_id, "MINIMAL") == {"id": task_id, "state": "COMPLETE"}
    assert tes.get(f"{TES}/tasks/{task_id}").json() == {"id": task_id, "state": "COMPLETE"}


class _Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"fetched over http\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file.txt"
    server.shutdown()
    server.server_close()


def test_inputs_executors_volumes_and_outputs(
    tes: TesClient, dirs: dict[str, Path], http_url: str
) -> None:
    (dirs["in"] / "a.txt").write_text("from a file\n")
    tree = dirs["in"] / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "one.txt").write_text("1\n")
    (tree / "sub" / "two.txt").write_text("2\n")
    (tree / "empty").mkdir()
    task = {
        "name": "io",
        "inputs": [
            {"path": "/data/inline.txt", "content": "inline content\n"},
            {"path": "/data/a.txt", "url": (dirs["in"] / "a.txt").as_uri()},
            {"path": "/data/tree", "url": tree.as_uri(), "type": "DIRECTORY"},
            {"path": "/data/web.txt", "url": http_url},
        ],
        "volumes": ["/vol"],
        "executors": [
            {
                "image": "alpine",
                "command": [
                    "sh",
                    "-c",
                    "cat /data/inline.txt /data/a.txt /data/web.txt > /vol/joined.txt; "
                    "find /data/tree -type f | sort > /out/listing.txt",
                ],
            },
            {
                "image": "alpine",
                "command": ["tr", "a-z", "A-Z"],
                "stdin": "/vol/joined.txt",
                "stdout": "/out/upper.txt",
                "workdir": "/out",
                "env": {"WHO": "/data/a.txt"},
            },
            {
                "image": "alpine",
                "command": ["sh", "-c", 'echo "$WHO" > /out/env.txt'],
                "env": {"WHO": "/data/a.txt"},
            },
        ],
        "outputs": [
            {"path": "/out/upper.txt", "url": (dirs["out"] / "upper.txt").as_uri()},
            {"path": "/out/*.txt", "path_prefix": "/out", "url": (dirs["out"] / "all").as_uri()},
            {"path": "/data/tree", "url": (dirs["out"] / "tree").as_uri(), "type": "DIRECTORY"},
        ],
    }
    task_id = tes.create(task)
    done = tes.wait_task(task_id)
    assert done["state"] == "COMPLETE", done["logs"]
    assert (dirs["out"] / "upper.txt").read_text() == (
        "INLINE CONTENT\nFROM A FILE\nFETCHED OVER HTTP\n"
    )
    assert sorted(p.name for p in (dirs["out"] / "all").iterdir()) == [
        "env.txt",
        "listing.txt",
        "upper.txt",
    ]
    listing = (dirs["out"] / "all" / "listing.txt").read_text().splitlines()
    assert [line.rsplit("/tree/", 1)[1] for line in listing] == ["one.txt", "sub/two.txt"]
    # The host backend maps container paths under the task directory, in env values too.
    env_value = (dirs["out"] / "all" / "env.txt").read_text().strip()
    assert env_value.endswith("/root/data/a.txt")
    assert os.path.isfile(env_value)
    assert (dirs["out"] / "tree" / "sub" / "two.txt").read_text() == "2\n"
    # Directories arrive and leave as trees, empty ones included.
    assert (dirs["out"] / "tree" / "empty").is_dir()
    logged = {o["path"]: o for o in done["logs"][0]["outputs"]}
    upper = (dirs["out"] / "upper.txt").read_bytes()
    assert logged["/out/upper.txt"]["size_bytes"] == str(len(upper))
    # Delivered twice: by its own output and by the wildcard one.
    assert {o["url"] for o in done["logs"][0]["outputs"] if o["path"] == "/out/upper.txt"} == {
        (dirs["out"] / "upper.txt").as_uri(),
        (dirs["out"] / "all" / "upper.txt").as_uri(),
    }
    assert "/data/tree/sub/two.txt" in logged
    # The input file was not modified or moved.
    assert (dirs["in"] / "a.txt").read_text() == "from a file\n"


def test_executor_errors_stop_unless_ignored(tes: TesClient) -> None:
    failing = {"image": "alpine", "command": ["sh", "-c", "echo oops >&2; exit 3"]}
    after = {"image": "alpine", "command": ["echo", "after"]}
    stopped = tes.wait_task(tes.create({"executors": [failing, after]}))
    assert stopped["state"] == "EXECUTOR_ERROR"
    (log,) = stopped["logs"][0]["logs"]
    assert log["exit_code"] == 3
    assert log["stderr"] == "oops\n"
    went_on = tes.wait_task(tes.create({"executors": [{**failing, "ignore_error": True}, after]}))
    assert went_on["state"] == "COMPLETE"
    assert [e["exit_code"] for e in went_on["logs"][0]["logs"]] == [3, 0]
    missing = tes.wait_task(
        tes.create({"executors": [{"image": "x", "command": ["no-such-program-here"]}]})
    )
    assert missing["state"] == "EXECUTOR_ERROR"
    assert missing["logs"][0]["logs"][0]["exit_code"] == 127


def test_missing_output_is_a_system_error(tes: TesClient, dirs: dict[str, Path]) -> None:
    task_id = tes.create(
        echo_task(outputs=[{"path": "/out/never.txt", "url": (dirs["out"] / "n").as_uri()}])
    )
    done = tes.wait_task(task_id)
    assert done["state"] == "SYSTEM_ERROR"
    assert any("did not create /out/never.txt" in s for s in done["logs"][0]["system_logs"])


def test_cancel_kills_the_executor_process_group(tes: TesClient, dirs: dict[str, Path]) -> None:
    task_id = tes.create(
        {
            "executors": [
                {
                    "image": "alpine",
                    "command": ["sh", "-c", "sleep 300 & echo $! > /out/pid; wait"],
                }
            ],
            "outputs": [{"path": "/out/pid", "url": (dirs["out"] / "pid").as_uri()}],
        }
    )
    tes.wait_task(task_id, {"RUNNING"})
    root = Path(tes.app.state.node.settings.tes_dir) / "tasks" / task_id / "root"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while not (root / "out" / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int((root / "out" / "pid").read_text())
    assert tes.post(f"{TES}/tasks/{task_id}:cancel").json() == {}
    done = tes.wait_task(task_id)
    assert done["state"] == "CANCELED"
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the executor's background process survived the cancel"
    finished = tes.post(f"{TES}/tasks/{task_id}:cancel")
    assert finished.status_code == 200  # cancelling a cancelled task again is harmless
    queued_then_cancelled = tes.create(echo_task(resources={"cpu_cores": 2}))
    tes.post(f"{TES}/tasks/{queued_then_cancelled}:cancel")
    assert tes.wait_task(queued_then_cancelled)["state"] in {"CANCELED", "COMPLETE"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_scheduler_never_oversubscribes_the_cores(tes: TesClient, dirs: dict[str, Path]) -> None:
    def timed(i: int, cores: int) -> dict[str, Any]:
        return {
            "name": f"timed-{i}",
            "resources": {"cpu_cores": cores},
            "executors": [
                {
                    "image": "alpine",
                    "command": ["sh", "-c", "date +%s.%N; sleep 0.4; date +%s.%N"],
                }
            ],
        }

    ids = [tes.create(timed(i, 1 if i % 3 else 2)) for i in range(7)]
    spans = []
    for task_id, i in zip(ids, range(7), strict=True):
        done = tes.wait_task(task_id)
        assert done["state"] == "COMPLETE"
        start, end = map(float, done["logs"][0]["logs"][0]["stdout"].split())
        spans.append((start, end, 1 if i % 3 else 2))
    for start, _, _ in spans:
        in_use = sum(c for s, e, c in spans if s <= start < e)
        assert in_use <= 2, f"{in_use} cores in use at {start}: {spans}"
    never = tes.create(echo_task(resources={"cpu_cores": 64}))
    state = tes.task_doc(never)
    assert state["state"] == "SYSTEM_ERROR"
    assert "asks for 64 CPU cores; this TES has 2" in state["logs"][0]["system_logs"][-1]


def test_listing_filters_and_pages(tes: TesClient) -> None:
    ids = [
        tes.create(echo_task(name=f"alpha-{i}", tags={"run": "r1" if i < 3 else "r2", "e": ""}))
        for i in range(5)
    ]
    other = tes.create(echo_task(name="beta", tags={"run": "r1"}))
    for task_id in [*ids, other]:
        tes.wait_task(task_id)

    def listed(**params: Any) -> list[str]:
        response = tes.get(f"{TES}/tasks", params=params)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["tasks"]]

    assert listed(name_prefix="alpha-") == ids[::-1]
    assert listed(tag_key="run", tag_value="r1") == [other, *ids[:3][::-1]]
    assert listed(tag_key=["run", "e"], tag_value=["r1"]) == ids[:3][::-1]
    assert listed(tag_key="e") == ids[::-1]  # an empty value matches any value
    assert listed(state="COMPLETE", name_prefix="beta") == [other]
    assert listed(state="QUEUED", name_prefix="alpha") == []
    pages: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 2, "name_prefix": "alpha"}
        if token:
            params["page_token"] = token
        body = tes.get(f"{TES}/tasks", params=params).json()
        pages += [t["id"] for t in body["tasks"]]
        token = body.get("next_page_token")
        if not token:
            break
    assert pages == ids[::-1]
    full = tes.get(f"{TES}/tasks", params={"view": "FULL", "name_prefix": "beta"}).json()
    assert full["tasks"][0]["logs"][0]["logs"][0]["stdout"] == "hello\n"


BAD_TASKS: dict[str, tuple[dict[str, Any], str]] = {
    "no executors": ({"executors": []}, "at least one executor"),
    "executors missing": ({"name": "x"}, "executors"),
    "empty command": ({"executors": [{"image": "a", "command": []}]}, "command"),
    "empty program": ({"executors": [{"image": "a", "command": [""]}]}, "command"),
    "url and content": (
        echo_task(inputs=[{"path": "/data/x", "url": "file:///etc/hosts", "content": "x"}]),
        "either url or content",
    ),
    "neither url nor content": (echo_task(inputs=[{"path": "/data/x"}]), "url or content"),
    "relative input path": (
        echo_task(inputs=[{"path": "data/x", "content": "x"}]),
        "absolute path",
    ),
    "relative workdir": (
        {"executors": [{"image": "a", "command": ["ls"], "workdir": "tmp"}]},
        "absolute path",
    ),
    "output escaping the work directory": (
        echo_task(outputs=[{"path": "/out/../../etc/passwd", "url": "file:///tmp/x"}]),
        "'..'",
    ),
    "wildcard without prefix": (
        echo_task(outputs=[{"path": "/out/*.txt", "url": "file:///tmp/x"}]),
        "path_prefix is required",
    ),
    "unsupported input scheme": (
        echo_task(inputs=[{"path": "/data/x", "url": "s3://bucket/key"}]),
        "scheme 's3'",
    ),
    "input outside the roots": (
        echo_task(inputs=[{"path": "/data/x", "url": "file:///etc/passwd"}]),
        "outside the directories this TES may read",
    ),
    "output outside the roots": (
        echo_task(outputs=[{"path": "/out/x", "url": "file:///etc/wes-bridge-test"}]),
        "outside the directories this TES may write",
    ),
    "remote file URL": (
        echo_task(inputs=[{"path": "/data/x", "url": "file://otherhost/etc/passwd"}]),
        "remote host",
    ),
    "strict backend parameters": (
        echo_task(
            resources={"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}
        ),
        "VmSize",
    ),
    "negative cores": (echo_task(resources={"cpu_cores": 0}), "cpu_cores"),
}


@pytest.fixture(scope="module")
def shared_tes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TesClient]:
    """One node for the bad-input cases, which must leave it as they found it."""
    base = tmp_path_factory.mktemp("bad-input")
    settings = load_settings(
        port=free_port(),
        data_dir=base / "data",
        tes={"input_roots": [str(base / "in")], "output_roots": [str(base / "out")]},
    )
    with TesClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_bad_tasks_are_refused_and_leave_nothing(shared_tes: TesClient, case: str) -> None:
    tes = shared_tes
    body, expected = BAD_TASKS[case]
    response = tes.post(f"{TES}/tasks", json=body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["msg"]
    assert tes.get(f"{TES}/tasks").json()["tasks"] == []
    tasks_dir = Path(tes.app.state.node.settings.tes_dir) / "tasks"  # type: ignore[attr-defined]
    assert not tasks_dir.exists() or not any(tasks_dir.iterdir())


def test_bad_requests(tes: TesClient) -> None:
    assert tes.post(f"{TES}/tasks", content=b"{not json").status_code == 400
    assert tes.post(f"{TES}/tasks", json=["a list"]).status_code == 400
    assert tes.get(f"{TES}/tasks", params={"view": "EVERYTHING"}).status_code == 400
    assert tes.get(f"{TES}/tasks", params={"page_token": "forged"}).status_code == 400
    assert tes.get(f"{TES}/tasks", params={"page_size": 5000}).status_code == 400
    assert tes.get(f"{TES}/tasks", params={"state": "DONE"}).status_code == 400
    assert tes.get(f"{TES}/tasks/nope").status_code == 404
    assert tes.get(f"{TES}/tasks/nope", params={"view": "ALL"}).status_code == 400
    assert tes.post(f"{TES}/tasks/nope:cancel").status_code == 404
    done = tes.create(echo_task())
    tes.wait_task(done)
    finished = tes.post(f"{TES}/tasks/{done}:cancel")
    assert finished.status_code == 400
    assert "already ended (COMPLETE)" in finished.json()["msg"]
    # A page token of one listing is refused for another.
    for i in range(3):
        tes.create(echo_task(name=f"p{i}"))
    token = tes.get(f"{TES}/tasks", params={"page_size": 1}).json()["next_page_token"]
    other = tes.get(
        f"{TES}/tasks", params={"page_size": 1, "name_prefix": "p", "page_token": token}
    )
    assert other.status_code == 400


def test_a_runs_tes_tasks_are_listed_with_it_and_cancelled_with_it(tes: TesClient) -> None:
    # A driver tags every task it submits with its run; until the engine adapters submit
    # their steps themselves (the engines issue), this test submits them as a driver would.
    run = tes.submit("cwl/sleep/sleep.cwl", {"seconds": 60}).json()["run_id"]
    tes.wait(run, states={"RUNNING"})
    step = {
        "name": "step-a",
        "tags": {"wes_run_id": run, "wes_step": "align"},
        "executors": [{"image": "alpine", "command": ["sleep", "300"]}],
    }
    done_step = {**step, "tags": {"wes_run_id": run, "wes_step": "index"}}
    done_step["executors"] = [{"image": "alpine", "command": ["sh", "-c", "exit 4"]}]
    running_id = tes.create(step)
    failed_id = tes.create(done_step)
    unrelated = tes.create({**step, "tags": {"wes_run_id": "another-run"}})
    tes.wait_task(running_id, {"RUNNING"})
    tes.wait_task(failed_id)
    deadline = time.monotonic() + 10
    listed: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = tes.get(f"/ga4gh/wes/v1/runs/{run}/tasks").json()
        listed = {t["id"]: t for t in body["task_logs"]}
        if {running_id, failed_id} <= set(listed) and listed[failed_id].get("exit_code") == 4:
            break
        time.sleep(0.1)
    assert {running_id, failed_id} <= set(listed), listed
    assert unrelated not in listed
    assert listed[failed_id]["name"] == "index"
    assert listed[failed_id]["tes_uri"].endswith(f"/ga4gh/tes/v1/tasks/{failed_id}")
    assert listed[running_id]["name"] == "align"
    assert tes.post(f"/ga4gh/wes/v1/runs/{run}/cancel").status_code == 200
    assert tes.wait(run, timeout=30) == "CANCELED"
    assert tes.wait_task(running_id)["state"] == "CANCELED"
    assert tes.task_doc(unrelated, "MINIMAL")["state"] == "RUNNING"
    final = {t["id"]: t for t in tes.get(f"/ga4gh/wes/v1/runs/{run}/tasks").json()["task_logs"]}
    assert final[failed_id]["exit_code"] == 4
    tes.post(f"{TES}/tasks/{unrelated}:cancel")


def test_a_running_task_shows_its_log_so_far(tes: TesClient) -> None:
    task_id = tes.create(
        {
            "executors": [
                {"image": "alpine", "command": ["echo", "first"]},
                {"image": "alpine", "command": ["sleep", "60"]},
            ]
        }
    )
    deadline = time.monotonic() + 30
    log: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = tes.task_doc(task_id)
        log = (task.get("logs") or [{}])[0]
        if task["state"] == "RUNNING" and log.get("logs"):
            break
        time.sleep(0.05)
    assert log["start_time"]
    (first,) = log["logs"]  # the sleeping executor has no exit code yet, so is not listed
    assert first["stdout"] == "first\n"
    assert first["exit_code"] == 0
    basic = tes.task_doc(task_id, "BASIC")["logs"][0]["logs"][0]
    assert "stdout" not in basic
    tes.post(f"{TES}/tasks/{task_id}:cancel")
    assert tes.wait_task(task_id)["state"] == "CANCELED"


def test_scheduler_honours_ram(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", tes={"cpu_cores": 2, "ram_gb": 1.0}, port=free_port()
    )
    with TesClient(create_app(settings)) as tes:
        timed = {
            "resources": {"ram_gb": 0.6},
            "executors": [
                {"image": "a", "command": ["sh", "-c", "date +%s.%N; sleep 0.4; date +%s.%N"]}
            ],
        }
        ids = [tes.create(timed) for _ in range(3)]
        spans = []
        for task_id in ids:
            done = tes.wait_task(task_id)
            assert done["state"] == "COMPLETE"
            start, end = map(float, done["logs"][0]["logs"][0]["stdout"].split())
            spans.append((start, end))
        # Two cores are free, but 0.6 + 0.6 GB do not fit in 1 GB: one task at a time.
        for start, _ in spans:
            assert sum(1 for s, e in spans if s <= start < e) == 1, spans
        too_big = tes.task_doc(tes.create({**timed, "resources": {"ram_gb": 2}}))
        assert too_big["state"] == "SYSTEM_ERROR"
        assert "asks for 2 GB of RAM; this TES has 1.0 GB" in too_big["logs"][0]["system_logs"][-1]
