"""Dataset access: which datasets a request names, and whether its user may use them.

The operator maps each dataset id to the locations that hold it: path prefixes
(``/data/ega/EGAD0001``) and URL prefixes (``s3://bucket/EGAD0001/``, ``https://host/x/``).
A request names a dataset when any string in it (workflow parameters, the workflow URL, a TES
task's inputs, outputs, commands and environment, a staged workflow file) contains one of
those locations, on a path boundary. Paths are also compared after lexical normalisation
(``/data/x/../ega/EGAD0001``), after resolving symbolic links on this machine, and after
percent-decoding (``file:///data/ega/%45GAD0001``), so spelling a location differently does not
get around the check. The check errs on the side of refusing: a comment in a workflow that
names a dataset's location counts as naming it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import Forbidden

__all__ = ["DatasetPolicy", "strings_in"]

# A path-like run of characters: what a location could be spelled as inside a longer string.
_PATHISH = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://)?/[^\s\"'`=,;|&<>()\[\]{}]*")
_BOUNDARY = re.compile(r"[A-Za-z0-9._~%+-]")
MAX_SCANNED_FILE_BYTES = 64 << 20


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value: keys and values, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def _canonical_path(prefix: str) -> str:
    if prefix.startswith("file://"):
        prefix = unquote(prefix[len("file://") :])
    return posixpath.normpath(prefix)


class DatasetPolicy:
    """The operator's map of datasets to locations (``auth.datasets``)."""

    def __init__(self, datasets: Mapping[str, Iterable[str]]) -> None:
        self._paths: list[tuple[str, str]] = []  # (path prefix, dataset)
        self._urls: list[tuple[str, str]] = []  # (URL prefix, dataset)
        for dataset, locations in datasets.items():
            for location in locations:
                location = location.strip()
                if location.startswith(("/", "file://")):
                    path = _canonical_path(location)
                    spellings = {path, os.path.realpath(path)}
                    self._paths.extend((p, dataset) for p in spellings)
                else:
                    self._urls.append((location, dataset))

    def __bool__(self) -> bool:
        return bool(self._paths or self._urls)

    @staticmethod
    def _contains(text: str, prefix: str) -> bool:
        start = text.find(prefix)
        while start >= 0:
            end = start + len(prefix)
            if prefix.endswith("/") or end == len(text) or not _BOUNDARY.match(text[end]):
                return True
            start = text.find(prefix, start + 1)
        return False

    def datasets_in(self, text: str) -> set[str]:
        """The datasets whose locations ``text`` names."""
        found: set[str] = set()
        if not self:
            return found
        variants = {text, unquote(text)}
        for variant in list(variants):
            for match in _PATHISH.finditer(variant):
                piece = match.group(0)
                if piece.startswith("file://"):
                    piece = piece[len("file://") :]
                elif "://" in piece:
                    continue
                normal = posixpath.normpath(piece) if piece.startswith("/") else piece
                variants.add(normal)
                if normal.startswith("/") and len(normal) < 4096:
                    with contextlib.suppress(OSError, ValueError):
                        variants.add(os.path.realpath(normal))
        for variant in variants:
            for prefix, dataset in self._paths:
                if self._contains(variant, prefix):
                    found.add(dataset)
            for prefix, dataset in self._urls:
                if prefix in variant:
                    found.add(dataset)
        return found

    def datasets_named(self, strings: Iterable[str]) -> set[str]:
        found: set[str] = set()
        if not self:
            return found
        for text in strings:
            found |= self.datasets_in(text)
        return found

    def datasets_in_files(self, root: Path) -> set[str]:
        """The datasets named in the files under ``root`` (a staged workflow folder)."""
        found: set[str] = set()
        if not self:
            return found
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as handle:
                data = handle.read(MAX_SCANNED_FILE_BYTES)
            found |= self.datasets_in(data.decode("utf-8", "replace"))
        return found

    @staticmethod
    def check(
        named: Iterable[str], grants: Mapping[str, float | None], what: str = "this run"
    ) -> None:
        """:class:`Forbidden`, naming the first dataset ``named`` that ``grants`` (dataset ->
        expiry as a POSIX time, None for no expiry) do not cover now."""
        now = datetime.now(UTC).timestamp()
        for dataset in sorted(named):
            if dataset not in grants:
                raise Forbidden(
                    f"{what} uses dataset {dataset!r}, which you hold no access grant for"
                )
            expires = grants[dataset]
            if expires is not None and expires <= now:
                raise Forbidden(f"{what} uses dataset {dataset!r}, and your grant for it expired")
