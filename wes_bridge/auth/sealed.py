"""Users' tokens at rest: encrypted with a node key kept outside the database.

Only with ``tes.forward_user_token``: a queued run's driver starts later, perhaps in another
process or after a restart, and needs the token of the user who submitted it for the external
TES. The token is encrypted (Fernet: AES-128-CBC and HMAC-SHA256) with a key in
``<data_dir>/auth.key`` (created 0600), so a copy of the database alone does not reveal it,
and the run's row forgets it when the run ends. Replicas sharing a database need the same key
file.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["TokenBox"]


class TokenBox:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            if not self.key_file.exists():
                # Written whole under another name, then linked: no one reads half a key, and
                # of two processes creating it at once, one wins and both use its key.
                tmp = self.key_file.with_name(f".{self.key_file.name}.{os.getpid()}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key() + b"\n")
                try:
                    os.link(tmp, self.key_file)
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
            self._fernet = Fernet(self.key_file.read_bytes().strip())
        return self._fernet

    def seal(self, token: str) -> str:
        return self._key().encrypt(token.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str | None:
        """The token, or None if it cannot be decrypted (another key, tampered)."""
        try:
            return self._key().decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            return None
