"""Signed, opaque page tokens for keyset pagination.

A token carries the position after which the next page starts and is bound to the listing it
came from (the filters), so a client cannot edit it or reuse it for another query; either gives
a 400, never a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from .errors import BadRequest

__all__ = ["PageTokens"]


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(self, position: int, scope: str) -> str:
        payload = json.dumps({"p": position, "s": scope}, separators=(",", ":")).encode()
        raw = payload + self._sign(payload)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, token: str, scope: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as exc:
            raise BadRequest("page_token is not a token this server issued") from exc
        payload, signature = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(signature, self._sign(payload)):
            raise BadRequest("page_token is not a token this server issued")
        data = json.loads(payload)
        if data.get("s") != scope:
            raise BadRequest("page_token belongs to another listing (different filters)")
        position = data.get("p")
        if not isinstance(position, int):
            raise BadRequest("page_token is not a token this server issued")
        return position
