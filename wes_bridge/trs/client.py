"""Fetching a run's workflow from a GA4GH TRS 2.0.1 registry, checked, into a run directory.

``workflow_url`` forms that name a TRS workflow (:func:`is_trs_url`):

``trs://<host[:port]>/<id>/<version_id>``
    A GA4GH TRS URI; the id is percent-encoded (``#`` is ``%23``, ``/`` is ``%2F``). The
    registry is the known one (:func:`known_registries`) whose URL has that host[:port], with
    its scheme and path prefix; otherwise ``https://<host[:port]>/ga4gh/trs/v2``.
``#workflow/<path>:<version>`` (or ``#tool/<path>:<version>``)
    A Dockstore-style id: the id is everything before the last ``:``. The known registries are
    asked in order; the first that has that id and version wins.
``http(s)://.../ga4gh/trs/v2/tools/<id>/versions/<version>/<type>/descriptor``
    A descriptor URL (``<type>`` may be a ``PLAIN_`` one): registry, id, version and
    descriptor type are read from it.

Fetching asks for the tool version (its ``descriptor_type`` must offer the workflow type), the
``/files`` listing (paths, file types, checksums and the ``PRIMARY_DESCRIPTOR``), then the whole
workflow as ``/files?format=zip`` when the registry offers it, else every listed file from
``/descriptor/<relative_path>`` (a FileWrapper's ``content``, or its ``url`` fetched under the
node's host policy).

Checks: every file is verified against every checksum the registry gave for it (sha-256,
sha-512, sha-1 and md5 in any of their spellings; other types count as none); all the bytes
fetched for one workflow, and all the bytes written, stay under ``trs.fetch_max_bytes``; the
listing under ``trs.fetch_max_files``; the whole fetch under ``trs.fetch_timeout_seconds``.
Known registries (this node's own included) are trusted as configured; any other host, every
redirect to one (at most 5 hops) and every FileWrapper ``url`` pass
:func:`wes_bridge.staging.check_url_host`. Zip entries must be exactly the listed files: no
``..``, absolute paths, backslashes, NUL, links or other special files, duplicates, file/folder
clashes, and no more bytes than the limit, declared or actual. Files are written with
``O_EXCL|O_NOFOLLOW``. A refused workflow leaves nothing in ``dest``. A registry's token is sent
only to URLs under that registry's own base URL, and never logged.

The same requests serve ``wes-bridge trs list|show`` through :class:`TrsClient`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx
from pydantic import SecretStr

from .. import __version__
from ..config import Settings, TrsRegistry, TrsSettings
from ..errors import BadRequest
from ..staging import check_url_host, normalise_attachment_name
from ..tes.client import server_message

__all__ = [
    "TRS_DESCRIPTOR_TYPES",
    "TrsClient",
    "TrsFile",
    "TrsWorkflow",
    "fetch_trs_workflow",
    "is_trs_url",
    "known_registries",
    "parse_tool_reference",
    "registry_for",
]

log = logging.getLogger(__name__)

#: The TRS descriptor type of each WES workflow type a registry can hold.
TRS_DESCRIPTOR_TYPES: dict[str, str] = {"CWL": "CWL", "SMK": "SMK", "NFL": "NFL", "WDL": "WDL"}

TRS_PREFIX = "/ga4gh/trs/v2"
_DOCKSTORE_PREFIXES = ("#workflow/", "#tool/")
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names, not binds)

# The credential the node uses on its own registry ('self') when auth is on; set around the
# staging of one run (see :func:`self_registry_token`).
_self_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "wes_bridge_trs_self_token", default=None
)


@contextlib.contextmanager
def self_registry_token(token: str | None) -> Iterator[None]:
    """Within this block, requests to this node's own registry carry ``token``."""
    reset = _self_token.set(token)
    try:
        yield
    finally:
        _self_token.reset(reset)


_MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_USER_AGENT = f"wes-bridge-trs-client/{__version__}"
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_FILE_TYPES = frozenset(
    {"TEST_FILE", "PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR", "CONTAINERFILE", "OTHER"}
)
# Checksum type spellings (GA4GH hash names and the common others) -> hashlib name.
_HASHES: dict[str, str] = {
    "sha-256": "sha256",
    "sha256": "sha256",
    "sha-512": "sha512",
    "sha512": "sha512",
    "sha-1": "sha1",
    "sha1": "sha1",
    "md5": "md5",
}
# hashlib name -> the GA4GH hash name recorded in the provenance.
_HASH_NAMES: dict[str, str] = {
    "sha256": "sha-256",
    "sha512": "sha-512",
    "sha1": "sha-1",
    "md5": "md5",
}


# -- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrsFile:
    """One file of a fetched workflow, as written under ``dest``."""

    path: str  # relative POSIX path under dest
    file_type: str  # PRIMARY_DESCRIPTOR, SECONDARY_DESCRIPTOR, TEST_FILE, CONTAINERFILE, OTHER
    checksum_type: str | None  # GA4GH hash name of the verified checksum (sha-256, ...), or None
    checksum: str | None  # its lower-case hex value; None: the registry gave none we know
    size: int


