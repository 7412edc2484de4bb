"""The working directory of a Snakemake run, and the files the run leaves in it.

Snakemake resolves a rule's relative paths against its working directory and the workflow's
own files (``include:``, ``script:``, ``conda:``) against the Snakefile's directory. The
driver makes one directory serve both: a mirror of the run's attachments (real directories,
files hard-linked, so nothing is copied) in which the Snakefile is run. Afterwards every file
the run created or changed there (outside Snakemake's ``.snakemake`` bookkeeping) is a result,
and is hard-linked into the run's outputs directory at the same relative path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wes_bridge.tes.paths import link_or_copy

__all__ = [
    "IGNORED_DIRS",
    "Signature",
    "describe_outputs",
    "mirror",
    "publish",
    "snapshot",
]

IGNORED_DIRS = frozenset({".snakemake", "__pycache__"})
"""Directories (at any depth) whose files are never results: Snakemake's metadata, logs,
locks and temporary scripts, and Python's byte-code caches."""

Signature = tuple[int, int, int, int]
"""(device, inode, size, mtime_ns) of a file, symbolic links not followed."""

_CHUNK = 1 << 20


def mirror(source: Path, target: Path) -> None:
    """Make ``target`` a mirror of ``source``: the same directories, files hard-linked (copied
    where a link is impossible), symbolic links recreated as they are."""
    target.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        there = target / here.relative_to(source)
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)
                filenames.append(name)
            else:
                (there / name).mkdir(exist_ok=True)
        for name in filenames:
            origin = here / name
            if origin.is_symlink():
                os.symlink(os.readlink(origin), there / name)
            else:
                link_or_copy(origin, there / name)


def _files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) of every non-directory under ``root``, outside
    :data:`IGNORED_DIRS`."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        here = Path(dirpath)
        for name in sorted(filenames):
            path = here / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            yield path.relative_to(root).as_posix(), info


def snapshot(root: Path) -> dict[str, Signature]:
    """What is in ``root`` now, to tell later which files a run created or changed."""
    return {
        rel: (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        for rel, info in _files(root)
    }


def publish(root: Path, before: dict[str, Signature], outputs_dir: Path) -> list[str]:
    """Hard-link every file created or changed in ``root`` since ``before`` into
    ``outputs_dir`` at the same relative path; the relative paths published.

    A symbolic link the run made is published as the file it points to when that file lies
    inside ``root``; one pointing elsewhere is left out (a results directory must not become a
    way to read other files of the node).
    """
    published = []
    root_real = root.resolve()
    for rel, info in _files(root):
        signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if before.get(rel) == signature:
            continue
        source = root / rel
        if source.is_symlink():
            real = source.resolve()
            if not real.is_file() or root_real not in real.parents:
                continue
            source = real
        elif not source.is_file():
            continue  # a FIFO or socket
        target = outputs_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        link_or_copy(source, target)
        published.append(rel)
    return published


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()  # noqa: S324 - CWL/WES checksum format, not for security
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_outputs(outputs_dir: Path, paths: list[str]) -> dict[str, Any]:
    """The run's ``outputs``: for each published file (by its path relative to the working
    directory, as the Snakefile names it) a CWL-style File object."""
    described: dict[str, Any] = {}
    for rel in sorted(paths):
        path = outputs_dir / rel
        described[rel] = {
            "class": "File",
            "location": path.absolute().as_uri(),
            "path": str(path.absolute()),
            "basename": path.name,
            "size": path.stat().st_size,
            "checksum": "sha1$" + _sha1(path),
        }
    return described
