"""Domain errors and the HTTP status each one maps to.

::

    WesError                 (500)  base; carries the message shown to the client
    ├── BadRequest           (400)  malformed input: bad JSON, bad names, bad tokens
    │   └── UploadTooLarge   (400)  the request body passed ``max_upload_bytes``
    ├── Unauthorized         (401)  no credentials, or credentials that do not verify
    ├── Forbidden            (403)  refused by policy, e.g. a workflow_url host
    ├── NotFound             (404)  unknown run or task
    └── InvalidTransition    (400)  e.g. cancelling a run that has already ended

The API layer turns every one of them into the spec's ``ErrorResponse {msg, status_code}``;
anything else becomes a 500 whose message never includes the exception text.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Forbidden",
    "InvalidTransition",
    "NotFound",
    "Unauthorized",
    "UploadTooLarge",
    "WesError",
]


class WesError(Exception):
    """Base of the errors a client is told about."""

    status_code = 500

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class BadRequest(WesError):
    status_code = 400


class UploadTooLarge(BadRequest):
    pass


class Unauthorized(WesError):
    """No credentials, or ones that do not verify; ``headers`` holds the ``WWW-Authenticate``
    challenge."""

    status_code = 401

    def __init__(
        self, msg: str, scheme: str = "Bearer", error: str | None = "invalid_token"
    ) -> None:
        super().__init__(msg)
        challenge = f'{scheme} realm="wes-bridge"'
        if scheme == "Bearer" and error is not None:
            description = msg.replace('"', "'").replace("\\", "/")
            challenge += f', error="{error}", error_description="{description}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(WesError):
    status_code = 403


class NotFound(WesError):
    status_code = 404


class InvalidTransition(WesError):
    # The spec declares no 409 for WES; 400 is its code for a request that cannot be honoured.
    status_code = 400