@dataclass(frozen=True)
class TrsWorkflow:
    """Where a run's workflow came from, and what was written."""

    registry: str  # configured registry name ("self" for this node), else the host[:port]
    registry_url: str  # the registry's TRS base URL, .../ga4gh/trs/v2
    tool_id: str
    version_id: str
    descriptor_type: str
    primary_descriptor: str  # relative POSIX path under dest
    files: tuple[TrsFile, ...]
    approved: bool  # approved registry, and every file had a checksum that verified

    @property
    def trs_uri(self) -> str:
        """``trs://<host[:port]>/<id>/<version>`` of this workflow."""
        netloc = urlsplit(self.registry_url).netloc
        return f"trs://{netloc}/{_q(self.tool_id)}/{_q(self.version_id)}"

    def as_record(self) -> dict[str, Any]:
        """JSON-able provenance for the run log."""
        return {
            "registry": self.registry,
            "registry_url": self.registry_url,
            "trs_uri": self.trs_uri,
            "tool_id": self.tool_id,
            "version_id": self.version_id,
            "descriptor_type": self.descriptor_type,
            "primary_descriptor": self.primary_descriptor,
            "approved": self.approved,
            "files": [
                {
                    "path": f.path,
                    "file_type": f.file_type,
                    "checksum_type": f.checksum_type,
                    "checksum": f.checksum,
                    "size": f.size,
                }
                for f in self.files
            ],
        }


# -- registries -----------------------------------------------------------------------------
def known_registries(settings: Settings) -> list[TrsRegistry]:
    """The registries a run may name: this node's own as ``self`` (first, when it serves one),
    then ``trs.registries`` in their order."""
    known: list[TrsRegistry] = []
    if settings.trs.serve:
        if settings.public_url:
            base = settings.public_url.rstrip("/")
        else:
            host = settings.host.strip()
            if host in _WILDCARD_HOSTS:
                host = "127.0.0.1"
            elif ":" in host and not host.startswith("["):
                host = f"[{host}]"
            base = f"http://{host}:{settings.port}"
        token = _self_token.get()
        known.append(
            TrsRegistry(
                name="self",
                url=base + TRS_PREFIX,
                token=SecretStr(token) if token else None,
                approved=True,
            )
        )
    known.extend(settings.trs.registries)
    return known


@dataclass(frozen=True)
class _Registry:
    name: str
    url: str  # the TRS base URL, no trailing slash
    approved: bool
    token: str | None = field(default=None, repr=False)

    @classmethod
    def configured(cls, registry: TrsRegistry) -> _Registry:
        token = registry.token.get_secret_value() if registry.token is not None else None
        return cls(registry.name, registry.url.rstrip("/"), registry.approved, token)

    def authorization(self, url: str) -> str | None:
        """The Authorization header for ``url``: only under this registry's own base URL."""
        if self.token is None:
            return None
        base, target = urlsplit(self.url), urlsplit(url)
        if _origin(self.url) != _origin(url):
            return None
        prefix = base.path.rstrip("/")
        if target.path != prefix and not target.path.startswith(prefix + "/"):
            return None
        return f"Bearer {self.token}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _default_port(scheme)


def _same_base(a: str, b: str) -> bool:
    return _origin(a) == _origin(b) and (
        urlsplit(a).path.rstrip("/") == urlsplit(b).path.rstrip("/")
    )


def _q(segment: str) -> str:
    """A path segment, percent-encoded whole (``/``, ``#``, ``:`` and spaces included)."""
    return quote(segment, safe="")


def _trs_type(workflow_type: str) -> str:
    trs_type = TRS_DESCRIPTOR_TYPES.get(workflow_type.strip().upper())
    if trs_type is None:
        known = ", ".join(sorted(TRS_DESCRIPTOR_TYPES))
        raise BadRequest(
            f"workflow_type {workflow_type!r} cannot come from a TRS registry (known: {known})"
        )
    return trs_type


# -- workflow_url forms ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Reference:
    tool_id: str
    version_id: str
    registries: tuple[_Registry, ...]  # asked in order; the first that has it wins
    descriptor_type: str | None = None  # from a descriptor URL


_DESCRIPTOR_PATH = re.compile(
    r"^(?P<base>(?:/[^/]*)*?/ga4gh/trs/v2)/tools/(?P<id>.+)/versions/(?P<version>[^/]+)"
    r"/(?P<type>[^/]+)/descriptor/?$"
)


