"""One TES test module for every TES a node can run on: py-tes and wes-bridge's own client, alike.

A node that runs on the embedded TES today may be pointed at a site's TES (Funnel, TESK)
tomorrow, and the same clients must keep working. Each test here runs once per target and
client, and uses only what TES 1.1 promises, no behaviour of the embedded TES of its own:

- ``embedded``: a real ``wes-bridge tes serve`` process, always.
- ``external``: the TES at ``WES_BRIDGE_TEST_TES_URL`` (a server root such as
  ``http://127.0.0.1:8000``), only when that variable is set. Its tasks write their outputs as
  ``file://`` URLs under ``WES_BRIDGE_TEST_TES_FILES``, a directory that this process and that
  TES's workers share (for Funnel's local backend: a directory its LocalStorage allows).

Clients: py-tes (the third-party client, through ``requests``) and
``wes_bridge.tes.client.TesClient`` (through httpx). Every response either client receives from
either target is checked against the official TES 1.1 document: 2xx bodies by schema; error
bodies by status, and by the node's ErrorResponse shape on the embedded TES only, since TES
declares no error body.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import tes  # type: ignore[import-untyped]

from wes_bridge.tes.client import TesClient, TesError

from .live_tes import TERMINAL, TesServer, kill_groups, process_groups_under, wait_groups_gone
from .spec_check import check_response, tes_api

pytestmark = pytest.mark.integration

TES = "/ga4gh/tes/v1"
EXTERNAL_URL = os.environ.get("WES_BRIDGE_TEST_TES_URL", "").rstrip("/")
EXTERNAL_FILES = os.environ.get("WES_BRIDGE_TEST_TES_FILES", "")


# -- targets --------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    url: str  # the server root a client is given
    files: Path  # where tasks may write file:// outputs, readable here
    embedded: bool

    def check(self, method: str, url: str, status: int, body: bytes, ctype: str) -> None:
        """Spec-check one response of this target (see the module documentation)."""
        path = urlsplit(url).path
        if not path.startswith(TES):
            return  # a client's discovery probe of another path
        if status >= 400 and not self.embedded:
            return  # TES declares no error body; another server's is its own
        described = check_response(tes_api(), method, path, status, body, ctype)
        assert described, f"{method} {path} is not an operation of the TES document"


TARGETS = ["embedded"] + (["external"] if EXTERNAL_URL else [])


@pytest.fixture(scope="module", params=TARGETS)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    if request.param == "external":
        if not EXTERNAL_FILES:
            pytest.fail("WES_BRIDGE_TEST_TES_URL is set, WES_BRIDGE_TEST_TES_FILES is not")
        files = Path(EXTERNAL_FILES) / f"interchange-{uuid.uuid4().hex[:8]}"
        files.mkdir(parents=True)
        yield Target("external", EXTERNAL_URL, files, embedded=False)
        return
    root = tmp_path_factory.mktemp("tes-interchange")
    files = (root / "files").resolve()
    files.mkdir()
    server = TesServer(
        root,
        {
            "WES_BRIDGE_TES__OUTPUT_ROOTS": json.dumps([str(files)]),
            "WES_BRIDGE_TES__INPUT_ROOTS": json.dumps([str(files)]),
            "WES_BRIDGE_TES__CANCEL_GRACE_SECONDS": "2",
        },
    )
    server.start()
    try:
        yield Target("embedded", server.url, files, embedded=True)
    finally:
        server.kill()
        leftovers = process_groups_under(root)
        kill_groups(leftovers)
        wait_groups_gone(leftovers)


# -- the two clients behind one face --------------------------------------------------------
class Client(Protocol):
    def service_info(self) -> dict[str, Any]: ...
    def create(self, task: dict[str, Any]) -> str: ...
    def get(self, task_id: str, view: str) -> dict[str, Any]: ...
    def list(self, view: str, page_size: int, page_token: str | None) -> dict[str, Any]: ...
    def cancel(self, task_id: str) -> None: ...
    def wait(self, task_id: str) -> str: ...
    def status_of(self, call: Callable[[], object]) -> int: ...


class PyTes:
    """py-tes, its ``requests`` calls spec-checked as they come back."""

    def __init__(self, target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
        for method in ("get", "post"):
            monkeypatch.setattr(requests, method, self._checked(target, getattr(requests, method)))
        self.client = tes.HTTPClient(target.url, timeout=60)

    @staticmethod
    def _checked(target: Target, send: Callable[..., requests.Response]) -> Callable[..., Any]:
        @functools.wraps(send)
        def checked(url: str, *args: Any, **kwargs: Any) -> requests.Response:
            response = send(url, *args, **kwargs)
            target.check(
                response.request.method or "GET",
                response.url,
                response.status_code,
                response.content,
                response.headers.get("content-type", ""),
            )
            return response

        return checked

    @staticmethod
    def _doc(obj: Any) -> dict[str, Any]:
        return dict(json.loads(obj.as_json())) if obj is not None else {}

    def service_info(self) -> dict[str, Any]:
        return self._doc(self.client.get_service_info())

    def create(self, task: dict[str, Any]) -> str:
        return str(self.client.create_task(tes.unmarshal(task, tes.Task)))

    def get(self, task_id: str, view: str) -> dict[str, Any]:
        return self._doc(self.client.get_task(task_id, view=view))

    def list(self, view: str, page_size: int, page_token: str | None) -> dict[str, Any]:
        page = self.client.list_tasks(view=view, page_size=page_size, page_token=page_token)
        return {
            "tasks": [self._doc(t) for t in page.tasks or []],
            "next_page_token": page.next_page_token,
        }

    def cancel(self, task_id: str) -> None:
        self.client.cancel_task(task_id)

    def wait(self, task_id: str) -> str:
        # py-tes 1.1.4 waits through QUEUED, INITIALIZING and RUNNING only, so its wait also
        # returns on TES 1.1's CANCELING (and PAUSED): wait again until the state is final.
        deadline = time.monotonic() + 120
        while True:
            state = str(self.client.wait(task_id, timeout=120).state)
            if state in TERMINAL or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    def status_of(self, call: Callable[[], object]) -> int:
        with pytest.raises(requests.HTTPError) as caught:
            call()
        assert caught.value.response is not None, caught.value
        return int(caught.value.response.status_code)


class Ours:
    """wes_bridge.tes.client.TesClient, on an httpx client whose responses are spec-checked."""

    def __init__(self, target: Target) -> None:
        def check(response: httpx.Response) -> None:
            response.read()
            target.check(
                response.request.method,
                str(response.request.url),
                response.status_code,
                response.content,
                response.headers.get("content-type", ""),
            )

        self.http = httpx.Client(timeout=60, event_hooks={"response": [check]})
        self.client = TesClient(target.url, client=self.http, backoff=0.05)

    def service_info(self) -> dict[str, Any]:
        return self.client.service_info()

    def create(self, task: dict[str, Any]) -> str:
        return self.client.create_task(task)

    def get(self, task_id: str, view: str) -> dict[str, Any]:
        return self.client.get_task(task_id, view)  # type: ignore[arg-type]

    def list(self, view: str, page_size: int, page_token: str | None) -> dict[str, Any]:
        return self.client.list_tasks(
            view=view,  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )

    def cancel(self, task_id: str) -> None:
        self.client.cancel_task(task_id)

    def wait(self, task_id: str) -> str:
        return str(self.client.wait(task_id, timeout=120, poll=0.1)["state"])

    def status_of(self, call: Callable[[], object]) -> int:
        with pytest.raises(TesError) as caught:
            call()
        assert caught.value.status_code is not None, caught.value
        return int(caught.value.status_code)


@pytest.fixture(params=["py-tes", "wes-bridge"])
def client(
    request: pytest.FixtureRequest, target: Target, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    if request.param == "py-tes":
        yield PyTes(target, monkeypatch)
        return
    ours = Ours(target)
    try:
        yield ours
    finally:
        ours.http.close()


def unique() -> str:
    return uuid.uuid4().hex[:10]


def sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "alpine", "command": ["sh", "-c", script], **extra}


def last_log(task: dict[str, Any]) -> dict[str, Any]:
    logs = task.get("logs") or []
    assert logs, f"task {task.get('id')} has no log: {task}"
    return dict(logs[-1])


# -- the tests ------------------------------------------------------------------------------
def test_service_info_is_a_tes(client: Client) -> None:
    info = client.service_info()
    assert info["type"]["group"] == "org.ga4gh"
    assert info["type"]["artifact"] == "tes"
    assert info["type"]["version"].startswith("1.")


def test_a_task_with_content_input_two_executors_and_file_outputs(
    client: Client, target: Target
) -> None:
    run = unique()
    out = target.files / run
    out.mkdir()
    greeting = f"hello {run}\n"
    task = {
        "name": f"interchange-{run}",
        "tags": {"interchange": run},
        "resources": {"cpu_cores": 1},
        "inputs": [{"path": "/data/greeting.txt", "content": greeting}],
        "outputs": [
            {"path": "/results/lines.txt", "url": (out / "lines.txt").as_uri(), "type": "FILE"},
        ],
        "executors": [
            sh("cat /data/greeting.txt; cp /data/greeting.txt /results/copy.txt"),
            sh("wc -l < /results/copy.txt > /results/lines.txt; echo second >&2"),
        ],
    }
    task_id = client.create(task)
    assert client.wait(task_id) == "COMPLETE", client.get(task_id, "FULL")

    full = client.get(task_id, "FULL")
    assert (full["id"], full["state"], full["name"]) == (task_id, "COMPLETE", task["name"])
    assert full["tags"] == {"interchange": run}
    assert [i.get("content") for i in full["inputs"]] == [greeting]
    assert [e["command"] for e in full["executors"]] == [e["command"] for e in task["executors"]]
    log = last_log(full)
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    assert log["logs"][0].get("stdout") == greeting
    assert log["logs"][1].get("stderr") == "second\n"
    assert (out / "lines.txt").read_text() == "1\n"
    outputs = {o["url"]: o for o in log.get("outputs") or []}
    assert int(outputs[(out / "lines.txt").as_uri()]["size_bytes"]) == 2

    basic = client.get(task_id, "BASIC")
    assert basic["state"] == "COMPLETE"
    assert all(not i.get("content") for i in basic["inputs"])
    assert all(not e.get("stdout") and not e.get("stderr") for e in last_log(basic)["logs"])

    minimal = client.get(task_id, "MINIMAL")
    assert {k for k, v in minimal.items() if v} == {"id", "state"}
    assert (minimal["id"], minimal["state"]) == (task_id, "COMPLETE")


def test_a_failing_executor_is_an_executor_error_with_its_exit_code(client: Client) -> None:
    task_id = client.create(
        {"name": f"interchange-fail-{unique()}", "executors": [sh("echo no >&2; exit 3")]}
    )
    assert client.wait(task_id) == "EXECUTOR_ERROR"
    log = last_log(client.get(task_id, "FULL"))
    assert log["logs"][-1]["exit_code"] == 3
    assert log["logs"][-1].get("stderr") == "no\n"


def test_cancel_ends_a_running_task(client: Client) -> None:
    task_id = client.create(
        {"name": f"interchange-cancel-{unique()}", "executors": [sh("sleep 300")]}
    )
    client.cancel(task_id)
    assert client.wait(task_id) == "CANCELED"
    assert client.get(task_id, "MINIMAL")["state"] == "CANCELED"


def test_listing_pages_through_every_task(client: Client) -> None:
    made = {
        client.create({"name": f"interchange-list-{unique()}", "executors": [sh("true")]})
        for _ in range(3)
    }
    seen: list[str] = []
    token: str | None = None
    while True:
        page = client.list("MINIMAL", 2, token)
        assert len(page["tasks"]) <= 2
        for listed in page["tasks"]:
            assert listed["state"] in TERMINAL | {"QUEUED", "INITIALIZING", "RUNNING"}
            assert not listed.get("executors")
            seen.append(listed["id"])
        token = page.get("next_page_token") or None
        if token is None or made <= set(seen):
            break
    assert made <= set(seen)
    assert len(seen) == len(set(seen)), "a task was listed twice"
    for task_id in made:
        assert client.wait(task_id) == "COMPLETE"


def test_an_unknown_task_is_404(client: Client) -> None:
    missing = f"no-such-task-{unique()}"
    assert client.status_of(lambda: client.get(missing, "MINIMAL")) == 404


def test_a_task_without_executors_is_refused_with_400(client: Client, target: Target) -> None:
    # py-tes checks a task itself before it sends one; this goes around that, to the server.
    if isinstance(client, PyTes):
        response = requests.post(
            f"{target.url}{TES}/tasks", json={"name": "no executors", "executors": []}, timeout=60
        )
        assert response.status_code == 400, response.text
        return
    assert client.status_of(lambda: client.create({"executors": []})) == 400
