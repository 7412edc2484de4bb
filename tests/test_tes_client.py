"""The TES client (wes_bridge.tes.client).

Against the real embedded TES (in-process, and a `wes-bridge tes serve` process); failures that a
real server cannot produce on cue (503 bursts, refused connections, Retry-After) are injected
with httpx.MockTransport.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.tes.client import (
    TERMINAL_STATES,
    AsyncTesClient,
    TesClient,
    TesError,
    TesUnavailable,
    TesWaitTimeout,
    retry_after_seconds,
)
from wes_bridge.tes.models import TERMINAL_TASK_STATES, TesExecutor, TesTask

TES = "/ga4gh/tes/v1"


def echo(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["echo", text]}], **extra}


def unique() -> str:
    return uuid.uuid4().hex[:10]


# -- the embedded TES, in-process -----------------------------------------------------------
class RecordingTestClient(TestClient):
    """A TestClient that remembers (method, path) of every request it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, str]] = []

    def send(self, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        self.seen.append((request.method, request.url.path))
        return super().send(request, *args, **kwargs)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingTestClient]:
    data_dir = tmp_path_factory.mktemp("embedded") / "data"
    settings = load_settings(data_dir=data_dir, tes={"cpu_cores": 2, "cancel_grace_seconds": 2})
    with RecordingTestClient(create_app(settings)) as http:
        yield http


@pytest.fixture
def tes(embedded: RecordingTestClient) -> TesClient:
    return TesClient(f"http://testserver{TES}", client=embedded, backoff=0.001)


def test_echo_task_runs_and_full_view_has_its_stdout(tes: TesClient) -> None:
    task_id = tes.create_task(echo("hi"))
    done = tes.wait(task_id, timeout=30, poll=0.05, view="FULL")
    assert done["id"] == task_id
    assert done["state"] == "COMPLETE", done
    assert done["logs"][0]["logs"][0]["stdout"] == "hi\n"
    assert done["executors"][0]["command"] == ["echo", "hi"]
    assert tes.get_task(task_id) == {"id": task_id, "state": "COMPLETE"}


def test_a_pydantic_task_is_sent_without_nulls(tes: TesClient) -> None:
    task = TesTask(name="model-" + unique(), executors=[TesExecutor(image="a", command=["true"])])
    task_id = tes.create_task(task)
    basic = tes.get_task(task_id, view="BASIC")
    assert basic["name"] == task.name
    assert "stdout" not in basic["executors"][0]  # sent without "stdout": null


def test_root_url_discovers_the_api_in_process(embedded: RecordingTestClient) -> None:
    tes = TesClient("http://testserver", client=embedded)
    assert tes.api_url is None
    before = len(embedded.seen)
    info = tes.service_info()
    assert info["type"]["artifact"] == "tes"
    assert tes.api_url == f"http://testserver{TES}"
    tes.list_tasks(page_size=1)
    assert embedded.seen[before:] == [
        ("GET", f"{TES}/service-info"),  # discovery
        ("GET", f"{TES}/service-info"),
        ("GET", f"{TES}/tasks"),
    ]


def test_list_filters_by_tags_and_name_prefix(tes: TesClient) -> None:
    group = unique()
    first = tes.create_task(echo(name=f"alpha-{group}", tags={"group": group, "flag": ""}))
    second = tes.create_task(echo(name=f"beta-{group}", tags={"group": group, "flag": "on"}))
    third = tes.create_task(echo(name=f"gamma-{group}", tags={"group": group}))

    def ids(**filters: Any) -> set[str]:
        return {t["id"] for t in tes.list_tasks(**filters)["tasks"]}

    assert ids(tags={"group": group}) == {first, second, third}
    # An empty value matches the key with any value (sent as an empty tag_value).
    assert ids(tags={"group": group, "flag": ""}) == {first, second}
    assert ids(tags={"group": group, "flag": "on"}) == {second}
    assert ids(tags={"group": "other-" + group}) == set()
    assert ids(name_prefix=f"beta-{group}") == {second}
    assert ids(name_prefix=f"beta-{group}", tags={"flag": ""}) == {second}