def _descriptor_url_parts(url: str) -> tuple[str, str, str, str] | None:
    """(registry base URL, id, version, descriptor type) of a TRS descriptor URL, or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # not a URL at all; staging says so
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    match = _DESCRIPTOR_PATH.match(parts.path)
    if match is None:
        return None
    tool_id, version = unquote(match["id"]), unquote(match["version"])
    descriptor_type = unquote(match["type"]).upper().removeprefix("PLAIN_")
    if not tool_id or not version or not descriptor_type:
        return None
    return (
        f"{parts.scheme.lower()}://{parts.netloc}{match['base']}",
        tool_id,
        version,
        descriptor_type,
    )


def is_trs_url(workflow_url: str) -> bool:
    """Whether ``workflow_url`` names a workflow in a TRS registry (any of the three forms)."""
    url = workflow_url.strip()
    if url[:6].lower() == "trs://" or url.startswith(_DOCKSTORE_PREFIXES):
        return True
    return _descriptor_url_parts(url) is not None


_TRS_URI_USAGE = (
    "a trs:// URI is trs://<host[:port]>/<id>/<version_id> with the id percent-encoded "
    "('#' as %23, '/' as %2F)"
)


def _split_trs_uri(url: str, *, need_version: bool) -> tuple[str, str, int | None, str, str | None]:
    """(host[:port], host, port, id, version) of a ``trs://`` URI."""
    rest = url.strip()[6:]
    if "#" in rest or "?" in rest:
        raise BadRequest(f"workflow_url {url!r}: {_TRS_URI_USAGE}")
    netloc, _, path = rest.partition("/")
    segments = path.split("/")
    if len(segments) > 1 and segments[-1] == "":
        segments = segments[:-1]
    if len(segments) not in ((2,) if need_version else (1, 2)) or not all(segments):
        raise BadRequest(f"workflow_url {url!r}: {_TRS_URI_USAGE}")
    try:
        host_parts = urlsplit("//" + netloc)
        port = host_parts.port
    except ValueError as exc:  # a bad port, or a bracketed host that is not IPv6
        raise BadRequest(f"workflow_url {url!r} has an invalid host or port: {exc}") from exc
    if not host_parts.hostname or "@" in netloc:
        raise BadRequest(f"workflow_url {url!r} names no host ({_TRS_URI_USAGE})")
    version = unquote(segments[1]) if len(segments) == 2 else None
    return netloc.lower(), host_parts.hostname.lower(), port, unquote(segments[0]), version


def _registry_at(netloc: str, host: str, port: int | None, known: Sequence[_Registry]) -> _Registry:
    """The known registry at host[:port] of a trs:// URI, else https://host[:port]/ga4gh/trs/v2
    (not approved, not trusted)."""
    for registry in known:
        origin = _origin(registry.url)
        if origin is None or origin[1] != host:
            continue
        explicit = urlsplit(registry.url).port
        if port is None and explicit in (None, _default_port(origin[0])):
            return registry
        if port is not None and port == origin[2]:
            return registry
    return _Registry(netloc, f"https://{netloc}{TRS_PREFIX}", approved=False)


def _parse(workflow_url: str, settings: Settings) -> _Reference:
    url = workflow_url.strip()
    known = [_Registry.configured(r) for r in known_registries(settings)]
    if url[:6].lower() == "trs://":
        netloc, host, port, tool_id, version = _split_trs_uri(url, need_version=True)
        assert version is not None
        return _Reference(tool_id, version, (_registry_at(netloc, host, port, known),))
    if url.startswith(_DOCKSTORE_PREFIXES):
        tool_id, colon, version = url.rpartition(":")
        if not colon or not version or tool_id in _DOCKSTORE_PREFIXES:
            raise BadRequest(
                f"workflow_url {url!r}: a TRS id needs its version, as in "
                "#workflow/<path>:<version>"
            )
        if not known:
            raise BadRequest(
                f"workflow_url {url!r} is a TRS id, but this node knows no TRS registry "
                "(trs.registries)"
            )
        return _Reference(tool_id, version, tuple(known))
    parts = _descriptor_url_parts(url)
    if parts is None:
        raise BadRequest(
            f"workflow_url {url!r} is not a TRS reference (trs://<host>/<id>/<version>, "
            "#workflow/<path>:<version>, or a .../ga4gh/trs/v2/tools/<id>/versions/<version>/"
            "<type>/descriptor URL)"
        )
    base, tool_id, version, descriptor_type = parts
    registry = next((r for r in known if _same_base(r.url, base)), None)
    if registry is None:
        registry = _Registry(urlsplit(base).netloc.lower(), base, approved=False)
    return _Reference(tool_id, version, (registry,), descriptor_type)


# -- HTTP with the limits -------------------------------------------------------------------
class _TimedOut(BadRequest):
    """The fetch went past ``trs.fetch_timeout_seconds``."""


class _TooLarge(BadRequest):
    """The fetch went past ``trs.fetch_max_bytes``."""


