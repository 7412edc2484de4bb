"""The node's one GA4GH TES 1.1 client, for the embedded TES and for Funnel, TESK and the like.

Two front ends share everything but the I/O: :class:`TesClient` (blocking, on ``httpx.Client``)
and :class:`AsyncTesClient` (coroutines, on ``httpx.AsyncClient``). Every operation is written
once, as a generator that yields what it needs done (send this request, sleep this long) and
receives the outcome; each front end only performs those steps. Request building, response
parsing, API discovery, the retry policy and the polling of :meth:`TesClient.wait` are therefore
the same for both.

Where the API lives
    ``base_url`` may name the API itself (``https://h/ga4gh/tes/v1``, or ``https://h/v1`` for
    older Funnel) or the server's root (``https://h``). Given a root, the client finds the API
    once, on first use, by ``GET {root}/ga4gh/tes/v1/service-info`` and then
    ``GET {root}/v1/service-info`` (the first answering 200 with a JSON object wins) and
    remembers it.

Retries
    Idempotent requests (every GET, and cancel: cancelling twice is harmless) are retried on
    connection errors, timeouts, dropped connections and HTTP 500, 502, 503 and 504, up to
    ``retries`` times after the first attempt. ``POST /tasks`` creates a task and is *not*
    idempotent: a retry after the server got the request could create a second task. It is
    retried only when the request cannot have created anything: it never left this machine
    (``httpx.ConnectError``, ``httpx.ConnectTimeout``, ``httpx.PoolTimeout``), or the answer was
    503 (service unavailable: nothing was taken in). A 500, 502 or 504 (a gateway's answer may
    come after the TES received the request), a read timeout or a connection lost after sending
    is reported at once, as the task may exist. 4xx answers are never retried.

    Waits grow exponentially with "full jitter": before retry *n* (from 0) the client sleeps a
    random time in ``[0, min(max_backoff, backoff * 2**n))``. A ``Retry-After`` header (seconds,
    or an HTTP date) on a retried answer is honoured instead, capped at ``max_backoff``.

Errors
    :class:`TesError` for an error answer (its ``status_code`` and the server's own message,
    read from ``{"msg"}`` of this node, ``{"message"}``/``{"error"}`` of grpc-gateway servers
    such as Funnel, or the body's text), :class:`TesUnavailable` (a subclass) when the TES could
    not be reached or only gateway errors (502, 503, 504) came back after the retries, and
    :class:`TesWaitTimeout` (a :class:`TimeoutError`) from ``wait``.

Credentials (a bearer token, or a user name and password for basic auth, or the ``user:pass@``
of ``base_url``) are sent on every request and never logged; ``repr()`` of a client does not
show them.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel, SecretStr

from .. import __version__

__all__ = [
    "DISCOVERY_PREFIXES",
    "TERMINAL_STATES",
    "AsyncTesClient",
    "TesClient",
    "TesError",
    "TesUnavailable",
    "TesWaitTimeout",
    "View",
    "retry_after_seconds",
    "server_message",
    "task_exit_code",
    "task_stderr_tail",
    "task_system_logs",
]

log = logging.getLogger(__name__)

View = Literal["MINIMAL", "BASIC", "FULL"]

#: States a task never leaves. CANCELING, PAUSED, QUEUED, INITIALIZING, RUNNING and UNKNOWN
#: (or a state this client does not know) are waited through.
TERMINAL_STATES: frozenset[str] = frozenset(
    {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
)

#: Where the API is looked for under a server root, in this order.
DISCOVERY_PREFIXES: tuple[str, ...] = ("/ga4gh/tes/v1", "/v1")

_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_GATEWAY_STATUSES = frozenset({502, 503, 504})
# A 503 means the request was not taken in; after a 502 or 504 the task may exist.
_CREATE_RETRY_STATUSES = frozenset({503})
# httpx errors (by class name, so that the httpx2 fork's are understood too) worth another
# try for an idempotent request, and those after which the request certainly was not sent.
_TRANSIENT_ERRORS = frozenset(
    {"TimeoutException", "NetworkError", "RemoteProtocolError", "ProxyError"}
)
_NOT_SENT_ERRORS = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})
_HTTPX = frozenset({"httpx", "httpx2"})
_MAX_MESSAGE = 2000
_USER_AGENT = f"wes-bridge-tes-client/{__version__}"

_T = TypeVar("_T")


# -- errors ---------------------------------------------------------------------------------
class TesError(Exception):
    """The TES answered with an error (or with something that is not TES).

    ``status_code`` is the HTTP status (None when there was no HTTP answer at all) and
    ``message`` the server's own explanation.
    """

    def __init__(self, status_code: int | None, message: str) -> None:
        super().__init__(status_code, message)
        self.status_code = status_code
        self.message = message

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"HTTP {self.status_code}: {self.message}"


class TesUnavailable(TesError):
    """The TES could not be reached, or only gateway errors (502/503/504) came back.

    Raised once the retries are spent, or at once when retrying could duplicate a task.
    """


class TesWaitTimeout(TimeoutError):
    """:meth:`TesClient.wait` gave up: the task had not ended within ``timeout`` seconds."""

    def __init__(self, task_id: str, state: str, timeout: float) -> None:
        super().__init__(task_id, state, timeout)
        self.task_id = task_id
        self.state = state
        self.timeout = timeout

    def __str__(self) -> str:
        return f"task {self.task_id} is still {self.state} after {self.timeout:g} s"


# -- the steps an operation asks its front end to perform -----------------------------------
@dataclass(frozen=True)
class _Send:
    """Send one HTTP request; the operation receives the response or the httpx error."""

    method: str
    url: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sleep:
    """Sleep; the operation receives None."""

    seconds: float


_Step: TypeAlias = _Send | _Sleep
_Outcome: TypeAlias = httpx.Response | Exception | None
_Op: TypeAlias = Generator[_Step, _Outcome, _T]


@dataclass(frozen=True)
class _Call:
    """One API request, relative to the API's base URL."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    creates: bool = False  # POST /tasks: retried only when it cannot have reached the server

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