def test_iter_tasks_follows_pages(tes: TesClient, embedded: RecordingTestClient) -> None:
    tag = {"pages": unique()}
    created = [tes.create_task(echo(tags=tag)) for _ in range(3)]
    first = tes.list_tasks(tags=tag, page_size=1)
    assert len(first["tasks"]) == 1
    assert first.get("next_page_token")
    before = len(embedded.seen)
    listed = [t["id"] for t in tes.iter_tasks(tags=tag, page_size=1, view="BASIC")]
    assert listed == list(reversed(created))  # newest first, each once
    assert embedded.seen[before:] == [("GET", f"{TES}/tasks")] * 3


def test_cancel_a_running_task_waits_through_canceling(tes: TesClient) -> None:
    task_id = tes.create_task({"executors": [{"image": "alpine", "command": ["sleep", "60"]}]})
    deadline = time.monotonic() + 30
    while tes.get_task(task_id)["state"] != "RUNNING":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    tes.cancel_task(task_id)
    done = tes.wait(task_id, timeout=30, poll=0.05)
    assert done == {"id": task_id, "state": "CANCELED"}


def test_unknown_task_is_a_404_with_the_server_message(tes: TesClient) -> None:
    with pytest.raises(TesError) as caught:
        tes.get_task("no-such-task")
    assert caught.value.status_code == 404
    assert caught.value.message == "task no-such-task not found"
    assert not isinstance(caught.value, TesUnavailable)
    with pytest.raises(TesError) as cancelled:
        tes.cancel_task("no-such-task")
    assert cancelled.value.status_code == 404


def test_bad_task_is_a_400_and_not_retried(tes: TesClient, embedded: RecordingTestClient) -> None:
    before = len(embedded.seen)
    with pytest.raises(TesError) as caught:
        tes.create_task({"executors": []})
    assert caught.value.status_code == 400
    assert "executor" in caught.value.message
    assert embedded.seen[before:] == [("POST", f"{TES}/tasks")]
    before = len(embedded.seen)
    with pytest.raises(TesError) as bad_view:
        tes.get_task("x", view="EVERYTHING")  # type: ignore[arg-type]
    assert bad_view.value.status_code == 400
    assert embedded.seen[before:] == [("GET", f"{TES}/tasks/x")]


