"""Turning the parts of a ``POST /runs`` request into a run directory.

Everything is written into a hidden staging folder first and renamed into place only when the
whole request was accepted, so a refused request leaves nothing behind. Attachment names are
checked before anything is written: relative, no ``..``, no backslashes or NUL, no duplicates,
no file that is also a folder. ``workflow_url`` is one of the attachments (optionally with a
``#fragment``), an ``http(s)`` URL fetched under the node's host policy, or a workflow in a TRS
registry (:mod:`wes_bridge.trs.client`), fetched with every file it needs and checksum-checked.

With ``trs.approved_only`` the node runs only workflows from approved TRS registries: anything
else is refused (403) before a byte is written.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from .config import Settings
from .errors import BadRequest, Forbidden

if TYPE_CHECKING:
    from .trs.client import TrsWorkflow

__all__ = ["Attachment", "RunStager", "StagedRun", "check_url_host", "normalise_attachment_name"]

_CHUNK = 1 << 20
_MAX_NAME = 4096
_MAX_COMPONENT = 255
_MAX_REDIRECTS = 5
WORKFLOW_DIR = "workflow"


@dataclass(frozen=True)
class Attachment:
    """One ``workflow_attachment`` part: its client-given name and a readable file object."""

    filename: str
    file: BinaryIO


@dataclass(frozen=True)
class StagedRun:
    run_dir: Path
    workflow_dir: Path
    workflow_path: Path
    workflow_fragment: str | None
    trs: dict[str, Any] | None = None
    """Where a TRS workflow came from (:meth:`TrsWorkflow.as_record`), for the run's log."""


def normalise_attachment_name(raw: str) -> str:
    """The safe relative POSIX path for an attachment name, or :class:`BadRequest`."""
    shown = raw.encode("unicode_escape").decode("ascii")[:200]
    if not raw:
        raise BadRequest("workflow_attachment part without a filename")
    if "\x00" in raw:
        raise BadRequest(f"attachment name {shown!r} contains a NUL byte")
    if "\\" in raw:
        raise BadRequest(f"attachment name {shown!r} contains a backslash; use '/'")
    if len(raw) > _MAX_NAME:
        raise BadRequest(f"attachment name is longer than {_MAX_NAME} characters")
    if raw.startswith("/"):
        raise BadRequest(f"attachment name {shown!r} is an absolute path; names must be relative")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts:
        raise BadRequest(f"attachment name {shown!r} names no file")
    for part in parts:
        if part == "..":
            raise BadRequest(f"attachment name {shown!r} refers to a parent directory ('..')")
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT:
            raise BadRequest(f"attachment name {shown!r} has a component over 255 bytes")
        if any(ord(c) < 32 for c in part):
            raise BadRequest(f"attachment name {shown!r} contains a control character")
    return str(PurePosixPath(*parts))