_SERVICE_INFO = _Call("GET", "/service-info")


class _Secret:
    """A string that does not show itself in ``repr()`` (or ``vars()``)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "'**********'"


def _httpx_kinds(exc: BaseException) -> frozenset[str]:
    """The names of the httpx (or httpx2) exception classes ``exc`` is an instance of."""
    return frozenset(
        cls.__name__ for cls in type(exc).__mro__ if cls.__module__.split(".")[0] in _HTTPX
    )


def _is_request_error(exc: BaseException) -> bool:
    return "RequestError" in _httpx_kinds(exc)


def _plain(value: str | SecretStr | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _task_path(task_id: str, suffix: str = "") -> str:
    if not task_id:
        raise ValueError("a task id must not be empty")
    return f"/tasks/{quote(task_id, safe='')}{suffix}"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header value asks to wait (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def server_message(response: httpx.Response) -> str:
    """The explanation in an error answer: this node's ``msg``, grpc-gateway's ``message`` or
    ``error``, FastAPI's ``detail``, else the body's text, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("msg", "message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, dict):  # {"error": {"code": ..., "message": ...}}
                value = value.get("message") or value.get("msg")
            if isinstance(value, str) and value.strip():
                return value.strip()[:_MAX_MESSAGE]
            if value:
                return str(value)[:_MAX_MESSAGE]
    text = response.text.strip()
    return text[:_MAX_MESSAGE] or response.reason_phrase or f"HTTP {response.status_code}"


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TesError(
            response.status_code,
            f"the answer to {what} is not a JSON object: {response.text!r:.200}",
        )
    return body


def _is_json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _next_token(page: Mapping[str, Any], previous: str | None) -> str | None:
    """The token of the page after ``page``, or None at the end (also on a token loop)."""
    token = page.get("next_page_token")
    if not token:
        return None
    token = str(token)
    if token == previous:
        log.warning("the TES returned page token %r twice; stopping there", token)
        return None
    return token


def _list_params(
    view: str,
    name_prefix: str | None,
    state: str | None,
    tags: Mapping[str, str] | None,
    page_size: int | None,
    page_token: str | None,
) -> tuple[tuple[str, str], ...]:
    params: list[tuple[str, str]] = [("view", view)]
    if name_prefix is not None:
        params.append(("name_prefix", name_prefix))
    if state is not None:
        params.append(("state", state))
    # TES 1.1: tag_key and tag_value are zipped; a key without value matches any value, and
    # every key gets a tag_value (empty for "any") so that the pairs stay aligned.
    for key, value in (tags or {}).items():
        params.append(("tag_key", key))
        params.append(("tag_value", value or ""))
    if page_size is not None:
        params.append(("page_size", str(page_size)))
    if page_token:
        params.append(("page_token", page_token))
    return tuple(params)


# -- the shared core ------------------------------------------------------------------------
class _Core:
    """Everything of a client but the I/O: settings, discovery, requests, retries, parsing."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | SecretStr | None,
        username: str | None,
        password: str | SecretStr | None,
        timeout: float | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        clock: Callable[[], float] | None,
        rand: Callable[[], float] | None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if backoff < 0 or max_backoff < 0:
            raise ValueError("backoff and max_backoff must be 0 or more")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no timeout)")
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        if url.query or url.fragment:
            raise ValueError("base_url must not have a query or a fragment")
        password_text = _plain(password)
        token_text = _plain(token)
        if url.userinfo:
            if token_text is not None or username is not None or password_text is not None:
                raise ValueError("give credentials either in base_url or as arguments, not both")
            username, password_text = url.username, url.password
            url = url.copy_with(userinfo=b"")
        if token_text is not None and (username is not None or password_text is not None):
            raise ValueError("give either a bearer token or a username and password, not both")
        if password_text is not None and username is None:
            raise ValueError("a password needs a username")
        self.auth_kind: str | None = None
        self._authorization: _Secret | None = None
        if token_text is not None:
            self.auth_kind = "bearer"
            self._authorization = _Secret(f"Bearer {token_text}")
        elif username is not None:
            self.auth_kind = "basic"
            pair = f"{username}:{password_text or ''}".encode()
            self._authorization = _Secret("Basic " + base64.b64encode(pair).decode("ascii"))
        self.base_url = str(url).rstrip("/")
        self.api_url: str | None = (
            self.base_url if url.path.rstrip("/").endswith(DISCOVERY_PREFIXES) else None
        )
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.clock = clock or time.monotonic
        self.rand = rand or random.random

    def describe(self, cls: str) -> str:
        return f"{cls}({self.api_url or self.base_url!r}, auth={self.auth_kind!r})"

    # -- retry policy -----------------------------------------------------------------------
    def retry_delay(self, call: _Call, outcome: httpx.Response | Exception, n: int) -> float | None:
        """How long to wait before retry ``n`` (from 0) of ``call``, or None: do not retry."""
        if n >= self.retries:
            return None
        if not isinstance(outcome, BaseException):
            statuses = _CREATE_RETRY_STATUSES if call.creates else _RETRY_STATUSES
            if outcome.status_code not in statuses:
                return None
            asked = retry_after_seconds(outcome.headers.get("Retry-After"))
            if asked is not None:
                return min(asked, self.max_backoff)
        elif not _httpx_kinds(outcome) & (_NOT_SENT_ERRORS if call.creates else _TRANSIENT_ERRORS):
            return None
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(n, 64))
        return self.rand() * ceiling

    # -- one request, retried ---------------------------------------------------------------
    def exchange(self, call: _Call, api_url: str) -> _Op[httpx.Response]:
        """Send ``call`` under ``api_url`` until the policy says stop; the last response."""
        headers = {"Accept": "application/json"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization.value
        kwargs: dict[str, Any] = {"headers": headers, "timeout": self.timeout}
        url = api_url + call.path
        if call.params:
            # Encoded here, in order: httpx would group repeated keys (all tag_key, then all
            # tag_value), which is the same filter but not the pairs the spec shows.
            url += "?" + urlencode(call.params, quote_via=quote)
        if call.json is not None:
            kwargs["json"] = call.json
        n = 0
        while True:
            outcome = yield _Send(call.method, url, kwargs)
            assert outcome is not None
            delay = self.retry_delay(call, outcome, n)
            if delay is None:
                break
            n += 1
            why = (
                type(outcome).__name__
                if isinstance(outcome, BaseException)
                else f"HTTP {outcome.status_code}"
            )
            log.info(
                "TES %s: %s; retry %d of %d in %.2f s", call.label, why, n, self.retries, delay
            )
            yield _Sleep(delay)
        if not isinstance(outcome, BaseException):
            return outcome
        attempts = f"{n + 1} attempt{'s' if n else ''}"
        if call.creates and not _httpx_kinds(outcome) & _NOT_SENT_ERRORS:
            raise TesUnavailable(
                None,
                f"{call.label} to {api_url} failed after the request was sent "
                f"({type(outcome).__name__}: {outcome}); not retried, as the task may have "
                "been created",
            ) from outcome
        raise TesUnavailable(
            None,
            f"could not reach the TES at {api_url} ({call.label}, {attempts}): "
            f"{type(outcome).__name__}: {outcome}",
        ) from outcome

    @staticmethod
    def error(response: httpx.Response) -> TesError:
        status = response.status_code
        kind = TesUnavailable if status in _GATEWAY_STATUSES else TesError
        return kind(status, server_message(response))

    def discover(self) -> _Op[str]:
        """The API's base URL: as given, or found under the root once and remembered."""
        if self.api_url is not None:
            return self.api_url
        tried: list[str] = []
        status: int | None = None
        for prefix in DISCOVERY_PREFIXES:
            candidate = self.base_url + prefix
            response = yield from self.exchange(_SERVICE_INFO, candidate)
            status = response.status_code
            if status == 200 and _is_json_object(response):
                log.debug("TES API found at %s", candidate)
                self.api_url = candidate
                return candidate
            if status in (401, 403) or status in _GATEWAY_STATUSES:
                raise self.error(response)
            tried.append(f"GET {prefix}/service-info gave HTTP {status}")
        raise TesError(status, f"found no GA4GH TES API under {self.base_url}: " + "; ".join(tried))

    def call(self, call: _Call) -> _Op[httpx.Response]:
        """``call`` with discovery and retries; its successful (2xx) response, or TesError."""
        api_url = yield from self.discover()
        response = yield from self.exchange(call, api_url)
        if not response.is_success:
            raise self.error(response)
        return response

    # -- the operations ---------------------------------------------------------------------
    def service_info(self) -> _Op[dict[str, Any]]:
        response = yield from self.call(_SERVICE_INFO)
        return _json_object(response, "GET /service-info")

    def create_task(self, task: Mapping[str, Any] | BaseModel) -> _Op[str]:
        if isinstance(task, BaseModel):
            body: Any = task.model_dump(mode="json", exclude_none=True)
        else:
            body = dict(task)
        response = yield from self.call(_Call("POST", "/tasks", json=body, creates=True))
        task_id = _json_object(response, "POST /tasks").get("id")
        if not isinstance(task_id, str) or not task_id:
            raise TesError(response.status_code, "the TES created a task but sent no task id")
        return task_id

    def get_task(self, task_id: str, view: View) -> _Op[dict[str, Any]]:
        call = _Call("GET", _task_path(task_id), params=(("view", view),))
        response = yield from self.call(call)
        return _json_object(response, call.label)

    def list_tasks(
        self,
        view: View,
        name_prefix: str | None,
        state: str | None,
        tags: Mapping[str, str] | None,
        page_size: int | None,
        page_token: str | None,
    ) -> _Op[dict[str, Any]]:
        params = _list_params(view, name_prefix, state, tags, page_size, page_token)
        response = yield from self.call(_Call("GET", "/tasks", params=params))
        page = _json_object(response, "GET /tasks")
        tasks = page.get("tasks")
        if tasks is None:  # proto3 JSON (Funnel) leaves out an empty list
            tasks = []
        if not isinstance(tasks, list):
            raise TesError(response.status_code, "GET /tasks: 'tasks' is not a list")
        page["tasks"] = tasks
        return page

    def cancel_task(self, task_id: str) -> _Op[None]:
        yield from self.call(_Call("POST", _task_path(task_id, ":cancel")))

    def wait(
        self, task_id: str, timeout: float | None, poll: float, view: View
    ) -> _Op[dict[str, Any]]:
        if poll < 0:
            raise ValueError("poll must be 0 or more seconds")
        deadline = None if timeout is None else self.clock() + timeout
        while True:
            task = yield from self.get_task(task_id, "MINIMAL")
            state = str(task.get("state") or "UNKNOWN")
            if state in TERMINAL_STATES:
                if view == "MINIMAL":
                    return task
                return (yield from self.get_task(task_id, view))
            pause = poll
            if deadline is not None and timeout is not None:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise TesWaitTimeout(task_id, state, timeout)
                pause = min(poll, remaining)
            yield _Sleep(pause)


# -- the blocking client --------------------------------------------------------------------
class TesClient:
    """A blocking GA4GH TES 1.1 client (see the module's documentation for the policies).

    ``POST /tasks`` is not idempotent, so :meth:`create_task` is retried only when the request
    cannot have reached the TES (a connection that was never made, or a 503); every other call
    is retried on connection errors, timeouts and 500/502/503/504.

    Args:
        base_url: the TES API (``.../ga4gh/tes/v1`` or ``.../v1``) or its server's root.
        token: a bearer token; or ``username`` and ``password`` for basic auth.
        timeout: seconds for each HTTP request (also on a given ``client``); None for none.
        retries: retries after the first attempt of a request.
        backoff: the first retry's wait ceiling, doubled at each retry ("full jitter").
        max_backoff: the largest wait, also for a ``Retry-After`` header.
        client: an ``httpx.Client`` to use (and not close); default: one of the client's own.
            A client of the httpx2 fork (starlette's ``TestClient`` is one) works as well.
        sleep: the sleeping function (default ``time.sleep``), for tests.
        clock: the monotonic clock (default ``time.monotonic``), for tests.
        rand: a random number in [0, 1) (default ``random.random``), for tests.

    A client can be shared between threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | SecretStr | None = None,
        username: str | None = None,
        password: str | SecretStr | None = None,
        timeout: float | None = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._core = _Core(
            base_url,
            token=token,
            username=username,
            password=password,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            clock=clock,
            rand=rand,
        )
        self._owns_http = client is None
        self._http = (
            client
            if client is not None
            else httpx.Client(timeout=timeout, headers={"User-Agent": _USER_AGENT})
        )
        self._sleep = sleep or time.sleep

    def __repr__(self) -> str:
        return self._core.describe(type(self).__name__)

    @property
    def base_url(self) -> str:
        """``base_url`` as given, without credentials or a trailing slash."""
        return self._core.base_url

    @property
    def api_url(self) -> str | None:
        """The API's base URL (``.../ga4gh/tes/v1``); None until discovered from a root."""
        return self._core.api_url

    def _run(self, op: _Op[_T]) -> _T:
        outcome: _Outcome = None
        try:
            while True:
                try:
                    step = op.send(outcome)
                except StopIteration as done:
                    result: _T = done.value
                    return result
                outcome = self._perform(step)
        finally:
            op.close()

    def _perform(self, step: _Step) -> _Outcome:
        if isinstance(step, _Sleep):
            self._sleep(step.seconds)
            return None
        request = self._http.build_request(step.method, step.url, **step.kwargs)
        try:
            return self._http.send(request)
        except Exception as exc:
            if not _is_request_error(exc):
                raise
            return exc

    def service_info(self) -> dict[str, Any]:
        """``GET /service-info``."""
        return self._run(self._core.service_info())

    def create_task(self, task: Mapping[str, Any] | BaseModel) -> str:
        """``POST /tasks``: submit a tesTask (a dict or a pydantic model); its id.

        Not idempotent, so retried only when the request cannot have reached the TES (see the
        class documentation); on any other failure the task may or may not exist.
        """
        return self._run(self._core.create_task(task))

    def get_task(self, task_id: str, view: View = "MINIMAL") -> dict[str, Any]:
        """``GET /tasks/{id}`` in the given view."""
        return self._run(self._core.get_task(task_id, view))

    def list_tasks(
        self,
        *,
        view: View = "MINIMAL",
        name_prefix: str | None = None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET /tasks``: one page, ``{"tasks": [...], "next_page_token": ...}``.

        ``tags`` filter as TES 1.1 says: a task matches if it has every key, with the same value
        (an empty value matches any value). ``tasks`` is always present, possibly empty.
        """
        return self._run(
            self._core.list_tasks(view, name_prefix, state, tags, page_size, page_token)
        )

    def iter_tasks(
        self,
        *,
        view: View = "MINIMAL",
        name_prefix: str | None = None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every task :meth:`list_tasks` would list, following ``next_page_token``."""
        token: str | None = None
        while True:
            page = self.list_tasks(
                view=view,
                name_prefix=name_prefix,
                state=state,
                tags=tags,
                page_size=page_size,
                page_token=token,
            )
            yield from page["tasks"]
            token = _next_token(page, token)
            if token is None:
                return

    def cancel_task(self, task_id: str) -> None:
        """``POST /tasks/{id}:cancel``. A task that has already ended is the server's call
        (this node answers 400)."""
        self._run(self._core.cancel_task(task_id))

    def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        view: View = "MINIMAL",
    ) -> dict[str, Any]:
        """The task in ``view`` once it is in a state of :data:`TERMINAL_STATES`.

        Polls the MINIMAL view every ``poll`` seconds (CANCELING, PAUSED and UNKNOWN are waited
        through) and raises :class:`TesWaitTimeout` after ``timeout`` seconds (None: no limit).
        Errors of the polls (after their retries) are raised as they come.
        """
        return self._run(self._core.wait(task_id, timeout, poll, view))

    def close(self) -> None:
        """Close the HTTP client, unless it was given to this one."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- reading a task document ----------------------------------------------------------------
def _last_attempt(task: Mapping[str, Any]) -> Mapping[str, Any]:
    logs = task.get("logs") or []
    last = logs[-1] if logs else {}
    return last if isinstance(last, Mapping) else {}


def task_exit_code(task: Mapping[str, Any]) -> int | None:
    """The exit code of the last executor that has one, in the task's last attempt."""
    for executor_log in reversed(_last_attempt(task).get("logs") or []):
        code = executor_log.get("exit_code") if isinstance(executor_log, Mapping) else None
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def task_stderr_tail(task: Mapping[str, Any], limit: int = 2000) -> str:
    """The end of the last executor's stderr the TES kept (FULL view), or ''."""
    for executor_log in reversed(_last_attempt(task).get("logs") or []):
        text = executor_log.get("stderr") if isinstance(executor_log, Mapping) else None
        if text:
            return str(text)[-limit:]
    return ""


def task_system_logs(task: Mapping[str, Any]) -> list[str]:
    """The TES's own notes about the task's last attempt (why it could not run, etc.)."""
    return [str(line) for line in _last_attempt(task).get("system_logs") or []]


# -- the asynchronous client ----------------------------------------------------------------
class AsyncTesClient:
    """:class:`TesClient` with coroutines, on ``httpx.AsyncClient``; the same policies.

    ``client`` is an ``httpx.AsyncClient`` (or an httpx2 one), ``sleep`` a coroutine function
    (default ``asyncio.sleep``); :meth:`iter_tasks` is an asynchronous iterator.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | SecretStr | None = None,
        username: str | None = None,
        password: str | SecretStr | None = None,
        timeout: float | None = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._core = _Core(
            base_url,
            token=token,
            username=username,
            password=password,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            clock=clock,
            rand=rand,
        )
        self._owns_http = client is None
        self._http = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=timeout, headers={"User-Agent": _USER_AGENT})
        )
        self._sleep = sleep or asyncio.sleep

    def __repr__(self) -> str:
        return self._core.describe(type(self).__name__)

    @property
    def base_url(self) -> str:
        """``base_url`` as given, without credentials or a trailing slash."""
        return self._core.base_url

    @property
    def api_url(self) -> str | None:
        """The API's base URL (``.../ga4gh/tes/v1``); None until discovered from a root."""
        return self._core.api_url

    async def _run(self, op: _Op[_T]) -> _T:
        outcome: _Outcome = None
        try:
            while True:
                try:
                    step = op.send(outcome)
                except StopIteration as done:
                    result: _T = done.value
                    return result
                outcome = await self._perform(step)
        finally:
            op.close()

    async def _perform(self, step: _Step) -> _Outcome:
        if isinstance(step, _Sleep):
            await self._sleep(step.seconds)
            return None
        request = self._http.build_request(step.method, step.url, **step.kwargs)
        try:
            return await self._http.send(request)
        except Exception as exc:
            if not _is_request_error(exc):
                raise
            return exc

    async def service_info(self) -> dict[str, Any]:
        """``GET /service-info``."""
        return await self._run(self._core.service_info())

    async def create_task(self, task: Mapping[str, Any] | BaseModel) -> str:
        """``POST /tasks``; retried only when the request cannot have reached the TES."""
        return await self._run(self._core.create_task(task))

    async def get_task(self, task_id: str, view: View = "MINIMAL") -> dict[str, Any]:
        """``GET /tasks/{id}`` in the given view."""
        return await self._run(self._core.get_task(task_id, view))

    async def list_tasks(
        self,
        *,
        view: View = "MINIMAL",
        name_prefix: str | None = None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET /tasks``: one page (see :meth:`TesClient.list_tasks`)."""
        return await self._run(
            self._core.list_tasks(view, name_prefix, state, tags, page_size, page_token)
        )

    async def iter_tasks(
        self,
        *,
        view: View = "MINIMAL",
        name_prefix: str | None = None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every task :meth:`list_tasks` would list, following ``next_page_token``."""
        token: str | None = None
        while True:
            page = await self.list_tasks(
                view=view,
                name_prefix=name_prefix,
                state=state,
                tags=tags,
                page_size=page_size,
                page_token=token,
            )
            for task in page["tasks"]:
                yield task
            token = _next_token(page, token)
            if token is None:
                return

    async def cancel_task(self, task_id: str) -> None:
        """``POST /tasks/{id}:cancel``."""
        await self._run(self._core.cancel_task(task_id))

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        view: View = "MINIMAL",
    ) -> dict[str, Any]:
        """The task once it has ended (see :meth:`TesClient.wait`)."""
        return await self._run(self._core.wait(task_id, timeout, poll, view))

    async def close(self) -> None:
        """Close the HTTP client, unless it was given to this one."""
        if self._owns_http:
            await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