# -- a real `wes-bridge tes serve` process --------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The root URL of a `wes-bridge tes serve` process of this test module."""
    where = tmp_path_factory.mktemp("served")
    port = free_port()
    log_path = where / "server.log"
    env = {**os.environ, "WES_BRIDGE_TES__CPU_CORES": "2"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "wes_bridge", "tes", "serve"),
                *("--port", str(port), "--data-dir", str(where / "data")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "server exited:\n" + log_path.read_text()
            assert time.monotonic() < deadline, "server did not start:\n" + log_path.read_text()
            try:
                if httpx.get(f"{root}{TES}/service-info", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_served_tes_through_the_network_with_discovery(served: str) -> None:
    with TesClient(served, timeout=10) as tes:
        assert tes.api_url is None
        task_id = tes.create_task(echo("over the wire"))
        assert tes.api_url == served + TES
        done = tes.wait(task_id, timeout=30, poll=0.05, view="FULL")
        assert done["state"] == "COMPLETE", done
        assert done["logs"][0]["logs"][0]["stdout"] == "over the wire\n"
        assert tes.get_task(task_id) == {"id": task_id, "state": "COMPLETE"}


def test_async_client_against_the_served_tes(served: str) -> None:
    tag = {"async": unique()}

    async def scenario() -> tuple[dict[str, Any], list[str], list[str], dict[str, Any]]:
        async with AsyncTesClient(served, timeout=10) as tes:
            info = await tes.service_info()
            ids = [await tes.create_task(echo(str(i), tags=tag)) for i in range(2)]
            done = await tes.wait(ids[0], timeout=30, poll=0.05, view="FULL")
            listed = [t["id"] async for t in tes.iter_tasks(tags=tag, page_size=1)]
            return info, ids, listed, done

    info, ids, listed, done = asyncio.run(scenario())
    assert info["type"]["artifact"] == "tes"
    assert done["state"] == "COMPLETE", done
    assert done["logs"][0]["logs"][0]["stdout"] == "0\n"
    assert listed == list(reversed(ids))


def test_nothing_listening_is_unavailable_after_the_retries() -> None:
    sleeps: list[float] = []
    tes = TesClient(f"http://127.0.0.1:{free_port()}{TES}", retries=2, sleep=sleeps.append)
    with tes, pytest.raises(TesUnavailable) as caught:
        tes.get_task("x")
    assert caught.value.status_code is None
    assert len(sleeps) == 2
    assert "could not reach" in str(caught.value)


# -- failures on cue (httpx.MockTransport) --------------------------------------------------
Answer = httpx.Response | type[httpx.RequestError] | Callable[[httpx.Request], httpx.Response]


class Script:
    """A mock TES answering each request with the next answer; remembers the requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.answers, f"unexpected request {request.method} {request.url}"
        answer = self.answers.pop(0)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, type):
            raise answer("injected", request=request)
        return answer(request)

    @property
    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def ok(body: Any = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"id": "t1", "state": "COMPLETE"} if body is None else body)


def fail(status: int, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return httpx.Response(status, json=body or {"msg": f"status {status}"}, headers=headers)


def mocked(
    script: Script, base: str = f"http://tes.test{TES}", **kwargs: Any
) -> tuple[TesClient, list[float]]:
    sleeps: list[float] = []
    kwargs.setdefault("rand", lambda: 0.5)
    kwargs.setdefault("sleep", sleeps.append)
    http = httpx.Client(transport=httpx.MockTransport(script))
    return TesClient(base, client=http, **kwargs), sleeps


def test_503_twice_then_200_is_retried() -> None:
    script = Script(fail(503), fail(503), ok())
    http = httpx.Client(transport=httpx.MockTransport(script))
    tes = TesClient(f"http://tes.test{TES}", client=http, backoff=0.001)  # really sleeps
    assert tes.get_task("t1") == {"id": "t1", "state": "COMPLETE"}
    assert script.paths == [f"{TES}/tasks/t1"] * 3


def test_backoff_is_exponential_jittered_and_capped() -> None:
    script = Script(*[fail(500) for _ in range(5)], ok())
    tes, sleeps = mocked(script, backoff=1.0, max_backoff=5.0, rand=lambda: 0.25)
    tes.get_task("t1")
    # rand() * min(max_backoff, backoff * 2**n)
    assert sleeps == [0.25, 0.5, 1.0, 1.25, 1.25]


def test_retry_after_is_honoured_and_capped() -> None:
    script = Script(
        fail(503, {"Retry-After": "3"}), fail(503, {"Retry-After": "120"}), fail(502), ok()
    )
    tes, sleeps = mocked(script, backoff=0.2, max_backoff=10.0)
    tes.get_task("t1")
    assert sleeps == [3.0, 10.0, 0.5 * 0.8]


def test_retry_after_values() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(junk) is None


def test_retries_run_out_on_gateway_errors() -> None:
    script = Script(*[fail(503, msg="try later") for _ in range(3)])
    tes, sleeps = mocked(script, retries=2)
    with pytest.raises(TesUnavailable) as caught:
        tes.service_info()
    assert caught.value.status_code == 503
    assert caught.value.message == "try later"
    assert len(script.requests) == 3
    assert len(sleeps) == 2


def test_connect_errors_are_retried_then_unavailable() -> None:
    script = Script(*[httpx.ConnectError for _ in range(4)])
    tes, sleeps = mocked(script, retries=3)
    with pytest.raises(TesUnavailable) as caught:
        tes.list_tasks()
    assert caught.value.status_code is None
    assert isinstance(caught.value, TesError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(script.requests) == 4
    assert sleeps == [0.1, 0.2, 0.4]


def test_connect_error_then_success() -> None:
    script = Script(httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, ok())
    tes, _ = mocked(script)
    assert tes.get_task("t1")["state"] == "COMPLETE"
    assert len(script.requests) == 4


def test_create_answered_500_is_not_retried() -> None:
    script = Script(fail(500, msg="database is locked"))
    tes, sleeps = mocked(script)
    with pytest.raises(TesError) as caught:
        tes.create_task(echo())
    assert caught.value.status_code == 500
    assert caught.value.message == "database is locked"
    assert not isinstance(caught.value, TesUnavailable)
    assert len(script.requests) == 1
    assert sleeps == []


def test_create_is_not_retried_once_the_request_was_sent() -> None:
    for error in (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError):
        script = Script(error)
        tes, _ = mocked(script)
        with pytest.raises(TesUnavailable, match="may have been created"):
            tes.create_task(echo())
        assert len(script.requests) == 1, error


def test_create_is_retried_when_it_cannot_have_arrived() -> None:
    script = Script(httpx.ConnectError, httpx.ConnectTimeout, fail(503), ok({"id": "n"}))
    tes, sleeps = mocked(script)
    assert tes.create_task(echo()) == "n"
    assert [r.method for r in script.requests] == ["POST"] * 4
    assert all(json.loads(r.content) == echo() for r in script.requests)
    assert len(sleeps) == 3


@pytest.mark.parametrize("status", [502, 504])
def test_create_is_not_retried_after_a_gateway_answer_that_may_follow_it(status: int) -> None:
    script = Script(fail(status), ok({"id": "n"}))
    tes, _ = mocked(script)
    with pytest.raises(TesError):
        tes.create_task(echo())
    assert len(script.requests) == 1


def test_get_and_cancel_are_retried_on_500_but_not_on_4xx() -> None:
    script = Script(fail(500), ok({}))
    tes, _ = mocked(script)
    tes.cancel_task("t1")
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("POST", f"{TES}/tasks/t1:cancel")
    ] * 2
    for status in (400, 401, 403, 404, 409, 429):
        script = Script(fail(status))
        tes, sleeps = mocked(script)
        with pytest.raises(TesError) as caught:
            tes.get_task("t1")
        assert caught.value.status_code == status
        assert len(script.requests) == 1
        assert sleeps == []


def test_no_retries_when_retries_is_zero() -> None:
    script = Script(fail(503))
    tes, _ = mocked(script, retries=0)
    with pytest.raises(TesUnavailable):
        tes.get_task("t1")
    assert len(script.requests) == 1


def funnel(request: httpx.Request) -> httpx.Response:
    """An older Funnel: the API under /v1, grpc-gateway errors."""
    path = request.url.path
    if path == "/v1/service-info":
        return httpx.Response(200, json={"name": "Funnel"})
    if path == "/v1/tasks/abc":
        return httpx.Response(200, json={"id": "abc", "state": "RUNNING"})
    if path.startswith("/v1/"):
        return httpx.Response(404, json={"error": "task not found", "code": 5, "message": "nf"})
    return httpx.Response(404, text="404 page not found")


def test_discovery_falls_back_to_v1_and_is_remembered() -> None:
    script = Script(*[funnel] * 5)
    tes, _ = mocked(script, base="http://funnel.test/")
    assert tes.get_task("abc") == {"id": "abc", "state": "RUNNING"}
    assert tes.api_url == "http://funnel.test/v1"
    assert tes.get_task("abc")["state"] == "RUNNING"
    with pytest.raises(TesError) as caught:
        tes.get_task("zzz")
    assert caught.value.status_code == 404
    assert caught.value.message == "nf"
    assert script.paths == [
        "/ga4gh/tes/v1/service-info",
        "/v1/service-info",
        "/v1/tasks/abc",
        "/v1/tasks/abc",
        "/v1/tasks/zzz",
    ]


def test_an_api_url_is_used_as_given() -> None:
    for base, prefix in ((f"http://h.test/x{TES}/", f"/x{TES}"), ("http://h.test/v1", "/v1")):
        script = Script(ok())
        tes, _ = mocked(script, base=base)
        tes.get_task("t1")
        assert script.paths == [f"{prefix}/tasks/t1"]


def test_discovery_that_finds_nothing_is_an_error() -> None:
    html = httpx.Response(200, text="<html>a web site</html>")
    script = Script(html, httpx.Response(404, text="nothing"))
    tes, _ = mocked(script, base="http://web.test")
    with pytest.raises(TesError, match=r"found no GA4GH TES API under http://web\.test") as caught:
        tes.get_task("t1")
    assert caught.value.status_code == 404
    assert tes.api_url is None


def test_discovery_stops_on_an_auth_error() -> None:
    script = Script(fail(401, msg="who are you"))
    tes, _ = mocked(script, base="http://tes.test")
    with pytest.raises(TesError) as caught:
        tes.service_info()
    assert (caught.value.status_code, caught.value.message) == (401, "who are you")
    assert len(script.requests) == 1


def test_bearer_token_is_sent_and_never_shown() -> None:
    script = Script(ok(), ok())
    tes, _ = mocked(script, token="s3cret-t0ken")
    tes.get_task("t1")
    assert script.requests[0].headers["Authorization"] == "Bearer s3cret-t0ken"
    assert "s3cret" not in repr(tes)
    assert "s3cret" not in repr(vars(tes))
    assert "bearer" in repr(tes)
    tes2, _ = mocked(script, token=SecretStr("from-settings"))
    tes2.get_task("t1")
    assert script.requests[1].headers["Authorization"] == "Bearer from-settings"


def test_basic_auth_is_sent_and_never_shown() -> None:
    script = Script(ok(), ok())
    tes, _ = mocked(script, username="ann", password="pa55word")
    tes.get_task("t1")
    expected = "Basic " + base64.b64encode(b"ann:pa55word").decode()
    assert script.requests[0].headers["Authorization"] == expected
    assert "pa55word" not in repr(tes)
    # Credentials in the URL: used for basic auth, then taken out of it.
    tes2, _ = mocked(script, base=f"http://ann:pa55word@tes.test{TES}")
    tes2.get_task("t1")
    assert script.requests[1].headers["Authorization"] == expected
    assert "@" not in str(script.requests[1].url)
    assert "pa55word" not in repr(tes2)
    assert tes2.base_url == f"http://tes.test{TES}"


def test_contradictory_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        TesClient("http://h.test", token="t", username="u", password="p")
    with pytest.raises(ValueError, match="needs a username"):
        TesClient("http://h.test", password="p")
    with pytest.raises(ValueError, match="http"):
        TesClient("ftp://h.test")
    with pytest.raises(ValueError, match="retries"):
        TesClient("http://h.test", retries=-1)


def test_error_messages_from_other_servers() -> None:
    script = Script(
        httpx.Response(404, json={"error": "no such task", "code": 5}),
        httpx.Response(404, json={"code": 5, "message": "gone"}),
        httpx.Response(400, text="plain words\n"),
        httpx.Response(403, content=b""),
        httpx.Response(400, json={"detail": [{"msg": "field required"}]}),
    )
    tes, _ = mocked(script)
    messages = []
    for _ in range(5):
        with pytest.raises(TesError) as caught:
            tes.get_task("t1")
        messages.append(caught.value.message)
    assert messages[:4] == ["no such task", "gone", "plain words", "Forbidden"]
    assert "field required" in messages[4]


def test_answers_that_are_not_tes_are_errors() -> None:
    script = Script(httpx.Response(200, text="<html/>"), ok({"no": "id"}))
    tes, _ = mocked(script)
    with pytest.raises(TesError, match="not a JSON object"):
        tes.get_task("t1")
    with pytest.raises(TesError, match="no task id"):
        tes.create_task(echo())


def test_tags_are_sent_as_zipped_key_value_pairs() -> None:
    script = Script(ok({"tasks": []}))
    tes, _ = mocked(script)
    page = tes.list_tasks(
        view="BASIC",
        name_prefix="x",
        state="RUNNING",
        tags={"a": "1", "b": ""},
        page_size=5,
        page_token="tok",
    )
    assert page == {"tasks": []}
    assert script.requests[0].url.query == (
        b"view=BASIC&name_prefix=x&state=RUNNING&tag_key=a&tag_value=1"
        b"&tag_key=b&tag_value=&page_size=5&page_token=tok"
    )


def test_pages_without_tasks_and_token_loops() -> None:
    script = Script(ok({}), ok({"tasks": [{"id": "1"}], "next_page_token": "p"}))
    script.answers.append(ok({"tasks": [{"id": "2"}], "next_page_token": "p"}))
    tes, _ = mocked(script)
    assert tes.list_tasks() == {"tasks": []}  # proto3 JSON leaves out an empty list
    assert [t["id"] for t in tes.iter_tasks()] == ["1", "2"]  # a repeated token ends it
    assert b"page_token=p" in script.requests[2].url.query


def test_task_ids_are_quoted_and_never_empty() -> None:
    script = Script(ok())
    tes, _ = mocked(script)
    tes.get_task("a/b?c")
    assert script.requests[0].url.raw_path == f"{TES}/tasks/a%2Fb%3Fc?view=MINIMAL".encode()
    with pytest.raises(ValueError, match="empty"):
        tes.get_task("")
    with pytest.raises(ValueError, match="empty"):
        tes.cancel_task("")
    assert len(script.requests) == 1


def states(*names: str) -> list[httpx.Response]:
    return [ok({"id": "t1", "state": name}) for name in names]


def test_wait_goes_through_non_terminal_states() -> None:
    answers = states("QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "UNKNOWN", "CANCELING")
    answers.append(ok({"id": "t1"}))  # no state at all: UNKNOWN
    answers += states("PREEMPTED")
    answers.append(ok({"id": "t1", "state": "PREEMPTED", "logs": []}))
    script = Script(*answers)
    tes, sleeps = mocked(script)
    done = tes.wait("t1", poll=0.25, view="FULL")
    assert done == {"id": "t1", "state": "PREEMPTED", "logs": []}
    assert sleeps == [0.25] * 7
    views = [r.url.params["view"] for r in script.requests]
    assert views == ["MINIMAL"] * 8 + ["FULL"]


def test_every_terminal_state_ends_a_wait() -> None:
    assert frozenset(TERMINAL_TASK_STATES) == TERMINAL_STATES
    for state in sorted(TERMINAL_STATES):
        tes, sleeps = mocked(Script(*states(state)))
        assert tes.wait("t1")["state"] == state
        assert sleeps == []


def test_wait_times_out() -> None:
    now = [100.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    slept: list[float] = []
    tes, _ = mocked(Script(*states(*["RUNNING"] * 5)), sleep=sleep, clock=lambda: now[0])
    with pytest.raises(TesWaitTimeout) as caught:
        tes.wait("t1", timeout=1.0, poll=0.3)
    assert isinstance(caught.value, TimeoutError)
    assert (caught.value.task_id, caught.value.state) == ("t1", "RUNNING")
    assert slept == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert "still RUNNING after 1 s" in str(caught.value)


def test_errors_survive_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(TesUnavailable(503, "busy")))
    assert (type(error), error.status_code, error.message) == (TesUnavailable, 503, "busy")
    timeout = pickle.loads(pickle.dumps(TesWaitTimeout("t", "RUNNING", 2.0)))
    assert str(timeout) == "task t is still RUNNING after 2 s"


def test_async_client_shares_the_retry_policy() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    script = Script(
        *[funnel, funnel],
        fail(503, {"Retry-After": "2"}),
        ok({"id": "abc", "state": "RUNNING"}),
        fail(500),
        httpx.ConnectError,
        fail(503),
        ok({"id": "new"}),
    )

    async def scenario() -> tuple[dict[str, Any], str]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(script))
        async with AsyncTesClient(
            "http://funnel.test", client=http, sleep=sleep, rand=lambda: 0.5
        ) as tes:
            task = await tes.get_task("abc")
            with pytest.raises(TesError) as caught:
                await tes.create_task(echo())
            assert caught.value.status_code == 500
            created = await tes.create_task(echo())
        await http.aclose()
        return task, created

    task, created = asyncio.run(scenario())
    assert task == {"id": "abc", "state": "RUNNING"}
    assert created == "new"
    assert sleeps == [2.0, 0.1, 0.2]
    assert script.paths[:4] == [
        "/ga4gh/tes/v1/service-info",
        "/v1/service-info",
        "/v1/tasks/abc",
        "/v1/tasks/abc",
    ]
    assert script.paths[4:] == ["/v1/tasks"] * 4