class _Fetcher:
    """GET requests for one workflow: one deadline, one byte budget, the host policy."""

    def __init__(self, settings: Settings, trusted: Iterable[str]) -> None:
        self.settings = settings
        self.limits = settings.trs
        self._trusted = {o for o in (_origin(u) for u in trusted) if o is not None}
        self._client = httpx.Client(
            follow_redirects=False, trust_env=False, headers={"User-Agent": _USER_AGENT}
        )
        self.subject = "the workflow"
        self.deadline = 0.0
        self.fetched = 0
        self.written = 0
        self.restart()

    def restart(self) -> None:
        """A new deadline and byte budget."""
        self.deadline = time.monotonic() + self.limits.fetch_timeout_seconds
        self.fetched = 0
        self.written = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- limits -----------------------------------------------------------------------------
    def timed_out(self) -> _TimedOut:
        return _TimedOut(
            f"fetching {self.subject} timed out after {self.limits.fetch_timeout_seconds:g} s "
            "(trs.fetch_timeout_seconds)"
        )

    def too_large(self) -> _TooLarge:
        return _TooLarge(
            f"{self.subject} is larger than the limit of {self.limits.fetch_max_bytes} bytes "
            "(trs.fetch_max_bytes)"
        )

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left

    def count_written(self, size: int) -> None:
        self.written += size
        if self.written > self.limits.fetch_max_bytes:
            raise self.too_large()

    # -- requests ---------------------------------------------------------------------------
    def check_host(self, url: str) -> None:
        """Known registries are trusted as configured; any other host passes the node's
        policy for fetched URLs (public addresses, url_fetch_allowed_hosts)."""
        if _origin(url) in self._trusted:
            return
        check_url_host(url, self.settings)

    @contextlib.contextmanager
    def stream(
        self, url: str, *, accept: str, registry: _Registry | None
    ) -> Iterator[httpx.Response]:
        """GET ``url`` (following at most 5 redirects, each hop checked); the response is
        open for streaming while the ``with`` block runs."""
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            self.check_host(current)
            headers = {"Accept": accept, "Accept-Encoding": "identity"}
            authorization = registry.authorization(current) if registry is not None else None
            if authorization is not None:
                headers["Authorization"] = authorization
            try:
                request = self._client.build_request(
                    "GET", current, headers=headers, timeout=httpx.Timeout(self.remaining())
                )
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise self.timed_out() from exc
            except httpx.HTTPError as exc:
                host = urlsplit(current).netloc
                raise BadRequest(f"cannot reach {host} for {self.subject}: {exc}") from exc
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    current = urljoin(current, location)
                    continue
                try:
                    yield response
                except httpx.TimeoutException as exc:
                    raise self.timed_out() from exc
                except httpx.HTTPError as exc:
                    raise BadRequest(f"fetching {self.subject} failed: {exc}") from exc
                return
            finally:
                response.close()
        raise BadRequest(f"fetching {self.subject}: more than {_MAX_REDIRECTS} redirects")

    def chunks(self, response: httpx.Response) -> Iterator[bytes]:
        """The body, counted against the byte budget and the deadline as it arrives."""
        limit = self.limits.fetch_max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and self.fetched + int(declared) > limit:
            raise self.too_large()
        # As it arrives (no re-chunking), so that the deadline is checked between pieces.
        for chunk in response.iter_bytes():
            self.fetched += len(chunk)
            if self.fetched > limit:
                raise self.too_large()
            if time.monotonic() > self.deadline:
                raise self.timed_out()
            yield chunk

    def get_json(self, url: str, registry: _Registry, what: str) -> _Answer:
        """GET a JSON document; on an error status, the registry's own message."""
        with self.stream(url, accept="application/json", registry=registry) as response:
            body = b"".join(self.chunks(response))
            status, headers, final = response.status_code, response.headers, str(response.url)
        if status != 200:
            content_type = headers.get("content-type", "text/plain")
            wrapped = httpx.Response(status, headers={"content-type": content_type}, content=body)
            return _Answer(status, None, server_message(wrapped), headers, final)
        try:
            return _Answer(status, json.loads(body), "", headers, final)
        except ValueError as exc:
            raise BadRequest(
                f"TRS registry {registry.name!r} answered {what} with something that is not JSON"
            ) from exc


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any  # the parsed JSON of a 200
    message: str  # the registry's explanation of an error status
    headers: httpx.Headers
    url: str  # after redirects


# -- writing --------------------------------------------------------------------------------
class _Writer:
    """Writes files under ``dest``; :meth:`discard` removes everything it wrote."""

    def __init__(self, dest: Path, count: Callable[[int], None]) -> None:
        self.dest = dest
        self._count = count
        self._top: set[str] = set()

    def write(
        self, path: str, chunks: Iterable[bytes], algorithms: Iterable[str]
    ) -> tuple[int, dict[str, str]]:
        """Write ``chunks`` to ``path``; (size, hex digest of each algorithm)."""
        parts = PurePosixPath(path).parts
        self._top.add(parts[0])
        target = self.dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        hashers = {name: hashlib.new(name, usedforsecurity=False) for name in set(algorithms)}
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        size = 0
        fd = os.open(target, flags, 0o640)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                self._count(len(chunk))
                for hasher in hashers.values():
                    hasher.update(chunk)
                out.write(chunk)
        return size, {name: h.hexdigest() for name, h in hashers.items()}

    def discard(self) -> None:
        for name in self._top:
            target = self.dest / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()


# -- the /files listing and checksums -------------------------------------------------------
@dataclass(frozen=True)
class _Listed:
    path: str
    file_type: str
    checksums: tuple[tuple[str, str], ...]  # (hashlib name, lower-case hex)