def check_url_host(url: str, settings: Settings) -> None:
    """Refuse URLs the node must not fetch: other schemes, hosts outside the allow-list, and
    (unless allowed) hosts resolving to loopback, private, link-local or reserved addresses."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "http://[::1/x": a bracketed host that is not IPv6
        raise BadRequest(f"URL {url!r} is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"URL scheme {parts.scheme!r} is not supported; use http or https")
    host = parts.hostname
    if not host:
        raise BadRequest(f"URL {url!r} has no host")
    allowed = [h.lower() for h in settings.url_fetch_allowed_hosts]
    if allowed and host.lower() not in allowed:
        raise Forbidden(
            f"host {host!r} is not in this node's url_fetch_allowed_hosts ({', '.join(allowed)})"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadRequest(f"URL {url!r} has an invalid port") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadRequest(f"cannot resolve host {host!r}: {exc}") from exc
    if settings.url_fetch_allow_private:
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            raise Forbidden(
                f"host {host!r} resolves to the non-public address {address}; this node only "
                "fetches from public addresses (see url_fetch_allow_private)"
            )


def _same_content(a: BinaryIO, b: BinaryIO) -> bool:
    a.seek(0)
    b.seek(0)
    while True:
        chunk_a, chunk_b = a.read(_CHUNK), b.read(_CHUNK)
        if chunk_a != chunk_b:
            return False
        if not chunk_a:
            return True


class RunStager:
    """Builds run directories under ``settings.runs_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.runs_dir
        self.root.mkdir(parents=True, exist_ok=True)

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def stage(
        self,
        run_id: str,
        workflow_url: str,
        attachments: Iterable[Attachment],
        workflow_type: str = "",
    ) -> StagedRun:
        from .trs.client import is_trs_url

        url = workflow_url.strip()
        from_trs = is_trs_url(url)
        if self.settings.trs.approved_only and not from_trs:
            raise Forbidden(
                "this node runs only approved workflows (trs.approved_only): workflow_url must "
                "name a workflow version in an approved TRS registry (trs://host/id/version), "
                "not an attachment or a plain URL"
            )
        final = self.run_dir(run_id)
        staging = self.root / f".staging-{run_id}"
        staging.mkdir(mode=0o700)
        trs: TrsWorkflow | None = None
        try:
            workflow_dir = staging / WORKFLOW_DIR
            workflow_dir.mkdir()
            if from_trs:
                trs = self._fetch_trs(workflow_dir, url, workflow_type)
                relative, fragment = trs.primary_descriptor, None
                self._write_attachments(workflow_dir, attachments, fetched=trs.primary_descriptor)
            else:
                names = self._write_attachments(workflow_dir, attachments)
                relative, fragment = self._resolve_workflow(workflow_dir, url, names)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StagedRun(
            final,
            final / WORKFLOW_DIR,
            final / WORKFLOW_DIR / relative,
            fragment,
            trs.as_record() if trs is not None else None,
        )

    def _fetch_trs(self, workflow_dir: Path, url: str, workflow_type: str) -> TrsWorkflow:
        from .trs.client import fetch_trs_workflow

        fetched = fetch_trs_workflow(url, workflow_type, workflow_dir, self.settings)
        if self.settings.trs.approved_only and not fetched.approved:
            unverified = [f.path for f in fetched.files if not f.checksum]
            why = (
                f"files without a checksum to verify: {', '.join(unverified[:10])}"
                if unverified
                else f"registry {fetched.registry!r} is not an approved registry of this node"
            )
            raise Forbidden(
                f"this node runs only approved workflows (trs.approved_only): {fetched.tool_id} "
                f"version {fetched.version_id} from {fetched.registry!r} is not approved ({why})"
            )
        return fetched

    def discard(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- attachments ------------------------------------------------------------------------
    def _write_attachments(
        self, root: Path, attachments: Iterable[Attachment], fetched: str | None = None
    ) -> set[str]:
        """Writes the attachments under ``root``; their names. ``fetched``: ``root`` already
        holds a workflow from a registry (whose primary file that is), which an attachment may
        add to but never replace."""
        items: list[tuple[str, Attachment]] = []
        by_name: dict[str, Attachment] = {}
        for attachment in attachments:
            name = normalise_attachment_name(attachment.filename)
            if name in by_name:
                # The same file twice (Toil's WES client does this for a tool's shared
                # dependencies) is harmless; two different files under one name are not.
                if not _same_content(by_name[name].file, attachment.file):
                    raise BadRequest(
                        f"attachment {name!r} is given more than once, with different contents"
                    )
                continue
            by_name[name] = attachment
            items.append((name, attachment))
        names = set(by_name)
        for name in names:
            parents = PurePosixPath(name).parents
            clash = next((str(p) for p in parents if str(p) in names), None)
            if clash:
                raise BadRequest(f"attachment {clash!r} is a file but {name!r} uses it as a folder")
        for name, attachment in items:
            target = root.joinpath(*PurePosixPath(name).parts)
            if fetched is not None:
                clash = self._clash_with_fetched(root, name)
                if clash:
                    raise BadRequest(
                        f"attachment {name!r} would replace {clash!r} of the workflow fetched "
                        f"from the registry (primary file {fetched!r}); rename the attachment"
                    )
            target.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL|O_NOFOLLOW: never follow or replace anything already there.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(target, flags, 0o640)
            with os.fdopen(fd, "wb") as out:
                attachment.file.seek(0)
                shutil.copyfileobj(attachment.file, out, _CHUNK)
        return names

    @staticmethod
    def _clash_with_fetched(root: Path, name: str) -> str | None:
        """The fetched file or folder that attachment ``name`` would replace or pass through."""
        current = root
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts):
            current = current / part
            if current.is_symlink() or (
                current.exists() and (i == len(parts) - 1 or current.is_file())
            ):
                return str(PurePosixPath(*parts[: i + 1]))
        return None

    # -- workflow_url -----------------------------------------------------------------------
    def _resolve_workflow(
        self, workflow_dir: Path, workflow_url: str, names: set[str]
    ) -> tuple[str, str | None]:
        url = workflow_url.strip()
        if not url:
            raise BadRequest("workflow_url is required")
        # An attachment name wins over a URL reading: `colon:test.cwl` is a file name.
        path, _, fragment = url.partition("#")
        for candidate in (path, unquote(path)):
            with contextlib.suppress(BadRequest):
                name = normalise_attachment_name(candidate)
                if name in names:
                    return name, fragment or None
        try:
            scheme = urlsplit(url).scheme
        except ValueError as exc:
            raise BadRequest(f"workflow_url {url!r} is malformed: {exc}") from exc
        if scheme in ("http", "https"):
            base, _, fragment = url.partition("#")
            return self._fetch(workflow_dir, base, names), fragment or None
        if scheme:
            raise BadRequest(
                f"workflow_url scheme {scheme!r} is not supported; give a relative path to one "
                "of the workflow_attachment files, or an http(s) URL"
            )
        try:
            name = normalise_attachment_name(unquote(path))
        except BadRequest as exc:
            raise BadRequest(f"workflow_url: {exc.msg}") from exc
        if name not in names:
            listed = ", ".join(sorted(names)[:10]) or "none were sent"
            raise BadRequest(
                f"workflow_url {url!r} is neither an http(s) URL nor one of the attachments "
                f"({listed})"
            )
        return name, fragment or None

    def _fetch(self, workflow_dir: Path, url: str, names: set[str]) -> str:
        settings = self.settings
        filename = PurePosixPath(unquote(urlsplit(url).path)).name or "workflow"
        try:
            filename = normalise_attachment_name(filename)
        except BadRequest:
            filename = "workflow"
        if filename in names:
            raise BadRequest(
                f"workflow_url's file name {filename!r} is also the name of an attachment"
            )
        timeout = httpx.Timeout(settings.url_fetch_timeout_seconds)
        current = url
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                check_url_host(current, settings)
                try:
                    with client.stream("GET", current) as response:
                        if response.is_redirect and "location" in response.headers:
                            current = urljoin(current, response.headers["location"])
                            continue
                        if response.status_code != 200:
                            raise BadRequest(
                                f"fetching workflow_url {url!r} failed: HTTP {response.status_code}"
                            )
                        self._save(response, workflow_dir / filename, url)
                        return filename
                except httpx.TimeoutException as exc:
                    raise BadRequest(
                        f"fetching workflow_url {url!r} timed out after "
                        f"{settings.url_fetch_timeout_seconds:g} s"
                    ) from exc
                except httpx.HTTPError as exc:
                    raise BadRequest(f"fetching workflow_url {url!r} failed: {exc}") from exc
        raise BadRequest(f"fetching workflow_url {url!r}: more than {_MAX_REDIRECTS} redirects")

    def _save(self, response: httpx.Response, target: Path, url: str) -> None:
        limit = self.settings.url_fetch_max_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(f"workflow_url {url!r} is larger than the limit of {limit} bytes")
        size = 0
        with open(target, "xb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BadRequest(
                        f"workflow_url {url!r} is larger than the limit of {limit} bytes"
                    )
                out.write(chunk)
