"""Files of a run's working directory and the run's outputs, for engine adapters.

Public through :mod:`wes_bridge.plugin`, which re-exports every name of ``__all__`` (and
:func:`~wes_bridge.tes.paths.link_or_copy`): adapters import them from there.

An engine that works in a directory (Snakemake, Nextflow) gets a *mirror* of the run's
attachments to work in (real directories, files hard-linked, so nothing is copied), and the
files the run created there, or published into the outputs directory, become the run's
``outputs``: ``{relative path: {"class": "File", "location": file URL, "path", "basename",
"size", "checksum": "sha1$..."}}``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .tes.paths import link_or_copy

__all__ = ["Signature", "describe_outputs", "materialise_links", "mirror", "publish", "snapshot"]

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


def _files(root: Path, ignore: frozenset[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) of every non-directory under ``root``, outside
    directories named in ``ignore`` (at any depth)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ignore)
        here = Path(dirpath)
        for name in sorted(filenames):
            path = here / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            yield path.relative_to(root).as_posix(), info


def snapshot(root: Path, ignore: frozenset[str] = frozenset()) -> dict[str, Signature]:
    """What is in ``root`` now, to tell later which files a run created or changed."""
    return {
        rel: (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        for rel, info in _files(root, ignore)
    }


def publish(
    root: Path,
    before: dict[str, Signature],
    outputs_dir: Path,
    ignore: frozenset[str] = frozenset(),
) -> list[str]:
    """Hard-link every file created or changed in ``root`` since ``before`` into
    ``outputs_dir`` at the same relative path; the relative paths published.

    A symbolic link the run made is published as the file it points to when that file lies
    inside ``root``; one pointing elsewhere is left out (a results directory must not become a
    way to read other files of the node).
    """
    published = []
    root_real = root.resolve()
    for rel, info in _files(root, ignore):
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


def describe_outputs(outputs_dir: Path, paths: list[str] | None = None) -> dict[str, Any]:
    """The run's ``outputs``: for each file (by its path relative to ``outputs_dir``; all
    regular files there when ``paths`` is None) a CWL-style File object."""
    if paths is None:
        paths = [rel for rel, info in _files(outputs_dir, frozenset()) if _is_file(info)]
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


def _is_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode)


def materialise_links(outputs_dir: Path, within: Path) -> list[str]:
    """Replace each symbolic link under ``outputs_dir`` that points to a file inside
    ``within`` by that file (hard-linked, or copied); remove every other link. Engines that
    publish by linking (Nextflow's default ``publishDir`` mode) leave links into their work
    directory; the outputs must hold the files, and never a way to read others of the node.
    The relative paths of the links removed are returned."""
    removed = []
    within_real = within.resolve()
    for dirpath, dirnames, filenames in os.walk(outputs_dir):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            if not path.is_symlink():
                continue
            if name in dirnames:
                dirnames.remove(name)  # not followed
            real = path.resolve()
            path.unlink()
            inside = within_real in real.parents
            if inside and real.is_file():
                link_or_copy(real, path)
            elif inside and real.is_dir():
                mirror(real, path)
                removed += [
                    f"{path.relative_to(outputs_dir).as_posix()}/{rel}"
                    for rel in materialise_links(path, within)
                ]
            else:
                removed.append(path.relative_to(outputs_dir).as_posix())
    return removed