def _checksums(value: Any) -> list[tuple[str, str]]:
    """Known checksums of a ToolFile's ``checksum`` (object, or a list of them) or a
    FileWrapper's ``checksum`` list; unknown types are left out."""
    items = value if isinstance(value, list) else [value]
    found: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind, digest = item.get("type"), item.get("checksum")
        if not isinstance(kind, str) or not isinstance(digest, str) or not digest.strip():
            continue
        algorithm = _HASHES.get(kind.strip().lower())
        if algorithm is not None:
            found.append((algorithm, digest.strip().lower()))
    return found


def _parse_listing(body: Any, subject: str, registry: _Registry, max_files: int) -> list[_Listed]:
    if not isinstance(body, list):
        raise BadRequest(f"TRS registry {registry.name!r} listed the files of {subject} wrongly")
    if len(body) > max_files:
        raise BadRequest(
            f"{subject} has {len(body)} files, more than the limit of {max_files} "
            "(trs.fetch_max_files)"
        )
    listed: list[_Listed] = []
    seen: set[str] = set()
    for entry in body:
        raw = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(raw, str):
            raise BadRequest(
                f"TRS registry {registry.name!r} lists a file of {subject} without a path"
            )
        try:
            path = normalise_attachment_name(raw)
        except BadRequest as exc:
            raise BadRequest(
                f"TRS registry {registry.name!r} lists a file of {subject} that this node "
                f"refuses: {exc.msg}"
            ) from exc
        if path in seen:
            raise BadRequest(f"TRS registry {registry.name!r} lists {path!r} of {subject} twice")
        seen.add(path)
        file_type = entry.get("file_type")
        file_type = (
            file_type if isinstance(file_type, str) and file_type in _FILE_TYPES else "OTHER"
        )
        listed.append(_Listed(path, file_type, tuple(_checksums(entry.get("checksum")))))
    if not listed:
        raise BadRequest(f"TRS registry {registry.name!r} lists no files for {subject}")
    for item in listed:
        clash = next((str(p) for p in PurePosixPath(item.path).parents if str(p) in seen), None)
        if clash is not None:
            raise BadRequest(
                f"TRS registry {registry.name!r} lists {clash!r} of {subject} as a file, but "
                f"{item.path!r} uses it as a folder"
            )
    primaries = [item.path for item in listed if item.file_type == "PRIMARY_DESCRIPTOR"]
    if len(primaries) != 1:
        raise BadRequest(
            f"TRS registry {registry.name!r} lists {len(primaries)} PRIMARY_DESCRIPTOR files for "
            f"{subject}; a run needs exactly one"
        )
    return listed


def _checked(
    item: _Listed, size: int, digests: dict[str, str], extra: Sequence[tuple[str, str]] = ()
) -> TrsFile:
    """The written file, once every checksum the registry gave for it matched."""
    expected = [*item.checksums, *extra]
    for algorithm, digest in expected:
        if digests.get(algorithm) != digest:
            raise BadRequest(
                f"checksum mismatch for {item.path}: the registry says "
                f"{_HASH_NAMES[algorithm]} {digest}, the file has {digests.get(algorithm)}"
            )
    if not expected:
        return TrsFile(item.path, item.file_type, None, None, size)
    algorithm, digest = expected[0]
    return TrsFile(item.path, item.file_type, _HASH_NAMES[algorithm], digest, size)


# -- zip ------------------------------------------------------------------------------------
def _zip_entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = info.external_attr >> 16
    if "\x00" in name:
        return "whose name contains a NUL byte"
    if "\\" in name:
        return "whose name contains a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "with an absolute path"
    if ".." in name.split("/"):
        return "that leaves its folder ('..')"
    if stat.S_ISLNK(mode):
        return "that is a symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "that is not a regular file"
    if info.flag_bits & 0x1:
        return "that is encrypted"
    return None


def _zip_plan(
    infos: Sequence[zipfile.ZipInfo], listed: Sequence[_Listed], subject: str, limits: TrsSettings
) -> dict[str, zipfile.ZipInfo]:
    """The zip entry of every listed file, or :class:`BadRequest` for an unsafe zip: checked
    whole before anything is extracted."""
    what = f"the zip of {subject}"
    if len(infos) > 2 * limits.fetch_max_files + 100:
        raise BadRequest(
            f"{what} has {len(infos)} entries, far more than the limit of "
            f"{limits.fetch_max_files} files (trs.fetch_max_files)"
        )
    for info in infos:
        problem = _zip_entry_problem(info)
        if problem is not None:
            raise BadRequest(f"{what} has an entry {problem}: {info.filename[:200]!r}")
    wanted = {item.path for item in listed}
    folders = {str(p) for path in wanted for p in PurePosixPath(path).parents} - {"."}
    plan: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        try:
            path = normalise_attachment_name(info.filename)
        except BadRequest as exc:
            raise BadRequest(f"{what} has an entry this node refuses: {exc.msg}") from exc
        if info.is_dir() or stat.S_ISDIR(info.external_attr >> 16):
            if path in wanted:
                raise BadRequest(f"{what} has {path!r} as a folder, but it is a listed file")
            if path not in folders:
                raise BadRequest(f"{what} has a folder {path!r} that no listed file is in")
            continue
        if path in folders:
            raise BadRequest(f"{what} has {path!r} as a file, but listed files use it as a folder")
        if path not in wanted:
            raise BadRequest(
                f"{what} has an entry {path!r} that is not in the registry's /files listing"
            )
        if path in plan:
            raise BadRequest(f"{what} has {path!r} twice")
        plan[path] = info
        total += info.file_size
        if total > limits.fetch_max_bytes:
            raise BadRequest(
                f"{what} unpacks to more than the limit of {limits.fetch_max_bytes} bytes "
                "(trs.fetch_max_bytes)"
            )
    missing = sorted(wanted - set(plan))
    if missing:
        names = ", ".join(repr(m) for m in missing[:10])
        raise BadRequest(f"{what} lacks files its /files listing names: {names}")
    return plan


