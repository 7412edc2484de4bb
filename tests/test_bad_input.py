"""Bad requests get the spec's ErrorResponse and status code, and leave nothing behind."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wes_bridge.app import create_app
from wes_bridge.config import Settings, load_settings

from .conftest import WES, WORKFLOWS, SpecCheckedClient, free_port

HELLO = (WORKFLOWS / "cwl/hello/hello.cwl").read_bytes()


def _assert_nothing_left(client: SpecCheckedClient, settings: Settings) -> None:
    assert list(settings.runs_dir.iterdir()) == []
    assert client.get(f"{WES}/runs").json()["runs"] == []


def _error(response, status: int, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status
    for fragment in fragments:
        assert fragment in body["msg"], body["msg"]
    assert "Traceback" not in body["msg"]


@pytest.mark.parametrize(
    ("fields", "status", "fragments"),
    [
        ({"workflow_type": "GALAXY"}, 400, ["'GALAXY' is not supported", "CWL (v1.0, v1.1, v1.2)"]),
        ({"workflow_type_version": "v9.9"}, 400, ["'v9.9'", "v1.0, v1.1, v1.2"]),
        ({"workflow_type": ""}, 400, ["workflow_type is required"]),
        ({"workflow_params": "{not json"}, 400, ["workflow_params is not valid JSON"]),
        ({"workflow_params": "[1, 2]"}, 400, ["workflow_params must be a JSON object"]),
        ({"tags": "{oops"}, 400, ["tags is not valid JSON"]),
        ({"tags": '{"a": {"b": 1}}'}, 400, ["tags['a'] must be a string"]),
        ({"workflow_engine_parameters": "nope"}, 400, ["workflow_engine_parameters is not valid"]),
        (
            {"workflow_engine_parameters": '{"no_such_flag": "1"}'},
            400,
            ["no_such_flag", "Extra inputs are not permitted"],
        ),
        ({"workflow_engine_parameters": '{"parallel": "maybe"}'}, 400, ["parallel"]),
        ({"workflow_engine": "cromwell"}, 400, ["'cromwell' cannot run CWL", "cwltool", "toil"]),
        (
            {"workflow_engine": "cwltool", "workflow_engine_version": "0.1"},
            400,
            ["'0.1' of cwltool is not available"],
        ),
        ({"workflow_engine_version": "1.0"}, 400, ["without workflow_engine"]),
        ({"workflow_url": ""}, 400, ["workflow_url is required"]),
        ({"workflow_url": "missing.cwl"}, 400, ["neither an http(s) URL nor one of", "hello.cwl"]),
        ({"workflow_url": "../hello.cwl"}, 400, ["parent directory"]),
        ({"workflow_url": "file:///etc/passwd"}, 400, ["scheme 'file' is not supported"]),
        ({"workflow_url": "ftp://example.org/x.cwl"}, 400, ["scheme 'ftp'"]),
        ({"workflow_url": "http://[::1/x.cwl"}, 400, ["is malformed"]),
        ({"workflow_url": "trs://[::1/x/1"}, 400, ["invalid host or port"]),
        ({"workflow_url": "trs://127.0.0.1:99999/x/1"}, 400, ["invalid host or port"]),
        ({"workflow_url": "trs://example.org/only-an-id"}, 400, ["trs://<host[:port]>/<id>/"]),
        ({"workflow_url": "#workflow/wes-bridge/cwl/hello"}, 400, ["needs its version"]),
        (
            {"workflow_url": "https://[zz]/ga4gh/trs/v2/tools/a/versions/1/CWL/descriptor"},
            400,
            ["is malformed"],
        ),
        (
            {"workflow_params": '{"x": {"class": "File", "location": "../../secret"}}'},
            400,
            ["points outside the run's attachments"],
        ),
        ({"surprise": "1"}, 400, ["unknown form field 'surprise'"]),
    ],
)
def test_bad_fields(
    client: SpecCheckedClient,
    settings: Settings,
    fields: dict[str, str],
    status: int,
    fragments: list[str],
) -> None:
    data = {
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_url": "hello.cwl",
        **fields,
    }
    response = client.post(
        f"{WES}/runs", data=data, files=[("workflow_attachment", ("hello.cwl", HELLO))]
    )
    _error(response, status, *fragments)
    _assert_nothing_left(client, settings)


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["../evil.cwl"], "parent directory"),
        (["a/../../evil.cwl"], "parent directory"),
        (["/etc/evil.cwl"], "absolute path"),
        (["dir\\evil.cwl"], "backslash"),
        (["hello.cwl", "hello.cwl"], "more than once, with different contents"),
        (["hello.cwl", "./hello.cwl"], "more than once, with different contents"),
        (["data", "data/inner.txt"], "is a file but"),
        ([""], "must be files with a filename"),
        (["x" * 300], "over 255 bytes"),
    ],
)
def test_bad_attachment_names(
    client: SpecCheckedClient, settings: Settings, names: list[str], fragment: str
) -> None:
    files = [("workflow_attachment", (name, b"x%d" % i)) for i, name in enumerate(names)]
    files.append(("workflow_attachment", ("main.cwl", HELLO)))
    data = {"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "main.cwl"}
    _error(client.post(f"{WES}/runs", data=data, files=files), 400, fragment)
    _assert_nothing_left(client, settings)
    assert not (settings.data_dir.parent / "evil.cwl").exists()


def _raw_multipart(filename: bytes) -> bytes:
    parts = [
        b'--b\r\nContent-Disposition: form-data; name="workflow_type"\r\n\r\nCWL\r\n',
        b'--b\r\nContent-Disposition: form-data; name="workflow_type_version"\r\n\r\nv1.2\r\n',
        b'--b\r\nContent-Disposition: form-data; name="workflow_url"\r\n\r\nmain.cwl\r\n',
        b'--b\r\nContent-Disposition: form-data; name="workflow_attachment"; filename="main.cwl"'
        b"\r\n\r\n" + HELLO + b"\r\n",
        b'--b\r\nContent-Disposition: form-data; name="workflow_attachment"; filename="'
        + filename
        + b'"\r\n\r\nx\r\n',
        b"--b--\r\n",
    ]
    return b"".join(parts)


@pytest.mark.parametrize(
    ("raw_name", "fragment"), [(b"evil\x00.cwl", "NUL"), (b"a/\x01b", "control character")]
)
def test_raw_control_bytes_in_names(
    client: SpecCheckedClient, settings: Settings, raw_name: bytes, fragment: str
) -> None:
    response = client.post(
        f"{WES}/runs",
        content=_raw_multipart(raw_name),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    _error(response, 400, fragment)
    _assert_nothing_left(client, settings)


def test_not_multipart(client: SpecCheckedClient) -> None:
    _error(
        client.post(f"{WES}/runs", content=b"hello", headers={"content-type": "text/plain"}),
        400,
        "multipart/form-data",
    )
    _error(
        client.post(f"{WES}/runs", content=b"[1]", headers={"content-type": "application/json"}),
        400,
        "JSON object",
    )


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[tuple[SpecCheckedClient, Settings]]:
    settings = load_settings(data_dir=tmp_path / "data", max_upload_bytes=50_000, port=free_port())
    with SpecCheckedClient(create_app(settings)) as client:
        yield client, settings


def test_upload_over_limit(small_client: tuple[SpecCheckedClient, Settings]) -> None:
    client, settings = small_client
    data = {"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "hello.cwl"}
    files = [
        ("workflow_attachment", ("hello.cwl", HELLO)),
        ("workflow_attachment", ("big.bin", b"0" * 100_000)),
    ]
    _error(client.post(f"{WES}/runs", data=data, files=files), 400, "limit of 50000 bytes")

    # Without a Content-Length the limit still holds while the body streams in.
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="workflow_type"\r\n\r\nCWL\r\n'
        for _ in range(20):
            yield b'--b\r\nContent-Disposition: form-data; name="workflow_attachment"; '
            yield b'filename="f%d"\r\n\r\n' % _ + b"1" * 10_000 + b"\r\n"
        yield b"--b--\r\n"

    response = client.post(
        f"{WES}/runs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    _error(response, 400, "limit of 50000 bytes")
    _assert_nothing_left(client, settings)


@pytest.mark.parametrize("run_path", ["", "/status", "/tasks", "/tasks/t1", "/stdout"])
def test_unknown_run(client: SpecCheckedClient, run_path: str) -> None:
    _error(client.get(f"{WES}/runs/no-such-run{run_path}"), 404, "no-such-run not found")


def test_unknown_run_cancel(client: SpecCheckedClient) -> None:
    _error(client.post(f"{WES}/runs/no-such-run/cancel"), 404, "not found")


def test_unknown_task_and_traversal(client: SpecCheckedClient) -> None:
    run_id = client.submit("cwl/hello/hello.cwl").json()["run_id"]
    client.wait(run_id)
    _error(client.get(f"{WES}/runs/{run_id}/tasks/nope"), 404, "task nope")
    _error(client.get(f"{WES}/runs/{run_id}/outputs/../../../wes-bridge.sqlite"), 404)
    _error(client.get(f"{WES}/runs/{run_id}/outputs/%2e%2e/%2e%2e/wes-bridge.sqlite"), 404)


def test_tampered_page_tokens(client: SpecCheckedClient) -> None:
    ids = [client.submit("cwl/hello/hello.cwl").json()["run_id"] for _ in range(3)]
    token = client.get(f"{WES}/runs", params={"page_size": 1}).json()["next_page_token"]
    assert token
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (flipped, "garbage", token + "x", "", "%%%"):
        if not bad:
            continue
        _error(client.get(f"{WES}/runs", params={"page_token": bad}), 400, "page_token")
    # A token from one listing cannot be used for another.
    _error(
        client.get(f"{WES}/runs", params={"page_token": token, "state": "COMPLETE"}),
        400,
        "another listing",
    )
    _error(
        client.get(f"{WES}/runs/{ids[0]}/tasks", params={"page_token": token}),
        400,
        "another listing",
    )
    _error(client.get(f"{WES}/runs", params={"page_size": 0}), 400, "page_size")
    _error(client.get(f"{WES}/runs", params={"page_size": "many"}), 400, "page_size")
    _error(client.get(f"{WES}/runs", params={"state": "SLEEPING"}), 400, "state must be")
    for run_id in ids:
        client.wait(run_id)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.cwl",
        "http://localhost/x.cwl",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x.cwl",
        "http://[::1]/x.cwl",
        "http://192.168.0.1/x.cwl",
    ],
)
def test_forbidden_url_hosts(client: SpecCheckedClient, settings: Settings, url: str) -> None:
    data = {"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": url}
    _error(client.post(f"{WES}/runs", data=data), 403, "non-public address")
    _assert_nothing_left(client, settings)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_workflow_url_fetch_under_policy(tmp_path: Path, http_server: str) -> None:
    _Handler.routes = {
        "/hello.cwl": (200, {}, HELLO),
        "/big.cwl": (200, {}, b"#" * 5000),
        "/moved.cwl": (
            302,
            {"Location": http_server.replace("127.0.0.1", "localhost") + "/hello.cwl"},
            b"",
        ),
        "/gone.cwl": (404, {}, b"no"),
    }
    settings = load_settings(
        data_dir=tmp_path / "data",
        url_fetch_allow_private=True,
        url_fetch_allowed_hosts=["127.0.0.1"],
        url_fetch_max_bytes=4096,
        port=free_port(),
    )
    with SpecCheckedClient(create_app(settings)) as client:
        base = {"workflow_type": "CWL", "workflow_type_version": "v1.2"}
        ok = client.post(
            f"{WES}/runs",
            data={
                **base,
                "workflow_url": f"{http_server}/hello.cwl",
                "workflow_params": '{"message": "fetched"}',
            },
        )
        assert ok.status_code == 200, ok.text
        run_id = ok.json()["run_id"]
        assert client.wait(run_id) == "COMPLETE"
        outputs = client.get(f"{WES}/runs/{run_id}").json()["outputs"]
        assert Path(outputs["greeting"]["path"]).read_text() == "fetched\n"

        _error(
            client.post(f"{WES}/runs", data={**base, "workflow_url": f"{http_server}/big.cwl"}),
            400,
            "larger than the limit of 4096 bytes",
        )
        _error(
            client.post(f"{WES}/runs", data={**base, "workflow_url": f"{http_server}/moved.cwl"}),
            403,
            "'localhost' is not in this node's url_fetch_allowed_hosts",
        )
        _error(
            client.post(f"{WES}/runs", data={**base, "workflow_url": f"{http_server}/gone.cwl"}),
            400,
            "HTTP 404",
        )
        assert sorted(p.name for p in settings.runs_dir.iterdir()) == [run_id]
