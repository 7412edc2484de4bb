#!/usr/bin/env python3
"""WES client and local server launchers used by the wes-bridge benchmarks.

Three GA4GH WES servers can be started on a free loopback port, each in its
own temporary directory, and stopped again (SIGTERM, then SIGKILL of the whole
process tree):

* ``wes-bridge``  -- ``wes-bridge serve --host 127.0.0.1 --port P --data-dir D``
* ``wes-bridge-oidc`` -- the same with ``auth.mode: oidc`` (a JWKS file of a key made at
  start; every request carries a bearer token signed with it, so each one is verified, and
  each submission and change is written to the audit log)
* ``toil``        -- ``toil server --bypass_celery ... --opt=--no-container``
* ``wes-service`` -- ``wes-server --backend=wes_service.cwl_runner
  --opt runner=cwltool --opt extra=--no-container``

Executables are taken from flags / environment variables (``WES_BRIDGE_BIN``,
``TOIL_BIN``, ``WES_SERVER_BIN``, ``CWLTOOL_BIN``) or found on ``PATH``.  The
directory holding each server's executable is put first on the server's
``PATH`` so that helpers from the same virtualenv (``cwltool``,
``toil-cwl-runner``, ``_toil_worker``) are the ones that run.

All traffic goes to 127.0.0.1 only.  Run ``python wes_servers.py --help`` for
the smoke-test command line (start each server, run the echo tool once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
ECHO_TOOL = DATA_DIR / "echo.cwl"
ECHO_JOB = DATA_DIR / "echo-job.json"

LOOPBACK = "127.0.0.1"

# WES 1.1 run states.
TERMINAL_STATES = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
ACTIVE_STATES = frozenset({"UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING"})

SERVER_KINDS = ("wes-bridge", "wes-bridge-oidc", "toil", "wes-service")

# Environment variables naming the executables, and their PATH defaults.
BIN_ENV = {
    "wes-bridge": ("WES_BRIDGE_BIN", "wes-bridge"),
    "wes-bridge-oidc": ("WES_BRIDGE_BIN", "wes-bridge"),
    "toil": ("TOIL_BIN", "toil"),
    "wes-service": ("WES_SERVER_BIN", "wes-server"),
    "cwltool": ("CWLTOOL_BIN", "cwltool"),
}


# --------------------------------------------------------------------------
# Generic WES client
# --------------------------------------------------------------------------


class WesError(RuntimeError):
    """A WES request failed or a run did not finish as expected."""


@dataclass
class Workflow:
    """A workflow sent as an attachment with a relative ``workflow_url``."""

    path: Path
    params: dict[str, Any]
    type: str = "CWL"
    type_version: str = "v1.2"
    _bytes: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self._bytes = self.path.read_bytes()

    @classmethod
    def echo(cls, message: str = "hello from wes-bridge benchmarks") -> Workflow:
        return cls(ECHO_TOOL, {"message": message})

    @classmethod
    def echo_from_job(cls, job: Path = ECHO_JOB) -> Workflow:
        """The echo tool with the parameters of a CWL job file."""
        return cls(ECHO_TOOL, dict(json.loads(job.read_text())))

    def form(self) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
        """Multipart form fields and files for POST /runs."""
        data = {
            "workflow_url": self.path.name,
            "workflow_type": self.type,
            "workflow_type_version": self.type_version,
            "workflow_params": json.dumps(self.params),
        }
        files = [
            (
                "workflow_attachment",
                (self.path.name, self._bytes, "application/octet-stream"),
            )
        ]
        return data, files


@dataclass
class RunResult:
    run_id: str
    state: str
    submit_s: float  # POST /runs round trip
    total_s: float  # submit start -> terminal state observed
    polls: int


class RawSubmitter:
    """POST /runs with one pre-encoded request, over a new connection each time.

    The body, boundary and headers are what httpx builds for ``Workflow.form()``; they are
    encoded once, so a burst measures the server rather than the client's multipart encoder
    (httpx spends several milliseconds of CPU per request, and on a 2-core machine the load
    generator competes with the server it measures).  HTTP/1.1 with ``Connection: close``.
    """

    def __init__(self, url: str, wf: Workflow, headers: dict[str, str] | None = None) -> None:
        data, files = wf.form()
        request = httpx.Request("POST", url, data=data, files=files, headers=headers)
        body = request.read()
        parsed = httpx.URL(url)
        self.host = parsed.host
        self.port = parsed.port or 80
        head = [f"POST {parsed.raw_path.decode()} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in request.headers.items():
            if name.lower() not in ("host", "connection", "content-length"):
                head.append(f"{name}: {value}")
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        self.payload = "\r\n".join(head).encode() + body

    async def submit(self) -> str:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self.payload)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            length = None
            for line in lower.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            # Read exactly the body: a server may keep the socket open after answering.
            if length is not None:
                body = await reader.readexactly(length)
            elif b"transfer-encoding: chunked" in lower:
                body = b""
                while not body.endswith(b"0\r\n\r\n"):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    body += chunk
                body = _dechunk(body)
            else:
                body = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 else 0
        if status >= 400 or status == 0:
            raise WesError(f"POST /runs -> HTTP {status}: {body[:500]!r}")
        run_id = json.loads(body).get("run_id")
        if not run_id:
            raise WesError(f"POST /runs returned no run_id: {body[:500]!r}")
        return str(run_id)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


class WesClient:
    """Minimal asynchronous GA4GH WES 1.x client (httpx)."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        keepalive: bool = False,
        get_retries: int = 2,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``keepalive=False`` (default) opens a new connection per request.

        Toil's server (--bypass_celery) forks a process per run from the
        worker that serves HTTP; the fork inherits that worker's open client
        connections, so a kept-alive connection the server has closed stays
        half-open until the run ends and requests sent on it hang (read
        timeout) and then fail (ReadError).  Fresh connections avoid this.
        Idempotent GETs are retried ``get_retries`` times on transport errors;
        ``transport_errors`` counts the failures seen.
        """
        self.base_url = base_url.rstrip("/")
        self.get_retries = get_retries
        self.transport_errors = 0
        self.headers = dict(headers or {})
        self._client = httpx.AsyncClient(
            timeout=timeout,
            headers=self.headers,
            trust_env=False,  # never route loopback traffic through a proxy
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=32 if keepalive else 0
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> WesClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        attempts = 1 + (self.get_retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                r = await self._client.request(method, self.base_url + path, **kw)
                break
            except httpx.TransportError:
                self.transport_errors += 1
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(0.1)
        if r.status_code >= 400:
            raise WesError(f"{method} {path} -> HTTP {r.status_code}: {r.text[:500]}")
        return r.json()

    async def service_info(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/service-info"))

    async def submit(self, wf: Workflow) -> str:
        data, files = wf.form()
        body = await self._json("POST", "/runs", data=data, files=files)
        run_id = body.get("run_id") if isinstance(body, dict) else None
        if not run_id:
            raise WesError(f"POST /runs returned no run_id: {body!r}")
        return str(run_id)

    def raw_submitter(self, wf: Workflow) -> RawSubmitter:
        """A submitter that sends the same request bytes without httpx's per-request work."""
        return RawSubmitter(self.base_url + "/runs", wf, self.headers)

    async def status(self, run_id: str) -> str:
        body = await self._json("GET", f"/runs/{run_id}/status")
        return str(body.get("state", "UNKNOWN"))

    async def run_log(self, run_id: str) -> dict[str, Any]:
        return dict(await self._json("GET", f"/runs/{run_id}"))

    async def list_runs(self, page_size: int | None = None) -> dict[str, Any]:
        params = {"page_size": page_size} if page_size else None
        return dict(await self._json("GET", "/runs", params=params))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(await self._json("POST", f"/runs/{run_id}/cancel"))

    async def wait(self, run_id: str, poll_s: float, timeout_s: float) -> tuple[str, int]:
        """Poll status until a terminal state; returns (state, polls)."""
        deadline = time.monotonic() + timeout_s
        polls = 0
        while True:
            state = await self.status(run_id)
            polls += 1
            if state in TERMINAL_STATES:
                return state, polls
            if time.monotonic() > deadline:
                raise WesError(f"run {run_id} still {state} after {timeout_s:.0f}s ({polls} polls)")
            await asyncio.sleep(poll_s)

    async def run(self, wf: Workflow, poll_s: float = 0.025, timeout_s: float = 300.0) -> RunResult:
        """Submit and wait: the per-run latency measurement."""
        t0 = time.perf_counter()
        run_id = await self.submit(wf)
        t1 = time.perf_counter()
        state, polls = await self.wait(run_id, poll_s, timeout_s)
        t2 = time.perf_counter()
        return RunResult(run_id, state, t1 - t0, t2 - t0, polls)

    async def wait_ready(self, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
        """Wait until GET /service-info answers 200."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise WesError(f"server exited with code {proc.returncode} before ready")
            try:
                r = await self._client.get(self.base_url + "/service-info", timeout=5.0)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = type(e).__name__
            await asyncio.sleep(0.2)
        raise WesError(f"service-info not ready after {timeout_s:.0f}s ({last})")


# --------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def resolve_bin(kind: str, override: str | None = None) -> str | None:
    """Absolute path of an executable: flag, then env var, then PATH."""
    env_name, default = BIN_ENV[kind]
    cand = override or os.environ.get(env_name) or default
    if os.sep in cand:
        p = Path(cand).expanduser()
        return str(p.resolve()) if p.exists() else None
    return shutil.which(cand)


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the "(comm)" part; starttime is field 22 overall.
    rest = stat.rsplit(")", 1)[1].split()
    return rest[19] if len(rest) > 19 else None


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pids: Sequence[int]) -> dict[int, str | None]:
    """pid -> start time for every descendant of ``pids`` (not included)."""
    kids = _children_map()
    out: dict[int, str | None] = {}
    todo = list(pids)
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            if c not in out:
                out[c] = _proc_start_time(c)
                todo.append(c)
    return out


def _kill_known(procs: dict[int, str | None], sig: int) -> int:
    """Signal processes we recorded, skipping any whose pid was reused."""
    n = 0
    for pid, start in procs.items():
        if start is not None and _proc_start_time(pid) != start:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            n += 1
    return n


def command_version(cmd: Sequence[str], timeout: float = 60.0) -> str:
    """First non-empty line of ``cmd`` output (stdout or stderr)."""
    try:
        cp = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({type(e).__name__})"
    lines = [
        ln.strip()
        for ln in (cp.stdout + "\n" + cp.stderr).splitlines()
        if ln.strip() and "Warning" not in ln and "from starlette" not in ln
    ]
    if cp.returncode != 0 and not lines:
        return f"unavailable (exit {cp.returncode})"
    return lines[0] if lines else "unknown"


# --------------------------------------------------------------------------
# Server launchers
# --------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    pass


class WesServer:
    """Base launcher: subclass sets ``kind`` and builds the command."""

    kind = "abstract"
    ready_timeout_s = 90.0

    def __init__(self, exe: str, workdir: Path, port: int | None = None) -> None:
        self.exe = exe
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"
        self._log_fh: Any = None
        self._seen: dict[int, str | None] = {}

    # -- to override ----------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/ga4gh/wes/v1"

    def command(self) -> list[str]:
        raise NotImplementedError

    def extra_env(self) -> dict[str, str]:
        return {}

    @property
    def headers(self) -> dict[str, str]:
        """Headers every request to this server carries (credentials)."""
        return {}

    def version(self) -> str:
        return command_version([self.exe, "--version"])

    def engine_version(self) -> str:
        """Version of the cwltool that this server's runs use."""
        cwl = Path(self.exe).parent / "cwltool"
        if cwl.exists():
            return command_version([str(cwl), "--version"])
        found = shutil.which("cwltool")
        return command_version([found, "--version"]) if found else "unknown"

    # -- lifecycle ------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        bindir = str(Path(self.exe).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        env.pop("VIRTUAL_ENV", None)
        env.update(self.extra_env())
        return env

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole
        )
        try:
            async with WesClient(self.base_url, headers=self.headers) as c:
                await c.wait_ready(self.ready_timeout_s, self.proc)
        except WesError as e:
            self.stop()
            raise ServerStartError(f"{self.kind}: {e}\n{self.log_tail()}") from e

    def remember_children(self) -> None:
        """Record the current process tree so orphans can be killed later."""
        if self.proc is not None and self.proc.poll() is None:
            self._seen.update(descendants([self.proc.pid]))

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL everything that remains."""
        proc = self.proc
        if proc is None:
            return
        self.remember_children()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while proc.poll() is None and time.monotonic() < deadline:
                # Keep tracking children: some engines start workers in
                # sessions of their own, outside our process group.
                self.remember_children()
                time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for _ in range(5):  # bounded sweep of recorded descendants and theirs
            alive = {
                p: s
                for p, s in self._seen.items()
                if _proc_start_time(p) is not None and (s is None or _proc_start_time(p) == s)
            }
            if not alive:
                break
            alive.update(descendants(list(alive)))
            self._seen.update(alive)
            _kill_known(alive, signal.SIGKILL)
            time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        self.proc = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join("    | " + ln for ln in text[-lines:])


class WesBridgeServer(WesServer):
    kind = "wes-bridge"

    def __init__(
        self, exe: str, workdir: Path, port: int | None = None, max_concurrent_runs: int = 8
    ) -> None:
        super().__init__(exe, workdir, port)
        self.max_concurrent_runs = max_concurrent_runs

    def command(self) -> list[str]:
        return [
            self.exe,
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.workdir / "data"),
        ]

    def extra_env(self) -> dict[str, str]:
        return {"WES_BRIDGE_MAX_CONCURRENT_RUNS": str(self.max_concurrent_runs)}


class WesBridgeOidcServer(WesBridgeServer):
    """wes-bridge with ``auth.mode: oidc``: the JWKS is a file holding a key made here, and
    the token (RS256, one hour) is signed with it, as an identity provider would."""

    kind = "wes-bridge-oidc"
    issuer = "https://login.bench.invalid/"
    audience = "wes-bridge"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "bench", "use": "sig", "alg": "RS256"}]}
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": "bench", "iat": now}
        self.token = jwt.encode(
            {**claims, "exp": now + 3600}, key, algorithm="RS256", headers={"kid": "bench"}
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def extra_env(self) -> dict[str, str]:
        jwks_file = self.workdir / "jwks.json"
        jwks_file.parent.mkdir(parents=True, exist_ok=True)
        jwks_file.write_text(json.dumps(self.jwks))
        auth = {
            "mode": "oidc",
            "oidc": {
                "issuer": self.issuer,
                "audience": self.audience,
                "jwks_file": str(jwks_file),
            },
        }
        return {**super().extra_env(), "WES_BRIDGE_AUTH": json.dumps(auth)}


class ToilServer(WesServer):
    """Toil's WES server, running workflows in-process (no Celery/RabbitMQ).

    ``toil server`` runs ``toil-cwl-runner`` and ``_toil_worker`` from PATH,
    so the launcher puts Toil's venv ``bin`` first on PATH.  At start-up Toil
    probes the EC2 metadata address (169.254.169.254); to keep all traffic on
    loopback the server gets ``http_proxy`` pointing at a closed loopback port
    (the probe then fails at once) and ``TOIL_AWS_ZONE`` set.
    """

    kind = "toil"

    def __init__(self, exe: str, workdir: Path, port: int | None = None, workers: int = 2) -> None:
        super().__init__(exe, workdir, port)
        self.workers = workers

    def command(self) -> list[str]:
        return [
            self.exe,
            "server",
            "--bypass_celery",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--work_dir",
            str(self.workdir / "workflows"),
            "--opt=--no-container",
        ]

    def extra_env(self) -> dict[str, str]:
        dead_proxy = f"http://{LOOPBACK}:9"  # discard port: nothing listens
        return {
            "http_proxy": dead_proxy,
            "HTTP_PROXY": dead_proxy,
            "https_proxy": dead_proxy,
            "HTTPS_PROXY": dead_proxy,
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            "TOIL_AWS_ZONE": "us-east-1a",
        }


class WesServiceServer(WesServer):
    """GA4GH reference wes-service with its cwl_runner backend.

    ``wes-server`` has no --host flag (uvicorn binds 127.0.0.1 by default),
    keeps runs under ``$PWD/workflows`` and attachments in ``$TMPDIR``.
    """

    kind = "wes-service"

    def command(self) -> list[str]:
        runner = shutil.which("cwltool", path=self.env()["PATH"]) or "cwltool"
        return [
            self.exe,
            "--backend=wes_service.cwl_runner",
            "--port",
            str(self.port),
            "--opt",
            f"runner={runner}",
            "--opt",
            "extra=--no-container",
        ]

    def version(self) -> str:
        v = command_version([self.exe, "--version"])
        return f"wes-service {v}" if v[:1].isdigit() else v


def make_server(
    kind: str, exe: str, workdir: Path, *, bridge_concurrency: int = 8, toil_workers: int = 2
) -> WesServer:
    if kind == "wes-bridge":
        return WesBridgeServer(exe, workdir, max_concurrent_runs=bridge_concurrency)
    if kind == "wes-bridge-oidc":
        return WesBridgeOidcServer(exe, workdir, max_concurrent_runs=bridge_concurrency)
    if kind == "toil":
        return ToilServer(exe, workdir, workers=toil_workers)
    if kind == "wes-service":
        return WesServiceServer(exe, workdir)
    raise ValueError(f"unknown server kind {kind!r}")


@contextlib.asynccontextmanager
async def running_server(server: WesServer) -> AsyncIterator[WesServer]:
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def temp_root(keep: bool, prefix: str = "wes-bench-") -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        if keep:
            print(f"kept work directory: {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def add_bin_flags(p: argparse.ArgumentParser) -> None:
    """--wes-bridge/--toil/--wes-server/--cwltool executable flags."""
    g = p.add_argument_group("executables (flag, else env var, else PATH)")
    g.add_argument(
        "--wes-bridge",
        metavar="EXE",
        help="wes-bridge executable [env WES_BRIDGE_BIN, default: wes-bridge]",
    )
    g.add_argument(
        "--toil",
        metavar="EXE",
        help="toil executable of a toil[cwl,server] venv [env TOIL_BIN, default: toil]",
    )
    g.add_argument(
        "--wes-server",
        metavar="EXE",
        help="wes-server executable of a wes-service venv that also has cwltool "
        "[env WES_SERVER_BIN, default: wes-server]",
    )
    g.add_argument(
        "--cwltool",
        metavar="EXE",
        help="cwltool for the direct baseline [env CWLTOOL_BIN, default: cwltool]",
    )


def bin_overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        "wes-bridge": args.wes_bridge,
        "wes-bridge-oidc": args.wes_bridge,
        "toil": args.toil,
        "wes-service": args.wes_server,
        "cwltool": args.cwltool,
    }


def parse_servers(text: str) -> list[str]:
    kinds = [s.strip() for s in text.split(",") if s.strip()]
    bad = [k for k in kinds if k not in SERVER_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown server(s) {bad}; choose from {', '.join(SERVER_KINDS)}"
        )
    return kinds


# --------------------------------------------------------------------------
# Smoke test CLI
# --------------------------------------------------------------------------


async def smoke(args: argparse.Namespace) -> int:
    overrides = bin_overrides(args)
    failures = 0
    with temp_root(args.keep) as root:
        for kind in args.servers:
            exe = resolve_bin(kind, overrides[kind])
            if exe is None:
                print(f"{kind:12s} SKIP: executable not found")
                failures += 1
                continue
            server = make_server(kind, exe, root / kind, bridge_concurrency=args.bridge_concurrency)
            t0 = time.perf_counter()
            try:
                async with running_server(server):
                    started = time.perf_counter() - t0
                    async with WesClient(server.base_url, headers=server.headers) as c:
                        info = await c.service_info()
                        res = await c.run(Workflow.echo(), poll_s=0.05, timeout_s=args.timeout)
                        log = await c.run_log(res.run_id)
                    out = (log.get("outputs") or {}).get("out") or {}
                    ok = res.state == "COMPLETE" and out.get("size", 0) > 0
                    failures += 0 if ok else 1
                    print(
                        f"{kind:12s} {'OK  ' if ok else 'FAIL'} start {started:5.1f}s  "
                        f"run {res.total_s:6.2f}s state={res.state} "
                        f"outputs.out.size={out.get('size')} base={server.base_url}"
                    )
                    if args.verbose:
                        print(json.dumps({"service-info": info, "run": log}, indent=1)[:6000])
                    if not ok:
                        print(server.log_tail())
            except (ServerStartError, WesError, httpx.HTTPError) as e:
                failures += 1
                print(f"{kind:12s} FAIL: {e}")
                if not isinstance(e, ServerStartError):
                    print(server.log_tail())
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Start each WES server on a free 127.0.0.1 port in a temp dir, "
        "run the trivial echo CWL tool once through POST /runs "
        "(workflow_attachment + relative workflow_url), check it COMPLETEs, stop it.",
    )
    p.add_argument(
        "--servers",
        type=parse_servers,
        default=list(SERVER_KINDS),
        help=f"comma-separated subset of {','.join(SERVER_KINDS)} (default: all)",
    )
    p.add_argument(
        "--bridge-concurrency",
        type=int,
        default=8,
        help="WES_BRIDGE_MAX_CONCURRENT_RUNS for wes-bridge (default: 8)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the run to finish (default: 120)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp work directory")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="print service-info and the run log"
    )
    add_bin_flags(p)
    args = p.parse_args(argv)
    return asyncio.run(smoke(args))


if __name__ == "__main__":
    sys.exit(main())