def _zip_chunks(source: IO[bytes], declared: int, path: str, subject: str) -> Iterator[bytes]:
    size = 0
    while chunk := source.read(_CHUNK):
        size += len(chunk)
        if size > declared:
            raise BadRequest(f"the zip of {subject} holds more bytes for {path!r} than it declares")
        yield chunk


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)


# -- fetching one workflow ------------------------------------------------------------------
def _check_dest(dest: Path) -> None:
    if not dest.is_dir() or dest.is_symlink():
        raise ValueError(f"{dest} is not a directory")
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")


def _version_url(registry: _Registry, tool_id: str, version_id: str) -> str:
    return f"{registry.url}/tools/{_q(tool_id)}/versions/{_q(version_id)}"


def _subject(tool_id: str, version_id: str, registry: _Registry | None = None) -> str:
    where = f" of TRS registry {registry.name!r}" if registry is not None else ""
    return f"tool {tool_id!r} version {version_id!r}{where}"


def _find_version(fetcher: _Fetcher, ref: _Reference) -> tuple[_Registry, dict[str, Any]]:
    """The first of ``ref.registries`` that has the tool version, and the version."""
    said: list[str] = []
    single = len(ref.registries) == 1
    for registry in ref.registries:
        fetcher.subject = _subject(ref.tool_id, ref.version_id, registry)
        url = _version_url(registry, ref.tool_id, ref.version_id)
        try:
            answer = fetcher.get_json(url, registry, "the tool version")
        except (_TimedOut, _TooLarge):
            raise
        except BadRequest as exc:
            if single:
                raise
            said.append(f"{registry.name!r}: {exc.msg}")
            continue
        if answer.status == 200:
            if not isinstance(answer.body, dict):
                raise BadRequest(
                    f"TRS registry {registry.name!r} answered for "
                    f"{_subject(ref.tool_id, ref.version_id)} with something that is not a "
                    "ToolVersion"
                )
            return registry, answer.body
        problem = (
            answer.message if answer.status == 404 else f"HTTP {answer.status}: {answer.message}"
        )
        if single:
            if answer.status == 404:
                raise BadRequest(
                    f"TRS registry {registry.name!r} has no tool {ref.tool_id!r} version "
                    f"{ref.version_id!r}: {answer.message}"
                )
            raise BadRequest(
                f"TRS registry {registry.name!r} answered for tool {ref.tool_id!r} version "
                f"{ref.version_id!r} with {problem}"
            )
        said.append(f"{registry.name!r}: {problem}")
    raise BadRequest(
        f"no known TRS registry has tool {ref.tool_id!r} version {ref.version_id!r}: "
        + "; ".join(said)
    )


def _fetch_zip(
    fetcher: _Fetcher,
    registry: _Registry,
    files_url: str,
    listed: Sequence[_Listed],
    writer: _Writer,
) -> list[TrsFile] | None:
    """The workflow from ``/files?format=zip``, or None when the registry offers no zip."""
    algorithms = {a for item in listed for a, _ in item.checksums}
    url = files_url + "?format=zip"
    with fetcher.stream(url, accept="application/zip", registry=registry) as response:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status_code != 200:
            return None
        if content_type not in _ZIP_TYPES and content_type != "application/octet-stream":
            return None
        with tempfile.TemporaryFile() as spool:
            first = True
            for chunk in fetcher.chunks(response):
                if first and content_type not in _ZIP_TYPES and not chunk.startswith(_ZIP_MAGIC):
                    return None
                first = False
                spool.write(chunk)
            spool.seek(0)
            what = f"the zip of {fetcher.subject}"
            try:
                archive = zipfile.ZipFile(spool)
            except _ZIP_ERRORS as exc:
                raise BadRequest(f"{what} is not a valid zip file: {exc}") from exc
            with archive:
                plan = _zip_plan(archive.infolist(), listed, fetcher.subject, fetcher.limits)
                files: list[TrsFile] = []
                for item in listed:
                    info = plan[item.path]
                    try:
                        with archive.open(info) as source:
                            chunks = _zip_chunks(source, info.file_size, item.path, fetcher.subject)
                            size, digests = writer.write(item.path, chunks, algorithms)
                    except _ZIP_ERRORS as exc:
                        raise BadRequest(f"{what} is damaged at {item.path!r}: {exc}") from exc
                    files.append(_checked(item, size, digests))
                return files


