"""Resolving a run's CWL input object against its attachments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["InputError", "absolutise_inputs"]


class InputError(ValueError):
    """An input names a relative location that leaves the run's attachments."""


def absolutise_inputs(params: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of ``params`` whose relative File/Directory locations point into ``base``.

    WES says relative input URLs name attachments; resolving them here (instead of relative to
    wherever the engine writes its job file) keeps them inside the run, and a ``..`` that would
    leave it is refused.
    """
    root = os.path.realpath(base)

    def resolve(value: str, key: str) -> str:
        parts = urlsplit(value)
        if parts.scheme or value.startswith("/"):
            return value
        target = os.path.realpath(os.path.join(root, unquote(value)))
        if target != root and not target.startswith(root + os.sep):
            raise InputError(f"input {key} {value!r} points outside the run's attachments")
        return Path(target).as_uri()

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        copy = {k: walk(v) for k, v in node.items()}
        if copy.get("class") in ("File", "Directory"):
            for key in ("location", "path"):
                if isinstance(copy.get(key), str):
                    copy[key] = resolve(copy[key], key)
        return copy

    result = walk(params)
    assert isinstance(result, dict)
    return result
