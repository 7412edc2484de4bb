"""Authentication and access (issue 7): OIDC bearer tokens, GA4GH Passports, per-user isolation
of runs and tasks, the dataset access policy, basic auth, and the token never written in clear.

Tokens are real: signed with keys generated here, their JWKS served by a real HTTP server on
loopback, as an identity provider and a visa issuer would serve theirs.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from wes_bridge.app import create_app
from wes_bridge.cli import main
from wes_bridge.config import Settings, load_settings
from wes_bridge.store import RunStore

from .conftest import WES, SpecCheckedClient, free_port
from .live_server import Server
from .spec_check import check_trs

TES = "/ga4gh/tes/v1"
TRS = "/ga4gh/trs/v2"
ISSUER = "https://idp.example.org/"
AUDIENCE = "wes-bridge-test"
VISA_ISSUER = "https://visas.example.org/"
UNTRUSTED_ISSUER = "https://rogue.example.org/"
EGAD1 = "https://ega-archive.org/datasets/EGAD00000000001"
EGAD2 = "https://ega-archive.org/datasets/EGAD00000000002"

WC_CWL = b"""cwlVersion: v1.2
class: CommandLineTool
baseCommand: [wc, -c]
inputs:
  data: {type: File, inputBinding: {position: 1}}
stdout: count.txt
outputs:
  count: {type: stdout}
