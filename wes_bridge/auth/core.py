"""Who is asking: the :class:`Principal` of a request, from its ``Authorization`` header.

Kinds of principal:

- a **user**: an OIDC bearer token (JWT) of the configured issuer, or a basic-auth user; its
  dataset grants come from GA4GH Passport visas (or, in basic mode, from the settings);
- a **run**: the credential the node gives a run's engine driver for its embedded TES
  (``wbrun.<run id>.<HMAC>``). Tasks it creates belong to the run's user and are checked
  against the grants the user had when submitting the run; it sees only the run's tasks, and
  stops working when the run ends. Engines thus never hold the user's token, whose lifetime
  is usually shorter than a run's;
- the **node** itself, fetching from its own TRS registry while staging a run;
- **anonymous** with ``auth.mode: none``: sees everything, holds no dataset grants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import bcrypt
import httpx
from pydantic import SecretStr

from ..errors import Unauthorized, WesError
from ..store import TERMINAL_STATES, RunStore
from .passports import Passports
from .settings import AuthSettings, OidcSettings
from .tokens import InvalidToken, KeySource, KeysUnavailable, verify_jwt

__all__ = ["ANONYMOUS", "Authenticator", "Principal", "run_credential"]

log = logging.getLogger(__name__)

Api = Literal["wes", "tes", "trs"]
RUN_PREFIX = "wbrun."
NODE_PREFIX = "wbnode."
PASSPORT_CLAIM = "ga4gh_passport_v1"
_CACHE_SECONDS = 60.0
_CACHE_MAX = 10_000
_USERINFO_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Principal:
    kind: Literal["anonymous", "user", "run", "node"]
    subject: str | None
    admin: bool = False
    grants: Mapping[str, float | None] = field(default_factory=dict)
    """Dataset id -> when the grant expires (POSIX time; None: never)."""
    token: SecretStr | None = field(default=None, repr=False)
    """The user's bearer token as received (to forward to an external TES that needs it)."""
    run_id: str | None = None

    @property
    def sees_all(self) -> bool:
        return self.admin or self.kind in ("anonymous", "node")

    def owns(self, subject: str | None, tags: Mapping[str, Any] | None = None) -> bool:
        """Whether a run or task of ``subject`` (with ``tags``) is visible to this principal."""
        if self.kind == "run":
            from ..plugin import RUN_TAG

            return subject == self.subject and (tags or {}).get(RUN_TAG) == self.run_id
        return self.sees_all or (subject is not None and subject == self.subject)


ANONYMOUS = Principal(kind="anonymous", subject=None, admin=True)


