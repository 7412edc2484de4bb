"""Local paths of ``file://`` URLs, and the allowed-roots rule, shared by the TES's parts."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["link_or_copy", "local_path", "within"]


def local_path(url: str) -> Path | None:
    """The local path a file URL (or bare absolute path) names; None for other schemes.

    Raises ValueError for a file URL that names another host.
    """
    if url.startswith("/"):
        return Path(url)
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file URL {url!r} names a remote host; this TES uses local files only")
    return Path(unquote(parts.path))


def within(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (symbolic links resolved) is one of ``roots`` or below one."""
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target``; copy it where a link cannot be made (another file
    system, no permission, too many links)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
            raise
        shutil.copy2(source, target)
