"""Verifying JWTs with PyJWT: access tokens of the node's OIDC issuer, and GA4GH visas.

Keys come from a JWKS (URL or file), cached; a token naming a key id the cache does not hold
makes the source fetch (or read) the JWKS again once, and fail if the key is still unknown.
PyJWT does the cryptography and the claim checks; the JWKS is fetched here rather than with
PyJWT's ``PyJWKClient``, which binds an RSA key without ``alg`` to RS256 (refusing PS256
tokens) and, after one refresh, refuses every new key id for its cool-down. Only asymmetric
algorithms are ever accepted, the token's ``alg`` must be one the operator allows and must fit
the key, and symmetric (``oct``) keys in a JWKS are ignored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from .settings import ALLOWED_ALGORITHMS, JwksSource

__all__ = ["InvalidToken", "KeySource", "KeysUnavailable", "verify_jwt"]

log = logging.getLogger(__name__)


class InvalidToken(Exception):
    """A token that does not verify; the message says why, never what the token holds."""


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched now (not the client's fault)."""


def _usable(jwk: dict[str, Any]) -> bool:
    return jwk.get("kty") in ("RSA", "EC", "OKP") and jwk.get("use", "sig") == "sig"


class KeySource:
    """The public keys of one issuer, from its JWKS URL or file.

    The JWKS is kept ``cache_seconds``. A key id it does not hold makes it fetch (or read)
    the JWKS again, once per unknown key id (an id that stays unknown is not asked about again
    for a while) and at most once a second, so tokens with made-up key ids cannot make the node
    hammer the issuer.
    """

    MAX_JWKS_BYTES = 1 << 20

    def __init__(self, source: JwksSource, cache_seconds: float = 300.0) -> None:
        self.source = source
        self.cache_seconds = cache_seconds
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._refreshed_at = 0.0  # the last fetch caused by an unknown key id
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()

    def _read(self) -> list[dict[str, Any]]:
        where = self.source.jwks_url or str(self.source.jwks_file)
        try:
            if self.source.jwks_url is not None:
                response = httpx.get(self.source.jwks_url, timeout=10, follow_redirects=False)
                if response.status_code != 200:
                    raise KeysUnavailable(f"the JWKS at {where} answered {response.status_code}")
                raw = response.content[: self.MAX_JWKS_BYTES + 1]
            else:
                assert self.source.jwks_file is not None
                raw = Path(self.source.jwks_file).read_bytes()
            if len(raw) > self.MAX_JWKS_BYTES:
                raise KeysUnavailable(f"the JWKS at {where} is too large")
            data = json.loads(raw)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            raise KeysUnavailable(f"the JWKS at {where} cannot be read") from exc
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise KeysUnavailable(f"the JWKS at {where} holds no 'keys' list")
        return [k for k in keys if isinstance(k, dict)]

    def _jwks(self, kid: str | None) -> list[dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            fresh = self._keys is not None and now - self._fetched_at < self.cache_seconds
            keys = self._keys or []
            known = kid is None or any(k.get("kid") == kid for k in keys)
            if fresh and known:
                return keys
            if fresh and kid is not None:
                # An unknown key id: the issuer may have rotated its keys since.
                asked = self._unknown.get(kid)
                if (asked is not None and now - asked < self.cache_seconds) or (
                    now - self._refreshed_at < 1.0
                ):
                    return keys
                self._unknown[kid] = now
                self._refreshed_at = now
                if len(self._unknown) > 1000:
                    self._unknown.clear()
            self._keys = self._read()
            self._fetched_at = now
            return self._keys

    def key_for(self, kid: str | None, alg: str) -> PyJWK:
        """The key that must have signed a token with header ``kid`` and ``alg``."""
        candidates = [k for k in self._jwks(kid) if _usable(k)]
        if kid is not None:
            candidates = [k for k in candidates if k.get("kid") == kid]
        elif len(candidates) > 1:
            raise InvalidToken("the token names no key id (kid) and the issuer has several keys")
        if not candidates:
            raise InvalidToken("the token is signed with a key the issuer does not publish (kid)")
        jwk = candidates[0]
        if jwk.get("alg") not in (None, alg):
            raise InvalidToken(f"the token's algorithm {alg} does not fit its key")
        try:
            return PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise InvalidToken(f"the token's algorithm {alg} does not fit its key") from exc


def verify_jwt(
    token: str,
    keys: KeySource,
    *,
    algorithms: list[str],
    issuer: str | None,
    audience: list[str] | None,
    leeway: float,
    required: tuple[str, ...] = ("exp",),
) -> dict[str, Any]:
    """The claims of ``token`` once its signature, algorithm, issuer, audience and times check
    out; :class:`InvalidToken` saying which did not."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise InvalidToken("the token is not a well-formed JWT") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in ALLOWED_ALGORITHMS:
        raise InvalidToken(f"the token's algorithm {alg!r} is not accepted here")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("the token's key id (kid) is not a string")
    key = keys.key_for(kid, alg)
    options: dict[str, Any] = {"require": list(required), "verify_aud": bool(audience)}
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            issuer=issuer,
            audience=audience or None,
            leeway=leeway,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidToken("the token is not valid yet (nbf/iat)") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidToken("the token is not meant for this node (aud)") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidToken("the token comes from an issuer this node does not trust (iss)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("the token's signature does not verify") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise InvalidToken(f"the token's algorithm {alg!r} does not fit its key") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"the token is not valid ({type(exc).__name__})") from exc
    return claims