def _fetch_file(
    fetcher: _Fetcher, registry: _Registry, descriptor_url: str, item: _Listed, writer: _Writer
) -> TrsFile:
    """One listed file from ``.../descriptor/<relative_path>`` (a FileWrapper)."""
    url = f"{descriptor_url}/{quote(item.path, safe='/')}"
    answer = fetcher.get_json(url, registry, f"the file {item.path!r}")
    if answer.status != 200:
        raise BadRequest(
            f"TRS registry {registry.name!r} did not serve {item.path!r} of {fetcher.subject}: "
            f"HTTP {answer.status}: {answer.message}"
        )
    wrapper = answer.body
    if not isinstance(wrapper, dict):
        raise BadRequest(
            f"TRS registry {registry.name!r} answered for {item.path!r} with something that is "
            "not a FileWrapper"
        )
    extra = _checksums(wrapper.get("checksum"))
    algorithms = {a for a, _ in item.checksums} | {a for a, _ in extra}
    content, link = wrapper.get("content"), wrapper.get("url")
    if isinstance(content, str):
        size, digests = writer.write(item.path, [content.encode("utf-8")], algorithms)
    elif isinstance(link, str) and link:
        target = urljoin(answer.url, link)
        with fetcher.stream(target, accept="*/*", registry=registry) as response:
            if response.status_code != 200:
                raise BadRequest(
                    f"fetching {item.path!r} of {fetcher.subject} from {target!r} failed: "
                    f"HTTP {response.status_code}"
                )
            size, digests = writer.write(item.path, fetcher.chunks(response), algorithms)
    else:
        raise BadRequest(
            f"TRS registry {registry.name!r} gave neither content nor url for {item.path!r} of "
            f"{fetcher.subject}"
        )
    return _checked(item, size, digests, extra)


def fetch_trs_workflow(
    workflow_url: str, workflow_type: str, dest: Path, settings: Settings
) -> TrsWorkflow:
    """Fetch the TRS workflow ``workflow_url`` names into ``dest`` (an existing empty folder),
    checked as the module docstring says. :class:`~wes_bridge.errors.BadRequest`, or
    :class:`~wes_bridge.errors.Forbidden` for a host the node's policy refuses; either way
    ``dest`` is left empty."""
    trs_type = _trs_type(workflow_type)
    ref = _parse(workflow_url, settings)
    if ref.descriptor_type is not None and ref.descriptor_type != trs_type:
        raise BadRequest(
            f"workflow_url names a {ref.descriptor_type} descriptor, but workflow_type "
            f"{workflow_type} needs {trs_type}"
        )
    _check_dest(dest)
    with _Fetcher(settings, [r.url for r in known_registries(settings)]) as fetcher:
        registry, version = _find_version(fetcher, ref)
        subject = fetcher.subject
        offered = version.get("descriptor_type")
        if isinstance(offered, list) and offered:
            types = [str(t).upper() for t in offered]
            if trs_type not in types:
                raise BadRequest(
                    f"{subject} is {', '.join(types)}, not {trs_type}: workflow_type "
                    f"{workflow_type} needs a {trs_type} descriptor"
                )
        base = f"{_version_url(registry, ref.tool_id, ref.version_id)}/{trs_type}"
        answer = fetcher.get_json(base + "/files", registry, "the file listing")
        if answer.status != 200:
            raise BadRequest(
                f"TRS registry {registry.name!r} did not list the {trs_type} files of "
                f"{_subject(ref.tool_id, ref.version_id)}: HTTP {answer.status}: {answer.message}"
            )
        listed = _parse_listing(answer.body, subject, registry, settings.trs.fetch_max_files)
        writer = _Writer(dest, fetcher.count_written)
        try:
            files = _fetch_zip(fetcher, registry, base + "/files", listed, writer)
            if files is None:
                files = [
                    _fetch_file(fetcher, registry, base + "/descriptor", item, writer)
                    for item in listed
                ]
        except BaseException:
            writer.discard()
            raise
    primary = next(f.path for f in files if f.file_type == "PRIMARY_DESCRIPTOR")
    workflow = TrsWorkflow(
        registry=registry.name,
        registry_url=registry.url,
        tool_id=ref.tool_id,
        version_id=ref.version_id,
        descriptor_type=trs_type,
        primary_descriptor=primary,
        files=tuple(files),
        approved=registry.approved and all(f.checksum is not None for f in files),
    )
    log.info(
        "fetched %s: %d files, %d bytes, %s",
        subject,
        len(files),
        sum(f.size for f in files),
        "approved" if workflow.approved else "not approved",
    )
    return workflow


# -- browsing a registry (wes-bridge trs list|show) -----------------------------------------
def registry_for(name_or_url: str | None, settings: Settings) -> TrsRegistry:
    """A known registry by name (``self``: this node's own), or by TRS base URL (a known
    one's, or any other, not approved); None: this node's own, else the first configured."""
    known = known_registries(settings)
    if name_or_url is None:
        if not known:
            raise BadRequest(
                "this node serves no TRS registry (trs.serve) and knows none (trs.registries); "
                "name one"
            )
        return known[0]
    for registry in known:
        if registry.name == name_or_url:
            return registry
    if name_or_url.startswith(("http://", "https://")):
        for registry in known:
            if _same_base(registry.url, name_or_url):
                return registry
        return TrsRegistry(
            name=urlsplit(name_or_url).netloc, url=name_or_url, token=None, approved=False
        )
    names = ", ".join(r.name for r in known) or "none"
    raise BadRequest(
        f"no TRS registry is named {name_or_url!r} (known: {names}); give a name or a TRS base "
        "URL (https://.../ga4gh/trs/v2)"
    )


