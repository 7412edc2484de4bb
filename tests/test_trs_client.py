"""The TRS client (wes_bridge.trs.client) and `wes-bridge trs`, against registries served for
real over HTTP.

Most tests use a fake registry of their own (Starlette under uvicorn on a free 127.0.0.1 port)
that misbehaves on cue: wrong checksums, hostile zips, huge or endless bodies, slow answers,
redirect loops. Every refusal is checked for its error type and status, and for leaving the
destination folder empty. The last tests fetch from this node's own TRS server.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import shutil
import stat
import threading
import time
import warnings
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from wes_bridge.app import create_app
from wes_bridge.cli import main
from wes_bridge.config import Settings, load_settings
from wes_bridge.errors import BadRequest, Forbidden, WesError
from wes_bridge.trs.client import (
    TrsClient,
    fetch_trs_workflow,
    is_trs_url,
    known_registries,
    parse_tool_reference,
    registry_for,
)

from .conftest import WORKFLOWS, SpecCheckedClient, free_port

PREFIX = "/ga4gh/trs/v2"
MAIN = b"cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\nsteps: []\n"
TOOL = b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\ninputs: []\noutputs: []\n"
PARAMS = b'{"message": "hi"}\n'
FILES = {"main.cwl": MAIN, "tools/echo.cwl": TOOL, "inputs.json": PARAMS}
TOOL_ID = "#workflow/example.org/acme/hello"
VERSION = "1.0.0"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def q(segment: str) -> str:
    return quote(segment, safe="")


# -- a fake registry --------------------------------------------------------------------------
@dataclass
class Version:
    files: dict[str, bytes]
    types: list[str] = field(default_factory=lambda: ["CWL"])
    primary: str = "main.cwl"
    # Listing checksum per path (default: the sha-256 of `files`); None: no checksum.
    checksums: dict[str, Any] = field(default_factory=dict)
    # What is actually served per path (default: `files`).
    served: dict[str, bytes] = field(default_factory=dict)

    def body(self, path: str) -> bytes:
        return self.served.get(path, self.files[path])

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for path, data in self.files.items():
            entry: dict[str, Any] = {
                "path": path,
                "file_type": "PRIMARY_DESCRIPTOR"
                if path == self.primary
                else "SECONDARY_DESCRIPTOR",
            }
            checksum = self.checksums.get(path, {"type": "sha-256", "checksum": sha256(data)})
            if checksum is not None:
                entry["checksum"] = checksum
            out.append(entry)
        return out

    def zipped(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in self.files:
                archive.writestr(path, self.body(path))
        return buffer.getvalue()


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


class FakeRegistry:
    """A TRS registry whose behaviour each test sets: what it holds, whether it offers zips,
    FileWrappers with content or url, streamed bodies without Content-Length, slow answers."""

    def __init__(self) -> None:
        self.app = Starlette(routes=[Route("/{rest:path}", self.handle)])
        self.port = free_port()
        self.reset()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + PREFIX

    def reset(self) -> None:
        self.tools: dict[str, dict[str, Version]] = {}
        self.zip: str | bytes = "zip"  # "zip" | "404" | "json" | the bytes to serve as the zip
        self.wrapper = "content"  # "content": FileWrapper.content; "url": FileWrapper.url
        self.raw_base: str | None = None  # where FileWrapper urls point (default: here)
        self.stream_raw = False  # raw files chunked, without Content-Length
        self.drip = 0.0  # raw files one byte at a time, this many seconds apart
        self.sleep = 0.0  # before every answer
        self.page_size = 1000
        self.seen: list[tuple[str, str | None]] = []  # (raw path?query, Authorization)

    def add(self, tool_id: str, version_id: str, version: Version) -> None:
        self.tools.setdefault(tool_id, {})[version_id] = version

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    # -- documents ---------------------------------------------------------------------------
    def tool_version(self, tool_id: str, version_id: str, version: Version) -> dict[str, Any]:
        return {
            "url": f"{self.url}/tools/{q(tool_id)}/versions/{q(version_id)}",
            "id": version_id,
            "name": version_id,
            "descriptor_type": version.types,
            "is_production": True,
        }

    def tool(self, tool_id: str) -> dict[str, Any]:
        return {
            "url": f"{self.url}/tools/{q(tool_id)}",
            "id": tool_id,
            "name": tool_id.rsplit("/", 1)[-1],
            "organization": tool_id.split("/")[2] if tool_id.count("/") >= 2 else "acme",
            "toolclass": {"id": "workflow", "name": "Workflow"},
            "versions": [
                self.tool_version(tool_id, vid, v) for vid, v in self.tools[tool_id].items()
            ],
        }

    # -- the one handler, routed on the raw (still percent-encoded) path ----------------------
    async def handle(self, request: Request) -> Response:
        raw = request.scope["raw_path"].decode("ascii")
        query = request.url.query
        self.seen.append(
            (raw + (f"?{query}" if query else ""), request.headers.get("authorization"))
        )
        if self.sleep:
            await asyncio.sleep(self.sleep)
        if raw.startswith("/redirect/"):  # /redirect/N/<path>: N redirects to /<path>
            _, _, hops, rest = raw.split("/", 3)
            target = f"/redirect/{int(hops) - 1}/{rest}" if int(hops) > 1 else f"/{rest}"
            return RedirectResponse(target, 302)
        if raw.startswith("/raw/"):
            return self.raw(raw)
        if raw == f"{PREFIX}/tools":
            return self.tool_list(request)
        if not raw.startswith(f"{PREFIX}/tools/"):
            return error(404, f"nothing at {raw}")
        segments = raw[len(PREFIX) + len("/tools/") :].split("/")
        tool_id = unquote(segments[0])
        if tool_id not in self.tools:
            return error(404, f"no tool {tool_id} in this registry")
        if len(segments) == 1:
            return JSONResponse(self.tool(tool_id))
        version_id = unquote(segments[2])
        version = self.tools[tool_id].get(version_id)
        if version is None:
            return error(404, f"tool {tool_id} has no version {version_id}")
        if len(segments) == 3:
            return JSONResponse(self.tool_version(tool_id, version_id, version))
        descriptor_type = segments[3]
        if descriptor_type not in version.types:
            return error(404, f"no {descriptor_type} descriptor")
        if segments[4:] == ["files"]:
            if request.query_params.get("format") == "zip":
                if self.zip == "404":
                    return error(404, "no zips here")
                if self.zip == "json":
                    return JSONResponse(version.listing())
                body = version.zipped() if self.zip == "zip" else self.zip
                assert isinstance(body, bytes)
                return Response(body, media_type="application/zip")
            return JSONResponse(version.listing())
        if segments[4] == "descriptor" and len(segments) > 5:
            path = unquote("/".join(segments[5:]))
            if path not in version.files:
                return error(404, f"no file {path}")
            wrapper: dict[str, Any] = {
                "checksum": [
                    {"type": "sha1", "checksum": hashlib.sha1(version.files[path]).hexdigest()}
                ]
            }
            if self.wrapper == "content":
                wrapper["content"] = version.body(path).decode()
            else:
                base = self.raw_base or self.base
                wrapper["url"] = f"{base}/raw/{q(tool_id)}/{q(version_id)}/{quote(path)}"
            return JSONResponse(wrapper)
        return error(404, f"nothing at {raw}")

    def raw(self, raw: str) -> Response:
        _, _, tool_enc, version_enc, *path = raw.split("/")
        version = self.tools[unquote(tool_enc)][unquote(version_enc)]
        data = version.body(unquote("/".join(path)))
        if self.drip:
            delay = self.drip

            async def drip() -> AsyncIterator[bytes]:
                for byte in data:
                    await asyncio.sleep(delay)
                    yield bytes([byte])

            return StreamingResponse(drip(), media_type="text/plain")
        if self.stream_raw:

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(data), 1000):
                    yield data[start : start + 1000]

            return StreamingResponse(chunks(), media_type="text/plain")
        return Response(data, media_type="text/plain")

    def tool_list(self, request: Request) -> Response:
        tools = [self.tool(t) for t in sorted(self.tools)]
        wanted = request.query_params.get("descriptorType")
        if wanted:
            tools = [t for t in tools if any(wanted in v["descriptor_type"] for v in t["versions"])]
        offset = int(request.query_params.get("offset", "0"))
        limit = min(int(request.query_params.get("limit", "1000")), self.page_size)
        page = tools[offset : offset + limit]
        headers = {}
        if offset + limit < len(tools):
            headers["next_page"] = f"{self.url}/tools?offset={offset + limit}&limit={limit}"
        return JSONResponse(page, headers=headers)


class Served:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "server did not start"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeRegistry, FakeRegistry]]:
    a, b = FakeRegistry(), FakeRegistry()
    with Served(a.app, a.port), Served(b.app, b.port):
        yield a, b


@pytest.fixture
def reg(servers: tuple[FakeRegistry, FakeRegistry]) -> FakeRegistry:
    """Registry A, reset, holding TOOL_ID VERSION (FILES)."""
    a, b = servers
    a.reset()
    b.reset()
    a.add(TOOL_ID, VERSION, Version(dict(FILES)))
    return a


@pytest.fixture
def other(servers: tuple[FakeRegistry, FakeRegistry], reg: FakeRegistry) -> FakeRegistry:
    """Registry B, reset and empty."""
    return servers[1]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


def settings_for(tmp_path: Path, *registries: dict[str, Any], **overrides: Any) -> Settings:
    trs = {"serve": False, "registries": list(registries), **overrides.pop("trs", {})}
    return load_settings(data_dir=tmp_path / "data", trs=trs, **overrides)


def configured(registry: FakeRegistry, name: str = "fake", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": registry.url, **extra}


def trs_uri(registry: FakeRegistry, tool_id: str = TOOL_ID, version: str = VERSION) -> str:
    return f"trs://127.0.0.1:{registry.port}/{q(tool_id)}/{q(version)}"


def written(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def refused(
    kind: type[WesError], url: str, settings: Settings, dest: Path, workflow_type: str = "CWL"
) -> str:
    """fetch_trs_workflow must raise ``kind`` (with its HTTP status) and leave dest empty."""
    with pytest.raises(kind) as caught:
        fetch_trs_workflow(url, workflow_type, dest, settings)
    assert caught.value.status_code == kind.status_code
    assert list(dest.iterdir()) == [], "a refused fetch left files behind"
    return caught.value.msg


# -- the workflow_url forms ---------------------------------------------------------------------
def test_is_trs_url_knows_the_three_forms() -> None:
    enc = q(TOOL_ID)
    assert is_trs_url(f"trs://dockstore.org/{enc}/1.0")
    assert is_trs_url("TRS://dockstore.org/x/1")
    assert is_trs_url("#workflow/github.com/acme/hello:main")
    assert is_trs_url("#tool/quay.io/acme/tool:1.0")
    assert is_trs_url(f"https://h/api/ga4gh/trs/v2/tools/{enc}/versions/1.0/CWL/descriptor")
    assert is_trs_url(f"http://h:8080/ga4gh/trs/v2/tools/{enc}/versions/1.0/PLAIN_SMK/descriptor")
    for other in (
        "hello.cwl",
        "tools/hello.cwl#main",
        "https://h/hello.cwl",
        "workflow/github.com/acme/hello:main",
        "#main",
        f"https://h/ga4gh/trs/v2/tools/{enc}/versions/1.0/CWL/files",
        f"https://h/tools/{enc}/versions/1.0/CWL/descriptor",
    ):
        assert not is_trs_url(other), other


def test_known_registries_put_this_nodes_own_first(tmp_path: Path) -> None:
    extra = {"name": "dockstore", "url": "https://dockstore.org/api/ga4gh/trs/v2/"}
    for host, expected in (
        ("0.0.0.0", "http://127.0.0.1:9999/ga4gh/trs/v2"),
        ("::", "http://127.0.0.1:9999/ga4gh/trs/v2"),
        ("10.1.2.3", "http://10.1.2.3:9999/ga4gh/trs/v2"),
        ("::1", "http://[::1]:9999/ga4gh/trs/v2"),
    ):
        settings = load_settings(
            data_dir=tmp_path, host=host, port=9999, trs={"registries": [extra]}
        )
        known = known_registries(settings)
        assert [(r.name, r.url, r.approved) for r in known] == [
            ("self", expected, True),
            ("dockstore", "https://dockstore.org/api/ga4gh/trs/v2", True),
        ]
    settings = load_settings(data_dir=tmp_path, public_url="https://wes.example.org/node/")
    assert known_registries(settings)[0].url == "https://wes.example.org/node/ga4gh/trs/v2"
    settings = load_settings(data_dir=tmp_path, trs={"serve": False, "registries": [extra]})
    assert [r.name for r in known_registries(settings)] == ["dockstore"]


@pytest.mark.parametrize("form", ["trs", "dockstore", "descriptor", "plain-descriptor"])
def test_each_url_form_fetches_the_workflow_checked(
    reg: FakeRegistry, tmp_path: Path, dest: Path, form: str
) -> None:
    url = {
        "trs": trs_uri(reg),
        "dockstore": f"{TOOL_ID}:{VERSION}",
        "descriptor": f"{reg.url}/tools/{q(TOOL_ID)}/versions/{VERSION}/CWL/descriptor",
        "plain-descriptor": f"{reg.url}/tools/{q(TOOL_ID)}/versions/{VERSION}/PLAIN_CWL/descriptor",
    }[form]
    settings = settings_for(tmp_path, configured(reg))
    workflow = fetch_trs_workflow(url, "CWL", dest, settings)
    assert written(dest) == FILES
    assert workflow.registry == "fake"
    assert workflow.registry_url == reg.url
    assert (workflow.tool_id, workflow.version_id) == (TOOL_ID, VERSION)
    assert workflow.descriptor_type == "CWL"
    assert workflow.primary_descriptor == "main.cwl"
    assert workflow.approved
    assert {f.path: (f.checksum_type, f.checksum, f.size) for f in workflow.files} == {
        path: ("sha-256", sha256(data), len(data)) for path, data in FILES.items()
    }
    record = json.loads(json.dumps(workflow.as_record()))
    assert record["trs_uri"] == trs_uri(reg)
    assert record["approved"] is True
    assert [f["path"] for f in record["files"]] == list(FILES)
    # The whole workflow came as one zip: tool version, listing, zip.
    assert reg.paths()[-1].endswith("/CWL/files?format=zip")
    assert not any("/descriptor/" in p for p in reg.paths())
    # Files are written like staging writes attachments.
    assert stat.S_IMODE((dest / "main.cwl").stat().st_mode) == 0o640


def test_ids_with_hash_slash_colon_and_spaces_are_percent_encoded(
    reg: FakeRegistry, tmp_path: Path
) -> None:
    odd_id, odd_version = "#workflow/example.org/my org/tool:x", "1.0 beta"
    reg.add(odd_id, odd_version, Version(dict(FILES)))
    reg.zip = "404"  # per-file fetches too: every URL carries the id
    settings = settings_for(tmp_path, configured(reg))
    urls = [
        trs_uri(reg, odd_id, odd_version),
        f"{odd_id}:{odd_version}",
        f"{reg.url}/tools/{q(odd_id)}/versions/{q(odd_version)}/CWL/descriptor",
    ]
    for n, url in enumerate(urls):
        target = tmp_path / f"dest{n}"
        target.mkdir()
        reg.seen.clear()
        workflow = fetch_trs_workflow(url, "CWL", target, settings)
        assert (workflow.tool_id, workflow.version_id) == (odd_id, odd_version)
        assert written(target) == FILES
        prefix = f"{PREFIX}/tools/%23workflow%2Fexample.org%2Fmy%20org%2Ftool%3Ax/versions/"
        assert all(p.startswith(prefix + "1.0%20beta") for p in reg.paths()), reg.paths()
    assert workflow.trs_uri == trs_uri(reg, odd_id, odd_version)


def test_a_dockstore_style_id_is_looked_for_in_each_registry_in_turn(
    reg: FakeRegistry, other: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    # A (first) lacks it, B has it.
    wanted = "#workflow/github.com/acme/only-in-b"
    other.add(wanted, "main", Version(dict(FILES)))
    settings = settings_for(tmp_path, configured(reg, "first"), configured(other, "second"))
    workflow = fetch_trs_workflow(f"{wanted}:main", "CWL", dest, settings)
    assert workflow.registry == "second"
    assert written(dest) == FILES
    assert len(reg.seen) == 1  # asked once, answered 404

    # Nobody has it: 400 with what each registry said.
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = refused(BadRequest, "#workflow/github.com/acme/nowhere:1", settings, empty)
    assert "'first': no tool #workflow/github.com/acme/nowhere in this registry" in msg
    assert "'second': no tool #workflow/github.com/acme/nowhere in this registry" in msg

    # This node's own registry is asked first (and a dead one does not stop the search).
    dead = load_settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        trs={"registries": [configured(other, "second")]},
    )
    again = tmp_path / "again"
    again.mkdir()
    assert fetch_trs_workflow(f"{wanted}:main", "CWL", again, dead).registry == "second"
    msg = refused(BadRequest, "#workflow/github.com/acme/nowhere:1", dead, empty)
    assert "'self': cannot reach 127.0.0.1" in msg, msg


def test_a_dockstore_style_id_needs_a_version_and_a_registry(tmp_path: Path, dest: Path) -> None:
    settings = settings_for(tmp_path)
    assert "needs its version" in refused(BadRequest, "#workflow/github.com/acme/x", settings, dest)
    assert "knows no TRS registry" in refused(
        BadRequest, "#workflow/github.com/acme/x:1", settings, dest
    )


# -- the registry's answers -----------------------------------------------------------------------
def test_an_unknown_host_is_a_clear_400(tmp_path: Path, dest: Path) -> None:
    settings = settings_for(tmp_path)
    msg = refused(BadRequest, f"trs://no-such-registry.invalid/{q(TOOL_ID)}/1.0", settings, dest)
    assert "cannot resolve host 'no-such-registry.invalid'" in msg, msg


def test_an_unknown_id_or_version_is_a_400_with_the_registrys_message(
    reg: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    settings = settings_for(tmp_path, configured(reg))
    msg = refused(BadRequest, trs_uri(reg, "#workflow/example.org/acme/nope"), settings, dest)
    assert msg == (
        "TRS registry 'fake' has no tool '#workflow/example.org/acme/nope' version '1.0.0': "
        "no tool #workflow/example.org/acme/nope in this registry"
    )
    msg = refused(BadRequest, trs_uri(reg, version="9.9.9"), settings, dest)
    assert msg == (
        f"TRS registry 'fake' has no tool {TOOL_ID!r} version '9.9.9': "
        f"tool {TOOL_ID} has no version 9.9.9"
    )


def test_a_descriptor_type_that_does_not_match_workflow_type_is_refused(
    reg: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    settings = settings_for(tmp_path, configured(reg))
    msg = refused(BadRequest, trs_uri(reg), settings, dest, workflow_type="SMK")
    assert "is CWL, not SMK" in msg, msg
    assert "workflow_type SMK" in msg, msg
    url = f"{reg.url}/tools/{q(TOOL_ID)}/versions/{VERSION}/CWL/descriptor"
    msg = refused(BadRequest, url, settings, dest, workflow_type="NFL")
    assert msg == "workflow_url names a CWL descriptor, but workflow_type NFL needs NFL"
    msg = refused(BadRequest, trs_uri(reg), settings, dest, workflow_type="GALAXY")
    assert "cannot come from a TRS registry" in msg


@pytest.mark.parametrize("route", ["zip", "per-file"])
def test_a_checksum_mismatch_is_refused(
    reg: FakeRegistry, tmp_path: Path, dest: Path, route: str
) -> None:
    version = reg.tools[TOOL_ID][VERSION]
    version.served["tools/echo.cwl"] = TOOL.replace(b"echo", b"curl")
    if route == "per-file":
        reg.zip = "404"
    settings = settings_for(tmp_path, configured(reg))
    msg = refused(BadRequest, trs_uri(reg), settings, dest)
    assert msg.startswith("checksum mismatch for tools/echo.cwl"), msg


def test_a_run_whose_workflow_fails_its_checksum_is_refused_and_nothing_runs(
    reg: FakeRegistry, tmp_path: Path
) -> None:
    """Through WES: a 400 naming the file, no run, no run directory, no TES task."""
    reg.tools[TOOL_ID][VERSION].served["main.cwl"] = MAIN + b"# tampered\n"
    settings = settings_for(tmp_path, configured(reg), port=free_port())
    with SpecCheckedClient(create_app(settings)) as client:
        response = client.post(
            "/ga4gh/wes/v1/runs",
            data={
                "workflow_type": "CWL",
                "workflow_type_version": "v1.2",
                "workflow_url": trs_uri(reg),
            },
        )
        assert response.status_code == 400, response.text
        assert response.json()["msg"].startswith("checksum mismatch for main.cwl")
        assert client.get("/ga4gh/wes/v1/runs").json()["runs"] == []
        assert client.get("/ga4gh/tes/v1/tasks").json()["tasks"] == []
    assert list((tmp_path / "data" / "runs").iterdir()) == []


def test_checksum_type_spellings_and_unknown_types(
    reg: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    version = reg.tools[TOOL_ID][VERSION]
    version.checksums = {
        "main.cwl": {"type": "SHA-512", "checksum": hashlib.sha512(MAIN).hexdigest().upper()},
        "tools/echo.cwl": [{"type": "md5", "checksum": hashlib.md5(TOOL).hexdigest()}],
        "inputs.json": {"type": "crc32c", "checksum": "0badc0de"},  # unknown: as none
    }
    settings = settings_for(tmp_path, configured(reg))
    workflow = fetch_trs_workflow(trs_uri(reg), "CWL", dest, settings)
    kinds = {f.path: (f.checksum_type, f.checksum) for f in workflow.files}
    assert kinds == {
        "main.cwl": ("sha-512", hashlib.sha512(MAIN).hexdigest()),
        "tools/echo.cwl": ("md5", hashlib.md5(TOOL).hexdigest()),
        "inputs.json": (None, None),
    }
    assert not workflow.approved  # one file had no checksum that could be verified


def zip_of(*entries: tuple[zipfile.ZipInfo | str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
    return buffer.getvalue()


def symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


GOOD = [("main.cwl", MAIN), ("tools/echo.cwl", TOOL), ("inputs.json", PARAMS)]
HOSTILE_ZIPS = {
    "dotdot": ([*GOOD, ("tools/../../evil.cwl", b"x")], "leaves its folder ('..')"),
    "absolute": ([*GOOD, ("/etc/evil.cwl", b"x")], "absolute path"),
    "backslash": ([*GOOD, ("tools\\evil.cwl", b"x")], "backslash"),
    "symlink": ([GOOD[0], (symlink("tools/echo.cwl"), b"/etc/passwd"), GOOD[2]], "symbolic link"),
    "not-listed": ([*GOOD, ("extra.sh", b"rm -rf /")], "not in the registry's /files listing"),
    "duplicate": ([*GOOD, ("main.cwl", MAIN)], "'main.cwl' twice"),
    "folder-as-file": ([*GOOD, ("main.cwl/", b"")], "'main.cwl' as a folder, but it is a listed"),
    "file-as-folder": ([GOOD[0], GOOD[2], ("tools", b"x"), GOOD[1]], "listed files use it as"),
    "missing": (GOOD[:2], "lacks files its /files listing names: 'inputs.json'"),
    "bomb": ([GOOD[0], ("tools/echo.cwl", b"\0" * (3 << 20)), GOOD[2]], "unpacks to more than"),
    "not-a-zip": (None, "not a valid zip file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIPS))
def test_a_hostile_zip_is_refused_whole(
    reg: FakeRegistry, tmp_path: Path, dest: Path, case: str
) -> None:
    entries, expected = HOSTILE_ZIPS[case]
    reg.zip = zip_of(*entries) if entries is not None else b"PK\x03\x04 not really a zip"
    settings = settings_for(tmp_path, configured(reg), trs={"fetch_max_bytes": 1 << 20})
    msg = refused(BadRequest, trs_uri(reg), settings, dest)
    assert msg.startswith(f"the zip of tool {TOOL_ID!r} version '1.0.0' of TRS registry 'fake'")
    assert expected in msg, msg


def test_a_zip_that_lies_about_its_sizes_is_refused(
    reg: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    # The central directory says 10 bytes; the data inflates to 3 MiB.
    body = bytearray(zip_of(GOOD[0], ("tools/echo.cwl", b"\0" * (3 << 20)), GOOD[2]))
    central = body.rfind(b"PK\x01\x02", 0, body.rfind(b"tools/echo.cwl"))
    body[central + 24 : central + 28] = (10).to_bytes(4, "little")
    reg.zip = bytes(body)
    settings = settings_for(tmp_path, configured(reg), trs={"fetch_max_bytes": 1 << 20})
    msg = refused(BadRequest, trs_uri(reg), settings, dest)
    assert msg.startswith("the zip of"), msg
    assert "'tools/echo.cwl'" in msg, msg


@pytest.mark.parametrize("mode", ["content", "url", "url-streamed", "zip"])
def test_a_descriptor_over_the_byte_limit_is_refused(
    reg: FakeRegistry, tmp_path: Path, dest: Path, mode: str
) -> None:
    big = b"# padding\n" * 1000  # 10 kB
    reg.add(TOOL_ID, "big", Version({"main.cwl": big}))
    reg.zip = "zip" if mode == "zip" else "404"
    reg.wrapper = "content" if mode == "content" else "url"
    reg.stream_raw = mode == "url-streamed"
    settings = settings_for(tmp_path, configured(reg), trs={"fetch_max_bytes": 4000})
    msg = refused(BadRequest, trs_uri(reg, version="big"), settings, dest)
    if mode == "zip":  # refused on the sizes the zip declares, before extracting anything
        assert "unpacks to more than the limit of 4000 bytes (trs.fetch_max_bytes)" in msg
    else:
        assert msg == (
            f"tool {TOOL_ID!r} version 'big' of TRS registry 'fake' is larger than the limit of "
            "4000 bytes (trs.fetch_max_bytes)"
        )


def test_too_many_files_are_refused(reg: FakeRegistry, tmp_path: Path, dest: Path) -> None:
    many = {"main.cwl": MAIN, **{f"lib/{n}.cwl": TOOL for n in range(5)}}
    reg.add(TOOL_ID, "many", Version(many))
    settings = settings_for(tmp_path, configured(reg), trs={"fetch_max_files": 3})
    msg = refused(BadRequest, trs_uri(reg, version="many"), settings, dest)
    assert msg == (
        f"tool {TOOL_ID!r} version 'many' of TRS registry 'fake' has 6 files, more than the "
        "limit of 3 (trs.fetch_max_files)"
    )


@pytest.mark.parametrize("how", ["slow-answer", "slow-body"])
def test_a_registry_that_takes_too_long_is_cut_off_at_the_deadline(
    reg: FakeRegistry, tmp_path: Path, dest: Path, how: str
) -> None:
    if how == "slow-answer":
        reg.sleep = 3.0
    else:  # every byte arrives in time, the whole does not
        reg.zip, reg.wrapper, reg.drip = "404", "url", 0.05
    settings = settings_for(tmp_path, configured(reg), trs={"fetch_timeout_seconds": 1})
    started = time.monotonic()
    msg = refused(BadRequest, trs_uri(reg), settings, dest)
    assert time.monotonic() - started < 2.5
    assert msg == (
        f"fetching tool {TOOL_ID!r} version '1.0.0' of TRS registry 'fake' timed out after 1 s "
        "(trs.fetch_timeout_seconds)"
    )


# -- hosts, per-file fetching, tokens, redirects ------------------------------------------------
def test_a_private_host_is_refused_unless_it_is_a_configured_registry(
    reg: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    descriptor = f"{reg.url}/tools/{q(TOOL_ID)}/versions/{VERSION}/CWL/descriptor"
    unconfigured = settings_for(tmp_path)
    msg = refused(Forbidden, descriptor, unconfigured, dest)
    assert "resolves to the non-public address 127.0.0.1" in msg, msg
    refused(Forbidden, trs_uri(reg), unconfigured, dest)  # https://127.0.0.1:PORT/...
    assert reg.seen == []  # never asked

    # The same host, configured as a registry: trusted as configured.
    workflow = fetch_trs_workflow(descriptor, "CWL", dest, settings_for(tmp_path, configured(reg)))
    assert workflow.registry == "fake"
    assert workflow.approved
    assert written(dest) == FILES

    # Allowed by url_fetch_allow_private but not configured: fetched, named by host, unapproved.
    for path in list(dest.iterdir()):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    allowed = settings_for(tmp_path, url_fetch_allow_private=True)
    workflow = fetch_trs_workflow(descriptor, "CWL", dest, allowed)
    assert workflow.registry == f"127.0.0.1:{reg.port}"
    assert not workflow.approved
    assert written(dest) == FILES

    # An unapproved configured registry: fetched, not approved.
    again = tmp_path / "again"
    again.mkdir()
    unapproved = settings_for(tmp_path, configured(reg, approved=False))
    assert not fetch_trs_workflow(trs_uri(reg), "CWL", again, unapproved).approved


@pytest.mark.parametrize("zip_mode", ["404", "json"])
def test_without_a_zip_every_listed_file_is_fetched_on_its_own(
    reg: FakeRegistry, tmp_path: Path, dest: Path, zip_mode: str
) -> None:
    reg.zip = zip_mode
    settings = settings_for(tmp_path, configured(reg))
    workflow = fetch_trs_workflow(trs_uri(reg), "CWL", dest, settings)
    assert written(dest) == FILES
    assert workflow.approved
    fetched = [p for p in reg.paths() if "/CWL/descriptor/" in p]
    assert [p.split("/CWL/descriptor/")[1] for p in fetched] == list(FILES)


def test_a_filewrapper_url_is_fetched_under_the_host_policy(
    reg: FakeRegistry, other: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    reg.zip, reg.wrapper = "404", "url"
    settings = settings_for(tmp_path, configured(reg))
    workflow = fetch_trs_workflow(trs_uri(reg), "CWL", dest, settings)
    assert written(dest) == FILES
    assert workflow.approved
    assert sum(p.startswith("/raw/") for p in reg.paths()) == len(FILES)

    # A url on another (private, not configured) host is refused before it is asked.
    other.add(TOOL_ID, VERSION, Version(dict(FILES)))
    reg.raw_base = other.base
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = refused(Forbidden, trs_uri(reg), settings, empty)
    assert "non-public address" in msg
    assert other.seen == []


def test_the_token_goes_to_its_registry_only(
    reg: FakeRegistry,
    other: FakeRegistry,
    tmp_path: Path,
    dest: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-token-value"
    other.add(TOOL_ID, VERSION, Version(dict(FILES)))
    reg.zip, reg.wrapper, reg.raw_base = "404", "url", other.base  # FileWrapper urls point at B
    settings = settings_for(tmp_path, configured(reg, "a", token=secret), configured(other, "b"))
    fetch_trs_workflow(trs_uri(reg), "CWL", dest, settings)
    assert reg.seen
    assert all(auth == f"Bearer {secret}" for _, auth in reg.seen)
    assert other.seen
    assert all(auth is None for _, auth in other.seen)

    # Dockstore-style: A (with the token) lacks it, B has it.
    reg.seen.clear()
    other.seen.clear()
    other.add("#workflow/b-only", "1", Version(dict(FILES)))
    again = tmp_path / "again"
    again.mkdir()
    assert fetch_trs_workflow("#workflow/b-only:1", "CWL", again, settings).registry == "b"
    assert [auth for _, auth in reg.seen] == [f"Bearer {secret}"]
    assert other.seen
    assert all(auth is None for _, auth in other.seen)
    assert secret not in caplog.text


def test_redirects_are_followed_five_times_at_most(
    reg: FakeRegistry, tmp_path: Path, dest: Path
) -> None:
    reg.zip, reg.wrapper = "404", "url"
    settings = settings_for(tmp_path, configured(reg))
    reg.raw_base = f"{reg.base}/redirect/5"  # FileWrapper urls: 5 hops to /raw/...
    fetch_trs_workflow(trs_uri(reg), "CWL", dest, settings)
    assert written(dest) == FILES
    empty = tmp_path / "empty"
    empty.mkdir()
    reg.raw_base = f"{reg.base}/redirect/6"
    msg = refused(BadRequest, trs_uri(reg), settings, empty)
    assert msg == (
        f"fetching tool {TOOL_ID!r} version '1.0.0' of TRS registry 'fake': more than 5 redirects"
    )


def test_bad_trs_uris_are_400s(tmp_path: Path, dest: Path) -> None:
    settings = settings_for(tmp_path)
    for url in (
        "trs://dockstore.org/#workflow/github.com/acme/x/1.0",  # raw '#'
        "trs://dockstore.org/%23workflow%2Fx",  # no version
        "trs://dockstore.org/a/b/c",  # raw '/' in the id
        "trs:///x/1",
        "trs://dockstore.org:http/x/1",
    ):
        refused(BadRequest, url, settings, dest)


# -- wes-bridge trs -----------------------------------------------------------------------------
def write_config(tmp_path: Path, *registries: dict[str, Any]) -> Path:
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"trs": {"serve": False, "registries": list(registries)}}))
    return config


def test_cli_list_follows_pages_and_filters(reg: FakeRegistry, tmp_path: Path) -> None:
    for n in range(5):
        reg.add(f"#workflow/example.org/acme/tool{n}", "2.0", Version(dict(FILES)))
    reg.add(
        "#workflow/example.org/acme/snake",
        "1",
        Version({"Snakefile": b"rule all:\n"}, ["SMK"], "Snakefile"),
    )
    reg.page_size = 2
    config = write_config(tmp_path, configured(reg))
    runner = CliRunner()
    result = runner.invoke(main, ["trs", "list", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ORGANIZATION", "VERSIONS", "DESCRIPTOR", "TYPES"]
    assert len(lines) == 1 + 7
    assert any(line.split() == [TOOL_ID, "hello", "acme", "1.0.0", "CWL"] for line in lines), (
        result.output
    )
    assert sum("/tools" in p and "offset" in p for p in reg.paths()) == 3  # pages 2..4

    result = runner.invoke(
        main, ["trs", "list", "--config", str(config), "--descriptor-type", "smk", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [t["id"] for t in json.loads(result.output)] == ["#workflow/example.org/acme/snake"]

    result = runner.invoke(main, ["trs", "list", "--registry", reg.url, "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 1 + 3


def test_cli_show_lists_versions_and_files_with_checksums(
    reg: FakeRegistry, tmp_path: Path
) -> None:
    reg.add(TOOL_ID, "2.0.0", Version(dict(FILES), ["CWL", "SMK"]))
    config = write_config(tmp_path, configured(reg))
    runner = CliRunner()
    result = runner.invoke(main, ["trs", "show", TOOL_ID, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"tool          {TOOL_ID}" in result.output
    assert "version       2.0.0  CWL,SMK (is_production)" in result.output
    assert f"sha-256:{sha256(MAIN)}" in result.output

    result = runner.invoke(main, ["trs", "show", trs_uri(reg), "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["registry"] == {"name": "fake", "url": reg.url}
    assert [v["id"] for v in shown["tool"]["versions"]] == [VERSION]
    assert shown["files"][VERSION]["CWL"] == reg.tools[TOOL_ID][VERSION].listing()

    for args, message in (
        (["trs", "show", "#workflow/nope", "--registry", "fake"], "has no tool '#workflow/nope'"),
        (["trs", "show", TOOL_ID, "--registry", "elsewhere"], "no TRS registry is named"),
        (["trs", "show", trs_uri(reg, version="7")], "has no version '7'"),
    ):
        result = runner.invoke(main, [*args, "--config", str(config)])
        assert result.exit_code == 1, result.output
        assert message in result.output
        assert "Traceback" not in result.output


def test_cli_fetch_stages_like_a_run_and_prints_the_provenance(
    reg: FakeRegistry, tmp_path: Path
) -> None:
    config = write_config(tmp_path, configured(reg))
    runner = CliRunner()
    target = tmp_path / "fetched"
    args = ["trs", "fetch", trs_uri(reg), "--type", "cwl", "--dest", str(target)]
    result = runner.invoke(main, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"][0]["checksum"] == sha256(MAIN)
    assert written(target) == FILES

    result = runner.invoke(main, [*args, "--config", str(config)])
    assert result.exit_code == 1
    assert "is not empty" in result.output

    failed = tmp_path / "failed"
    bad = ["trs", "fetch", trs_uri(reg, version="9"), "--type", "CWL", "--dest", str(failed)]
    result = runner.invoke(main, [*bad, "--config", str(config)])
    assert result.exit_code == 1
    assert "has no tool" in result.output
    assert "Traceback" not in result.output
    assert not failed.exists()

    # Not configured: the node's host policy applies, as for a run.
    result = runner.invoke(main, [*bad, "--config", str(write_config(tmp_path))])
    assert result.exit_code == 1
    assert "non-public address" in result.output


def test_registry_for_and_parse_tool_reference(reg: FakeRegistry, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, port=8123, trs={"registries": [configured(reg)]})
    assert registry_for(None, settings).name == "self"
    assert registry_for("fake", settings).url == reg.url
    assert registry_for(reg.url + "/", settings).name == "fake"
    stranger = registry_for("https://trs.example.org/ga4gh/trs/v2", settings)
    assert (stranger.name, stranger.approved) == ("trs.example.org", False)
    with pytest.raises(BadRequest, match="no TRS registry is named 'nope'"):
        registry_for("nope", settings)
    registry, tool_id, version = parse_tool_reference(trs_uri(reg), settings)
    assert (registry.name, tool_id, version) == ("fake", TOOL_ID, VERSION)
    registry, tool_id, version = parse_tool_reference(
        f"trs://127.0.0.1:8123/{q(TOOL_ID)}", settings
    )
    assert (registry.name, tool_id, version) == ("self", TOOL_ID, None)
    registry, tool_id, version = parse_tool_reference(TOOL_ID, settings)
    assert (registry.name, tool_id, version) == ("self", TOOL_ID, None)
    with TrsClient(registry_for("fake", settings), settings) as client:
        assert client.tool(TOOL_ID)["id"] == TOOL_ID


# -- this node's own TRS server ------------------------------------------------------------------
def test_fetching_from_this_nodes_own_registry_over_http(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(data_dir=tmp_path / "data", port=port)
    hello = WORKFLOWS / "cwl" / "hello"
    expected = {
        p.name: p.read_bytes()
        for p in hello.iterdir()
        if p.is_file() and p.name not in ("trs.yaml", "expected.json")
    }
    with SpecCheckedClient(create_app(settings)):
        for n, url in enumerate(
            (
                f"trs://127.0.0.1:{port}/%23workflow%2Fwes-bridge%2Fcwl%2Fhello/1.0.0",
                "#workflow/wes-bridge/cwl/hello:1.0.0",
            )
        ):
            target = tmp_path / f"dest{n}"
            target.mkdir()
            workflow = fetch_trs_workflow(url, "CWL", target, settings)
            assert written(target) == expected
            assert workflow.registry == "self"
            assert workflow.primary_descriptor == "hello.cwl"
            assert workflow.approved
            assert {f.path: f.checksum for f in workflow.files} == {
                name: sha256(data) for name, data in expected.items()
            }
        empty = tmp_path / "empty"
        empty.mkdir()
        refused(
            BadRequest,
            f"trs://127.0.0.1:{port}/%23workflow%2Fwes-bridge%2Fcwl%2Fhello/1.0.0",
            settings,
            empty,
            "SMK",
        )