def _sign(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def run_credential(store: RunStore, run_id: str) -> str:
    """The bearer token a run's driver uses on the node's embedded TES."""
    return f"{RUN_PREFIX}{run_id}.{_sign(store.secret('run_credentials'), 'run:' + run_id)}"


def node_credential(store: RunStore) -> str:
    """The bearer token the node uses on its own TRS registry."""
    return NODE_PREFIX + _sign(store.secret("run_credentials"), "node:trs")


class _Cache:
    """Principals of recently verified credentials, by a hash of the credential."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(credential: str) -> str:
        return hashlib.sha256(credential.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= time.time():
                del self._items[key]
                return None
            return item[1]

    def put(self, key: str, until: float, principal: Principal) -> None:
        with self._lock:
            if len(self._items) >= _CACHE_MAX:
                now = time.time()
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
                if len(self._items) >= _CACHE_MAX:
                    self._items.clear()
            self._items[key] = (until, principal)


class Authenticator:
    """Turns ``Authorization`` headers into principals, as ``auth`` settings say."""

    def __init__(self, settings: AuthSettings, store: RunStore) -> None:
        self.settings = settings
        self.store = store
        self._cache = _Cache()
        self._keys: KeySource | None = None
        if settings.mode == "oidc":
            assert settings.oidc is not None
            self._keys = KeySource(settings.oidc, settings.oidc.jwks_cache_seconds)
        self._passports = Passports(settings.passports)
        self._secret: bytes | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.mode != "none"

    def _run_secret(self) -> bytes:
        if self._secret is None:
            self._secret = self.store.secret("run_credentials")
        return self._secret

    def node_credential(self) -> str | None:
        return NODE_PREFIX + _sign(self._run_secret(), "node:trs") if self.enabled else None

    # -- the entry point ------------------------------------------------------------------
    def authenticate(self, authorization: str | None, api: Api) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        scheme = "Basic" if self.settings.mode == "basic" else "Bearer"
        if authorization is None or not authorization.strip():
            raise Unauthorized(
                f"this node needs credentials: an Authorization: {scheme} header", scheme, None
            )
        kind, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if not credential or " " in credential:
            raise Unauthorized(
                f"malformed Authorization header: expected '{scheme} <credentials>'",
                scheme,
                "invalid_request",
            )
        if kind.lower() == "bearer" and credential.startswith((RUN_PREFIX, NODE_PREFIX)):
            return self._internal(credential, api)
        if kind.lower() != scheme.lower():
            raise Unauthorized(
                f"malformed Authorization header: this node takes {scheme} credentials",
                scheme,
                "invalid_request",
            )
        key = self._cache.key(authorization.strip())
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if scheme == "Basic":
            principal, until = self._basic(credential)
        else:
            principal, until = self._bearer(credential)
        self._cache.put(key, until, principal)
        return principal

    # -- node-made credentials -----------------------------------------------------------
    def _internal(self, credential: str, api: Api) -> Principal:
        secret = self._run_secret()
        if credential.startswith(NODE_PREFIX):
            expected = NODE_PREFIX + _sign(secret, "node:trs")
            if api == "trs" and hmac.compare_digest(credential, expected):
                return Principal(kind="node", subject=None)
            raise Unauthorized("the token is not valid here")
        run_id, _, signature = credential[len(RUN_PREFIX) :].rpartition(".")
        if (
            api != "tes"
            or not run_id
            or not hmac.compare_digest(signature, _sign(secret, "run:" + run_id))
        ):
            raise Unauthorized("the token is not valid here")
        key = self._cache.key(credential)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        run = self.store.get_run(run_id)
        if run is None or run.state in TERMINAL_STATES:
            raise Unauthorized("the run this credential belongs to has ended")
        principal = Principal(
            kind="run",
            subject=run.subject,
            grants=dict(run.grants or {}),
            run_id=run_id,
        )
        self._cache.put(key, time.time() + 5, principal)  # a run's end takes effect soon
        return principal

    # -- basic ----------------------------------------------------------------------------
    def _basic(self, credential: str) -> tuple[Principal, float]:
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized(
                "malformed Authorization header: not base64 user:password", "Basic"
            ) from exc
        user, colon, password = decoded.partition(":")
        basic = self.settings.basic
        hashed = basic.users.get(user)
        # Compare against a hash even for unknown users, so timing does not tell them apart.
        reference = hashed or _dummy_hash()
        ok = bcrypt.checkpw(password.encode("utf-8"), reference.encode("ascii"))
        if not colon or hashed is None or not ok:
            raise Unauthorized("wrong user name or password", "Basic")
        principal = Principal(
            kind="user",
            subject=user,
            admin=user in basic.admins,
            grants=dict.fromkeys(basic.datasets.get(user, [])),
        )
        return principal, time.time() + _CACHE_SECONDS

    # -- OIDC and passports --------------------------------------------------------------
    def _bearer(self, token: str) -> tuple[Principal, float]:
        oidc = self.settings.oidc
        assert oidc is not None
        assert self._keys is not None
        try:
            claims = verify_jwt(
                token,
                self._keys,
                algorithms=oidc.algorithms,
                issuer=oidc.issuer,
                audience=oidc.audience,
                leeway=oidc.leeway_seconds,
                required=("exp", "iss", oidc.subject_claim),
            )
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from None
        except KeysUnavailable as exc:
            log.error("cannot verify a bearer token: %s", exc)
            raise WesError("the node cannot verify tokens right now (its issuer's keys)") from None
        subject = claims.get(oidc.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthorized(f"the token's {oidc.subject_claim!r} claim is not a string")
        admin = False
        if oidc.admin_claim:
            value = claims.get(oidc.admin_claim)
            values = value if isinstance(value, list) else [value]
            admin = any(isinstance(v, str) and v in oidc.admin_values for v in values)
        grants = self._grants(claims, token)
        expires = float(claims["exp"])
        principal = Principal(
            kind="user", subject=subject, admin=admin, grants=grants, token=SecretStr(token)
        )
        return principal, min(expires, time.time() + _CACHE_SECONDS)

    def _passport(self, claims: dict[str, Any], token: str) -> list[Any]:
        visas = claims.get(PASSPORT_CLAIM)
        oidc = self.settings.oidc
        assert oidc is not None
        if visas is None and oidc.userinfo_url and self._passports:
            userinfo = self._userinfo(oidc, oidc.userinfo_url, claims, token)
            visas = userinfo.get(PASSPORT_CLAIM) if userinfo is not None else None
        return visas if isinstance(visas, list) else []

    def _userinfo(
        self, oidc: OidcSettings, url: str, claims: dict[str, Any], token: str
    ) -> dict[str, Any] | None:
        """The issuer's userinfo claims for ``token``: a JSON object, or a JWT the issuer signed
        (OIDC Core 5.3.2); None, logged, when they cannot be used."""
        try:
            response = httpx.get(
                url,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json, application/jwt",
                },
                timeout=10,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            log.warning("userinfo endpoint cannot be read: %s", type(exc).__name__)
            return None
        if response.status_code != 200:
            log.warning("userinfo endpoint answered %s", response.status_code)
            return None
        if len(response.content) > _USERINFO_MAX_BYTES:
            log.warning("ignored a userinfo answer larger than %s bytes", _USERINFO_MAX_BYTES)
            return None
        media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        info: dict[str, Any] | None
        if media == "application/jwt":
            info = self._signed_userinfo(oidc, claims, response.content)
            if info is None:
                return None
        elif media == "application/json" or media.endswith("+json"):
            try:
                info = json.loads(response.content)
            except ValueError:
                info = None
            if not isinstance(info, dict):
                log.warning("ignored a userinfo answer that is not a JSON object")
                return None
        else:
            log.warning("ignored a userinfo answer of type %r", media or "(none)")
            return None
        # OIDC Core 5.3.2: the userinfo `sub` MUST exactly match the user's, or none of the
        # answer may be used (a token substitution would otherwise lend us another user's
        # claims). Here the access token stands for the ID token.
        subject = claims.get("sub")
        if not isinstance(subject, str) or info.get("sub") != subject:
            log.warning("ignored a userinfo answer whose sub is not the token's")
            return None
        return info

    def _signed_userinfo(
        self, oidc: OidcSettings, claims: dict[str, Any], body: bytes
    ) -> dict[str, Any] | None:
        """The claims of a signed userinfo answer, checked as OIDC Core 5.3.2 asks: signed by the
        issuer's keys with an allowed algorithm; its `iss` (which the spec says it SHOULD carry,
        and required here) the issuer; its `aud`, when present, naming this node (one of
        `oidc.audience`) or the client the user's token was issued to (its `azp` or
        `client_id`, the relying party the spec means); `exp`, `nbf` and `iat` checked when
        present."""
        assert self._keys is not None
        try:
            info = verify_jwt(
                body.decode("ascii").strip(),
                self._keys,
                algorithms=oidc.algorithms,
                issuer=oidc.issuer,
                audience=None,
                leeway=oidc.leeway_seconds,
                required=("iss", "sub"),
            )
        except UnicodeDecodeError:
            log.warning("ignored a signed userinfo answer that is not a JWT")
            return None
        except InvalidToken as exc:
            log.warning("ignored a signed userinfo answer: %s", exc)
            return None
        except KeysUnavailable as exc:
            log.error("cannot verify a signed userinfo answer: %s", exc)
            return None
        audience = info.get("aud")
        if audience is not None:
            named = audience if isinstance(audience, list) else [audience]
            clients = {claims.get("azp"), claims.get("client_id")} - {None}
            accepted = set(oidc.audience) | clients
            if accepted and not any(isinstance(a, str) and a in accepted for a in named):
                log.warning("ignored a signed userinfo answer meant for someone else (aud)")
                return None
        return info

    def _grants(self, claims: dict[str, Any], token: str) -> dict[str, float | None]:
        if not self._passports:
            return {}
        return self._passports.grants(self._passport(claims, token))


_dummy: list[str] = []


def _dummy_hash() -> str:
    if not _dummy:
        _dummy.append(bcrypt.hashpw(b"wes-bridge", bcrypt.gensalt()).decode("ascii"))
    return _dummy[0]