def parse_tool_reference(
    text: str, settings: Settings, registry: TrsRegistry | None = None
) -> tuple[TrsRegistry, str, str | None]:
    """(registry, tool id, version or None) of a tool id (in ``registry``, default as
    :func:`registry_for`), a ``trs://host/<id>[/<version>]`` URI or a TRS descriptor URL."""
    known = [_Registry.configured(r) for r in known_registries(settings)]
    configured = {r.name: r for r in known_registries(settings)}

    def public(found: _Registry) -> TrsRegistry:
        if found.name in configured and configured[found.name].url == found.url:
            return configured[found.name]
        return TrsRegistry(name=found.name, url=found.url, token=None, approved=False)

    if text[:6].lower() == "trs://":
        netloc, host, port, tool_id, version = _split_trs_uri(text, need_version=False)
        return public(_registry_at(netloc, host, port, known)), tool_id, version
    parts = _descriptor_url_parts(text)
    if parts is not None:
        base, tool_id, version, _ = parts
        found = next((r for r in known if _same_base(r.url, base)), None)
        found = found or _Registry(urlsplit(base).netloc.lower(), base, approved=False)
        return public(found), tool_id, version
    return registry or registry_for(None, settings), text, None


class TrsClient:
    """Reads one registry's tools (``GET /tools``, ``/tools/{id}``, ``.../files``) with the
    limits of ``settings.trs`` for each request. The registry, named by the operator, is
    trusted; other hosts (redirects, next pages) pass the node's host policy."""

    def __init__(self, registry: TrsRegistry, settings: Settings) -> None:
        self.registry = registry
        self._registry = _Registry.configured(registry)
        trusted = [*(r.url for r in known_registries(settings)), registry.url]
        self._fetcher = _Fetcher(settings, trusted)

    def close(self) -> None:
        self._fetcher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _get(self, url: str, what: str) -> _Answer:
        self._fetcher.restart()
        self._fetcher.subject = f"{what} of TRS registry {self.registry.name!r}"
        answer = self._fetcher.get_json(url, self._registry, what)
        if answer.status == 404:
            raise BadRequest(f"TRS registry {self.registry.name!r} has no {what}: {answer.message}")
        if answer.status != 200:
            raise BadRequest(
                f"TRS registry {self.registry.name!r} answered HTTP {answer.status} for {what}: "
                f"{answer.message}"
            )
        return answer

    def tools(
        self,
        *,
        descriptor_type: str | None = None,
        name: str | None = None,
        organization: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``GET /tools`` with these filters, following ``next_page`` up to ``limit`` tools."""
        params = {
            key: value
            for key, value in (
                ("descriptorType", descriptor_type),
                ("name", name),
                ("organization", organization),
                ("limit", str(min(limit, 1000)) if limit else None),
            )
            if value
        }
        url: str | None = str(httpx.URL(f"{self._registry.url}/tools", params=params))
        seen: set[str] = set()
        tools: list[dict[str, Any]] = []
        while url is not None and url not in seen and (limit is None or len(tools) < limit):
            seen.add(url)
            answer = self._get(url, "tool list")
            if not isinstance(answer.body, list):
                raise BadRequest(
                    f"TRS registry {self.registry.name!r} answered GET /tools with something "
                    "that is not a list"
                )
            page = [t for t in answer.body if isinstance(t, dict)]
            if not page:
                break
            tools.extend(page)
            following = answer.headers.get("next_page")
            url = urljoin(answer.url, following) if following else None
        return tools if limit is None else tools[:limit]

    def tool(self, tool_id: str) -> dict[str, Any]:
        """``GET /tools/{id}``."""
        answer = self._get(f"{self._registry.url}/tools/{_q(tool_id)}", f"tool {tool_id!r}")
        if not isinstance(answer.body, dict):
            raise BadRequest(
                f"TRS registry {self.registry.name!r} answered for tool {tool_id!r} with "
                "something that is not a Tool"
            )
        return answer.body

    def files(self, tool_id: str, version_id: str, descriptor_type: str) -> list[dict[str, Any]]:
        """``GET /tools/{id}/versions/{version_id}/{type}/files``."""
        what = f"{descriptor_type} files of tool {tool_id!r} version {version_id!r}"
        url = f"{_version_url(self._registry, tool_id, version_id)}/{descriptor_type}/files"
        answer = self._get(url, what)
        if not isinstance(answer.body, list):
            raise BadRequest(
                f"TRS registry {self.registry.name!r} answered for the {what} with something "
                "that is not a list"
            )
        return [f for f in answer.body if isinstance(f, dict)]