"""


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    jwk.update(kid=kid, use="sig")
    return jwk


class IdentityProvider:
    """Keys of the OIDC issuer, a trusted visa issuer and an untrusted one; their JWKS (and a
    userinfo endpoint) served over HTTP on loopback."""

    def __init__(self) -> None:
        self.rsa = _rsa()
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.visa_key = _rsa()
        self.rogue_key = _rsa()
        self.jwks = {"keys": [_jwk(self.rsa, "idp-rsa"), _jwk(self.ec, "idp-ec")]}
        self.visa_jwks = {"keys": [_jwk(self.visa_key, "visa-1")]}
        self.userinfo: dict[str, dict[str, Any] | str] = {}
        """Token -> its userinfo answer: claims (sent as JSON) or a signed JWT."""
        self.userinfo_accept: list[str] = []
        self.jwks_fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/jwks.json":
                    provider.jwks_fetches += 1
                    body: Any = provider.jwks
                elif self.path == "/visa-jwks.json":
                    body = provider.visa_jwks
                elif self.path == "/userinfo":
                    provider.userinfo_accept.append(self.headers.get("Accept", ""))
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token not in provider.userinfo:
                        self.send_response(401)
                        self.end_headers()
                        return
                    body = provider.userinfo[token]
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                signed = isinstance(body, str)
                data = body.encode() if signed else json.dumps(body).encode()
                self.send_response(200)
                self.send_header(
                    "Content-Type", "application/jwt" if signed else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(
        self,
        sub: str = "alice",
        *,
        key: Any = None,
        kid: str | None = "idp-rsa",
        alg: str = "RS256",
        lifetime: float = 3600,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + lifetime,
        }
        payload.update(claims)
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(payload, key or self.rsa, algorithm=alg, headers=headers)

    def visa(
        self,
        dataset: str,
        *,
        issuer: str = VISA_ISSUER,
        key: Any = None,
        lifetime: float = 3600,
        kind: str = "ControlledAccessGrants",
        sub: str = "alice",
        source: str = "https://ega-archive.org/dacs/EGAC00000000001",
        by: str | None = "dac",
        conditions: Any = None,
    ) -> str:
        """A visa of ``kind`` whose ``value`` is ``dataset`` (or another value for other kinds)."""
        now = int(time.time())
        body: dict[str, Any] = {
            "type": kind,
            "asserted": now - 86400,
            "value": dataset,
            "source": source,
        }
        if by is not None:
            body["by"] = by
        if conditions is not None:
            body["conditions"] = conditions
        payload = {
            "iss": issuer,
            "sub": sub,
            "iat": now,
            "exp": now + lifetime,
            "ga4gh_visa_v1": body,
        }
        return jwt.encode(
            payload, key or self.visa_key, algorithm="RS256", headers={"kid": "visa-1"}
        )

    def signed_userinfo(self, sub: str, *, key: Any = None, **claims: Any) -> str:
        """A userinfo answer as a JWT signed by the issuer (OIDC Core 5.3.2), with its iss and
        aud; ``claims`` add to them or replace them (None drops one)."""
        payload: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.rsa, algorithm="RS256", headers={"kid": "idp-rsa"})


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


def _auth(idp: IdentityProvider, datasets_root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "oidc",
        "oidc": {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": f"{idp.url}/jwks.json",
            "admin_claim": "roles",
            "admin_values": ["wes-admin"],
            "userinfo_url": f"{idp.url}/userinfo",
            **extra,
        },
        "passports": {"trusted_issuers": {VISA_ISSUER: {"jwks_url": f"{idp.url}/visa-jwks.json"}}},
        "datasets": {
            EGAD1: [str(datasets_root / "EGAD1")],
            EGAD2: [str(datasets_root / "EGAD2"), "s3://bucket/egad2/"],
        },
    }


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    for name in ("EGAD1", "EGAD2"):
        (root / name).mkdir(parents=True)
        (root / name / "reads.txt").write_text(f"reads of {name}\n")
    return root


@pytest.fixture
def oidc_settings(tmp_path: Path, idp: IdentityProvider, datasets: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        cancel_grace_seconds=2,
        auth=_auth(idp, datasets),
        tes={"input_roots": [str(datasets)]},
    )


@pytest.fixture
def node(oidc_settings: Settings) -> Iterator[SpecCheckedClient]:
    with SpecCheckedClient(create_app(oidc_settings)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _submit(
    client: SpecCheckedClient,
    token: str,
    params: dict[str, Any] | None = None,
    attachments: list[tuple[str, bytes]] | None = None,
    url: str = "hello.cwl",
) -> httpx.Response:
    if attachments is None:
        attachments = [
            (
                "hello.cwl",
                b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: "
                b"echo\ninputs: []\nstdout: out.txt\noutputs:\n  out: {type: stdout}\n",
            )
        ]
    data = {
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_url": url,
        "workflow_params": json.dumps(params or {}),
    }
    files = [("workflow_attachment", (name, content)) for name, content in attachments]
    return client.post(f"{WES}/runs", data=data, files=files, headers=bearer(token))


def _wait(client: SpecCheckedClient, run_id: str, token: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"{WES}/runs/{run_id}/status", headers=bearer(token)).json()["state"]
        if state in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}:
            return str(state)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end")


def _is_401(response: httpx.Response, scheme: str = "Bearer") -> str:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith(f'{scheme} realm="wes-bridge"')
    body = response.json()
    if "/ga4gh/trs/" in str(response.request.url):
        assert body["code"] == 401
        return str(body["message"])
    assert body["status_code"] == 401
    return str(body["msg"])


# -- authentication ---------------------------------------------------------------------------
def test_service_info_is_public_and_every_api_needs_a_token(
    node: SpecCheckedClient, idp: IdentityProvider
) -> None:
    info = node.get(f"{WES}/service-info")
    assert info.status_code == 200
    assert info.json()["tags"]["auth.mode"] == "oidc"
    assert info.json()["auth_instructions_url"]
    assert node.get(f"{TES}/service-info").status_code == 200
    assert check_trs(node.get(f"{TRS}/service-info"))
    for path in (f"{WES}/runs", f"{WES}/runs/x", f"{WES}/runs/x/status", f"{TES}/tasks"):
        assert "credentials" in _is_401(node.get(path))
    assert "credentials" in _is_401(node.post(f"{WES}/runs/x/cancel"))
    response = node.get(f"{TRS}/tools")
    assert check_trs(response)
    assert "credentials" in _is_401(response)
    # With a valid token all three answer.
    token = idp.token()
    assert node.get(f"{WES}/runs", headers=bearer(token)).status_code == 200
    assert node.get(f"{TES}/tasks", headers=bearer(token)).status_code == 200
    tools = node.get(f"{TRS}/tools", headers=bearer(token))
    assert tools.status_code == 200
    assert check_trs(tools)


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Token abc", "Basic YWxpY2U6c2VjcmV0", "Bearer a b", "bearer-abc"],
)
def test_malformed_authorization_header(node: SpecCheckedClient, header: str) -> None:
    message = _is_401(node.get(f"{WES}/runs", headers={"Authorization": header}))
    assert "malformed" in message or "credentials" in message


def _bad_tokens(idp: IdentityProvider) -> dict[str, tuple[str, str]]:
    good = idp.token()
    head, payload, signature = good.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    public_pem = idp.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = jwt.encode({**claims, "sub": "alice"}, None, algorithm="none")
    # HS256 "signed" with the issuer's public key, as in the key-confusion attack.
    hmac_segments = (
        base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "idp-rsa"}).encode())
        .decode()
        .rstrip("=")
        + "."
        + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    )
    import hashlib
    import hmac as hmac_module

    mac = hmac_module.new(public_pem, hmac_segments.encode(), hashlib.sha256).digest()
    hmac_token = hmac_segments + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    other_key = _rsa()
    return {
        "expired": (idp.token(lifetime=-120), "expired"),
        "wrong audience": (idp.token(aud="another-service"), "aud"),
        "wrong issuer": (idp.token(iss="https://other-idp.example.org/"), "iss"),
        "tampered signature": (f"{head}.{payload}.{flipped}", "signature"),
        "tampered claims": (f"{head}.{forged}.{signature}", "signature"),
        "alg none": (unsigned, "algorithm"),
        "hmac with the public key": (hmac_token, "algorithm"),
        "unknown kid": (idp.token(key=other_key, kid="not-published"), "key"),
        "signed by another key under a known kid": (idp.token(key=other_key), "signature"),
        "not a jwt": ("not-a-jwt", "well-formed"),
        "no sub": (idp.token(sub=""), "sub"),
        "not yet valid": (idp.token(nbf=int(time.time()) + 600), "not valid yet"),
    }


def test_bad_tokens_are_401_and_say_why(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    for name, (token, why) in _bad_tokens(idp).items():
        for path in (f"{WES}/runs", f"{TES}/tasks", f"{TRS}/tools"):
            response = node.get(path, headers=bearer(token))
            if path.startswith(TRS):
                check_trs(response)
            message = _is_401(response)
            assert why in message, (name, path, message)
            assert 'error="invalid_token"' in response.headers["www-authenticate"], name
            assert token not in response.text


def test_token_checks(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    # Expired, but within the 30 s leeway: accepted.
    assert node.get(f"{WES}/runs", headers=bearer(idp.token(lifetime=-10))).status_code == 200
    # An EC key and another allowed algorithm.
    ec_token = idp.token(key=idp.ec, kid="idp-ec", alg="ES256")
    assert node.get(f"{WES}/runs", headers=bearer(ec_token)).status_code == 200
    # RS384 is a fine algorithm, but not one this node allows (RS256, PS256, ES256).
    rs384 = idp.token(alg="RS384")
    assert "algorithm" in _is_401(node.get(f"{WES}/runs", headers=bearer(rs384)))
    # A key the issuer adds later (rotation) is fetched again once, then accepted.
    new_key = _rsa()
    fetches = idp.jwks_fetches
    idp.jwks["keys"].append(_jwk(new_key, "idp-rotated"))
    try:
        token = idp.token(key=new_key, kid="idp-rotated", alg="PS256")
        assert node.get(f"{WES}/runs", headers=bearer(token)).status_code == 200
        assert idp.jwks_fetches == fetches + 1
        # An unknown kid asked again does not make the node fetch the keys again.
        unknown = idp.token(key=new_key, kid="never-published")
        for _ in range(3):
            _is_401(node.get(f"{WES}/runs", headers=bearer(unknown)))
        assert idp.jwks_fetches <= fetches + 2
    finally:
        idp.jwks["keys"].pop()


def test_settings_refuse_symmetric_algorithms(tmp_path: Path, idp: IdentityProvider) -> None:
    for algorithms in (["HS256"], ["none"], ["RS256", "HS512"]):
        with pytest.raises(ValidationError, match="public keys"):
            load_settings(
                data_dir=tmp_path,
                auth={
                    "mode": "oidc",
                    "oidc": {**_auth(idp, tmp_path)["oidc"], "algorithms": algorithms},
                },
            )
    with pytest.raises(ValidationError, match="bcrypt hash"):
        load_settings(data_dir=tmp_path, auth={"mode": "basic", "basic": {"users": {"a": "pw"}}})
    with pytest.raises(ValidationError, match=r"auth\.oidc"):
        load_settings(data_dir=tmp_path, auth={"mode": "oidc"})


# -- isolation ----------------------------------------------------------------------------------
def test_runs_belong_to_their_user(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    alice, bob = idp.token("alice"), idp.token("bob")
    admin = idp.token("carol", roles=["wes-admin"])
    response = _submit(node, alice)
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    assert _wait(node, run_id, alice) == "COMPLETE"
    tasks = node.get(f"{WES}/runs/{run_id}/tasks", headers=bearer(alice)).json()["task_logs"]
    assert tasks
    task_id = tasks[0]["id"]
    for method, path in (
        ("GET", f"/runs/{run_id}"),
        ("GET", f"/runs/{run_id}/status"),
        ("POST", f"/runs/{run_id}/cancel"),
        ("GET", f"/runs/{run_id}/tasks"),
        ("GET", f"/runs/{run_id}/tasks/{task_id}"),
        ("GET", f"/runs/{run_id}/stdout"),
        ("GET", f"/runs/{run_id}/outputs/out.txt"),
    ):
        response = node.request(method, WES + path, headers=bearer(bob))
        assert response.status_code == 404, (path, response.text)
        assert alice not in response.text
        assert node.request(method, WES + path, headers=bearer(admin)).status_code in (200, 400)
    assert node.get(f"{WES}/runs/{run_id}", headers=bearer(alice)).status_code == 200
    assert node.get(f"{WES}/runs", headers=bearer(bob)).json()["runs"] == []
    listed = node.get(f"{WES}/runs", headers=bearer(alice)).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]
    assert run_id in [
        r["run_id"] for r in node.get(f"{WES}/runs", headers=bearer(admin)).json()["runs"]
    ]
    # The run's step ran on the embedded TES as alice's task: hers, not bob's.
    tes_id = tasks[0]["tes_uri"].rsplit("/", 1)[-1]
    assert node.get(f"{TES}/tasks/{tes_id}", headers=bearer(alice)).status_code == 200
    for view in ("MINIMAL", "BASIC", "FULL"):
        response = node.get(f"{TES}/tasks/{tes_id}?view={view}", headers=bearer(bob))
        assert response.status_code == 404
    assert node.get(f"{TES}/tasks", headers=bearer(bob)).json()["tasks"] == []
    assert [t["id"] for t in node.get(f"{TES}/tasks", headers=bearer(alice)).json()["tasks"]] == [
        tes_id
    ]
    # Run directories are the server user's alone.
    run_dir = node.app.state.node.settings.runs_dir / run_id
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(node.app.state.node.settings.runs_dir.stat().st_mode) == 0o700


def test_tes_tasks_belong_to_their_user(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    alice, bob = idp.token("alice"), idp.token("bob")
    admin = idp.token("carol", roles="wes-admin")
    task = {"executors": [{"image": "alpine", "command": ["sleep", "30"]}]}
    response = node.post(f"{TES}/tasks", json=task, headers=bearer(alice))
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    assert node.get(f"{TES}/tasks/{task_id}", headers=bearer(bob)).status_code == 404
    assert node.get(f"{TES}/tasks/{task_id}?view=FULL", headers=bearer(bob)).status_code == 404
    assert node.post(f"{TES}/tasks/{task_id}:cancel", headers=bearer(bob)).status_code == 404
    assert node.get(f"{TES}/tasks", headers=bearer(bob)).json()["tasks"] == []
    assert [t["id"] for t in node.get(f"{TES}/tasks", headers=bearer(admin)).json()["tasks"]] == [
        task_id
    ]
    assert node.post(f"{TES}/tasks/{task_id}:cancel", headers=bearer(alice)).status_code == 200


def test_run_credentials_are_scoped(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    from wes_bridge.auth import run_credential

    store = node.app.state.node.store
    alice = idp.token("alice")
    run_id = _submit(node, alice).json()["run_id"]
    assert _wait(node, run_id, alice) == "COMPLETE"
    credential = run_credential(store, run_id)
    # An ended run's credential is refused (within the few seconds it is cached), so is a
    # forged one, and neither works on WES or TRS.
    deadline = time.monotonic() + 15
    while node.get(f"{TES}/tasks", headers=bearer(credential)).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert "ended" in _is_401(node.get(f"{TES}/tasks", headers=bearer(credential)))
    forged = credential[:-4] + ("AAAA" if not credential.endswith("AAAA") else "BBBB")
    assert "not valid" in _is_401(node.get(f"{TES}/tasks", headers=bearer(forged)))
    _is_401(node.get(f"{WES}/runs", headers=bearer(credential)))
    _is_401(node.get(f"{TRS}/tools", headers=bearer(credential)))


# -- passports and the dataset policy ---------------------------------------------------------
def _wc_run(client: SpecCheckedClient, token: str, location: str) -> httpx.Response:
    return _submit(
        client,
        token,
        {"data": {"class": "File", "location": location}},
        [("wc.cwl", WC_CWL)],
        "wc.cwl",
    )


def test_a_run_needs_a_grant_for_each_dataset_it_names(
    node: SpecCheckedClient, idp: IdentityProvider, datasets: Path
) -> None:
    reads = datasets / "EGAD1" / "reads.txt"
    location = reads.as_uri()
    cases = {
        "no passport": idp.token(),
        "untrusted issuer": idp.token(
            ga4gh_passport_v1=[idp.visa(EGAD1, issuer=UNTRUSTED_ISSUER, key=idp.rogue_key)]
        ),
        "trusted issuer, signed by another key": idp.token(
            ga4gh_passport_v1=[idp.visa(EGAD1, key=idp.rogue_key)]
        ),
        "expired visa": idp.token(ga4gh_passport_v1=[idp.visa(EGAD1, lifetime=-3600)]),
        "grant for another dataset": idp.token(ga4gh_passport_v1=[idp.visa(EGAD2)]),
        "another kind of visa": idp.token(
            ga4gh_passport_v1=[idp.visa(EGAD1, kind="AffiliationAndRole")]
        ),
    }
    runs_dir = node.app.state.node.settings.runs_dir
    for name, token in cases.items():
        for spelling in (location, str(reads), f"{datasets}/EGAD2/../EGAD1/reads.txt"):
            response = _wc_run(node, token, spelling)
            assert response.status_code == 403, (name, response.text)
            message = response.json()["msg"]
            assert EGAD1 in message, message
            assert str(datasets) not in message, message
    # Refused before anything was written.
    assert [p for p in runs_dir.iterdir()] == []
    assert node.get(f"{WES}/runs", headers=bearer(idp.token())).json()["runs"] == []
    # With a valid grant the run reads the dataset, its step passing the TES's check too.
    granted = idp.token(ga4gh_passport_v1=[idp.visa(EGAD2), idp.visa(EGAD1)])
    response = _wc_run(node, granted, location)
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    assert _wait(node, run_id, granted) == "COMPLETE"
    log = node.get(f"{WES}/runs/{run_id}", headers=bearer(granted)).json()
    assert log["outputs"]["count"]["size"] > 0
    # The grant for EGAD1 does not cover EGAD2 named by its URL prefix, deep in the params.
    only_egad1 = idp.token(ga4gh_passport_v1=[idp.visa(EGAD1)])
    response = _submit(node, only_egad1, {"nested": [{"x": "s3://bucket/egad2/sample.cram"}]})
    assert response.status_code == 403
    assert EGAD2 in response.json()["msg"]
    # ... nor a workflow file that names its location.
    script = WC_CWL.replace(b"[wc, -c]", f"[cat, {datasets}/EGAD2/reads.txt]".encode())
    response = _submit(
        node,
        only_egad1,
        {"data": {"class": "File", "location": location}},
        [("wc.cwl", script)],
        "wc.cwl",
    )
    assert response.status_code == 403
    assert EGAD2 in response.json()["msg"]
    assert len(list(runs_dir.iterdir())) == 1


def test_passport_from_userinfo(
    node: SpecCheckedClient, idp: IdentityProvider, datasets: Path
) -> None:
    token = idp.token("dave")
    idp.userinfo[token] = {"sub": "dave", "ga4gh_passport_v1": [idp.visa(EGAD1)]}
    response = _wc_run(node, token, (datasets / "EGAD1" / "reads.txt").as_uri())
    assert response.status_code == 200, response.text
    assert _wait(node, response.json()["run_id"], token) == "COMPLETE"


def test_a_tes_task_needs_a_grant_too(
    node: SpecCheckedClient, idp: IdentityProvider, datasets: Path
) -> None:
    reads = datasets / "EGAD1" / "reads.txt"
    tasks = [
        {
            "inputs": [{"url": reads.as_uri(), "path": "/in/reads.txt"}],
            "executors": [{"image": "alpine", "command": ["cat", "/in/reads.txt"]}],
        },
        {"executors": [{"image": "alpine", "command": ["cat", str(reads)]}]},
        {
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "cat $F"], "env": {"F": str(reads)}}
            ]
        },
    ]
    for task in tasks:
        response = node.post(f"{TES}/tasks", json=task, headers=bearer(idp.token()))
        assert response.status_code == 403, response.text
        assert EGAD1 in response.json()["msg"]
        assert str(datasets) not in response.json()["msg"]
    assert node.get(f"{TES}/tasks", headers=bearer(idp.token())).json()["tasks"] == []
    granted = idp.token(ga4gh_passport_v1=[idp.visa(EGAD1)])
    response = node.post(f"{TES}/tasks", json=tasks[0], headers=bearer(granted))
    assert response.status_code == 200, response.text


# -- basic auth -------------------------------------------------------------------------------
def test_basic_auth(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["auth", "hash-password", "--password-stdin"], input="s3cret\n"
    )
    assert result.exit_code == 0, result.output
    hashed = result.output.strip()
    assert hashed.startswith("$2b$")
    assert "s3cret" not in hashed
    settings = load_settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        auth={"mode": "basic", "basic": {"users": {"ann": hashed}, "admins": []}},
    )
    with SpecCheckedClient(create_app(settings)) as client:
        good = "Basic " + base64.b64encode(b"ann:s3cret").decode()
        bad = "Basic " + base64.b64encode(b"ann:wrong").decode()
        nobody = "Basic " + base64.b64encode(b"bob:s3cret").decode()
        assert client.get(f"{WES}/runs", headers={"Authorization": good}).status_code == 200
        for header in (bad, nobody):
            message = _is_401(client.get(f"{WES}/runs", headers={"Authorization": header}), "Basic")
            assert "wrong user name or password" in message
        _is_401(client.get(f"{WES}/runs"), "Basic")
        _is_401(client.get(f"{WES}/runs", headers={"Authorization": "Basic !!"}), "Basic")


# -- serving ------------------------------------------------------------------------------------
def test_serve_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    from wes_bridge.cli import _check_bind

    for host in ("0.0.0.0", "::", "192.0.2.10"):
        result = CliRunner().invoke(
            main, ["serve", "--host", host, "--data-dir", str(tmp_path / "d")]
        )
        assert result.exit_code == 1
        assert "refusing to listen" in result.output
        assert "allow_insecure_bind" in result.output
    assert not (tmp_path / "d").exists()
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        _check_bind(load_settings(data_dir=tmp_path, host=host))
    _check_bind(
        load_settings(data_dir=tmp_path, host="0.0.0.0", auth={"allow_insecure_bind": True})
    )


# -- the database of an older version ---------------------------------------------------------
def test_an_older_database_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    store = RunStore(f"sqlite:///{path}")
    store.create_run("r1", "cwltool", {"workflow_url": "x"}, {}, str(tmp_path), {})
    store.close()
    with sqlite3.connect(path) as db:  # as the previous version made it
        db.execute("DROP INDEX ix_runs_subject_seq")
        for column in ("subject", "grants", "credential"):
            db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    store = RunStore(f"sqlite:///{path}")
    run = store.get_run("r1")
    assert run is not None
    assert run.subject is None
    store.create_run("r2", "cwltool", {}, {}, str(tmp_path), {}, subject="alice")
    assert [r.id for r in store.list_runs(10, subject="alice", everyone=False)] == ["r2"]
    store.close()


# -- the token is never written in clear ------------------------------------------------------
def test_the_token_is_written_nowhere(
    tmp_path: Path, idp: IdentityProvider, datasets: Path
) -> None:
    data_dir = tmp_path / "data"
    auth = _auth(idp, datasets)
    env = {
        "WES_BRIDGE_AUTH": json.dumps(auth),
        "WES_BRIDGE_TES__INPUT_ROOTS": json.dumps([str(datasets)]),
        "WES_BRIDGE_LOG_LEVEL": "debug",
    }
    server = Server(data_dir, free_port(), env)
    server.start()
    token = idp.token("erin", ga4gh_passport_v1=[idp.visa(EGAD1)])
    signature = token.rsplit(".", 1)[1]
    try:
        location = (datasets / "EGAD1" / "reads.txt").as_uri()
        response = server.request(
            "POST",
            "/runs",
            data={
                "workflow_type": "CWL",
                "workflow_type_version": "v1.2",
                "workflow_url": "wc.cwl",
                "workflow_params": json.dumps({"data": {"class": "File", "location": location}}),
            },
            files=[("workflow_attachment", ("wc.cwl", WC_CWL))],
            headers=bearer(token),
        )
        assert response.status_code == 200, response.text
        run_id = response.json()["run_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = server.get(f"/runs/{run_id}/status", headers=bearer(token)).json()["state"]
            if state not in ("QUEUED", "INITIALIZING", "RUNNING"):
                break
            time.sleep(0.2)
        assert state == "COMPLETE"
        tasks = server.get(f"/runs/{run_id}/tasks", headers=bearer(token)).json()["task_logs"]
        assert tasks
        # Refused requests with the token (bad dataset, bad run id) are logged too.
        server.get("/runs/not-a-run", headers=bearer(token))
    finally:
        server.stop()
    written = [p for p in [server.log, *data_dir.rglob("*")] if p.is_file()]
    assert any(p.name.endswith(".sqlite") for p in written)
    for path in written:
        content = path.read_bytes()
        assert token.encode() not in content, path
        assert signature.encode() not in content, path


# -- the user's token for an external TES -------------------------------------------------------
def test_forwarded_tokens_are_sealed_and_reach_only_the_driver(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from wes_bridge.auth.sealed import TokenBox
    from wes_bridge.supervisor import Supervisor

    settings = load_settings(
        data_dir=tmp_path / "data",
        tes={"url": "http://127.0.0.1:9/ga4gh/tes/v1", "forward_user_token": True},
    )
    settings.data_dir.mkdir(parents=True)
    box = TokenBox(settings.data_dir / "auth.key")
    sealed = box.seal("the-users-token")
    assert "the-users-token" not in sealed
    assert stat.S_IMODE((settings.data_dir / "auth.key").stat().st_mode) == 0o600
    store = RunStore(settings.effective_database_url)
    store.create_run("r1", "cwltool", {}, {}, str(tmp_path), {}, subject="u", credential=sealed)
    record = store.get_run("r1")
    assert record is not None
    assert "the-users-token" not in repr(record)
    supervisor = SimpleNamespace(settings=settings, store=store)
    assert Supervisor._tes_token(supervisor, record) == "the-users-token"  # type: ignore[arg-type]
    # Another node key cannot open it, and the run forgets it when it ends.
    assert TokenBox(tmp_path / "other.key").open(sealed) is None
    store.transition("r1", "CANCELED", {"QUEUED"})
    ended = store.get_run("r1")
    assert ended is not None
    assert ended.credential is None
    store.close()
    assert b"the-users-token" not in Path(settings.effective_database_url[10:]).read_bytes()
