"""The run's outputs from miniwdl's: files into the outputs directory, File objects in the log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import WDL

from wes_bridge.plugin import describe_outputs, link_or_copy

__all__ = ["collect_outputs"]


def collect_outputs(
    document: Path, values: dict[str, Any], outputs_dir: Path, run_dir: Path
) -> dict[str, Any]:
    """``values`` (miniwdl's outputs JSON) with each File and Directory copied (hard-linked
    where possible) into ``outputs_dir`` and described; a path outside ``run_dir`` (miniwdl's
    run directory) is never published."""
    doc = WDL.load(str(document), path=[str(document.parent)])
    target: Any = doc.workflow or (doc.tasks[0] if len(doc.tasks) == 1 else None)
    types: dict[str, WDL.Type.Base] = {}
    if target is not None:
        for binding in target.effective_outputs:
            types[f"{target.name}.{binding.name}"] = binding.value
    collector = _Collector(outputs_dir, run_dir.resolve())
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = key.split(".", 1)[1] if "." in key else key
        result[key] = collector.convert(value, types.get(key), [_safe(name)])
    return result


class _Collector:
    def __init__(self, outputs_dir: Path, run_dir: Path) -> None:
        self.outputs_dir = outputs_dir
        self.run_dir = run_dir

    def convert(self, value: Any, ty: WDL.Type.Base | None, folders: list[str]) -> Any:
        if value is None or ty is None:
            return value
        if isinstance(ty, WDL.Type.File | WDL.Type.Directory) and isinstance(value, str):
            return self._publish(Path(value), folders, isinstance(ty, WDL.Type.Directory))
        if isinstance(ty, WDL.Type.Array) and isinstance(value, list):
            return [
                self.convert(item, ty.item_type, [*folders, str(i)]) for i, item in enumerate(value)
            ]
        if isinstance(ty, WDL.Type.Map) and isinstance(value, dict):
            return {
                k: self.convert(v, ty.item_type[1], [*folders, _safe(str(k))])
                for k, v in value.items()
            }
        if isinstance(ty, WDL.Type.Pair) and isinstance(value, dict):
            return {
                "left": self.convert(value.get("left"), ty.left_type, [*folders, "left"]),
                "right": self.convert(value.get("right"), ty.right_type, [*folders, "right"]),
            }
        if isinstance(ty, WDL.Type.StructInstance) and isinstance(value, dict):
            members = ty.members or {}
            return {
                k: self.convert(v, members.get(k), [*folders, _safe(k)]) for k, v in value.items()
            }
        return value

    def _publish(self, source: Path, folders: list[str], directory: bool) -> Any:
        real = source.resolve()
        if not real.is_relative_to(self.run_dir) or not real.exists():
            # An input passed through unchanged, or a path miniwdl did not make: described by
            # where it is, not copied among the run's results.
            return {"class": "Directory" if directory else "File", "path": str(source)}
        rel = Path(*folders, real.name)
        target = self.outputs_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            for dirpath, _dirs, files in os.walk(real):
                for name in files:
                    file = Path(dirpath) / name
                    if file.is_symlink():
                        continue
                    dest = target / file.relative_to(real)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    link_or_copy(file, dest)
            return {
                "class": "Directory",
                "location": target.absolute().as_uri(),
                "path": str(target.absolute()),
                "basename": target.name,
            }
        if target.exists():
            target.unlink()
        link_or_copy(real, target)
        return describe_outputs(self.outputs_dir, [rel.as_posix()])[rel.as_posix()]


def _safe(name: str) -> str:
    """A folder name from a WDL name or map key: no separators, never ``.`` or ``..``."""
    text = name.replace(os.sep, "_").replace("\0", "_")
    return text if text not in ("", ".", "..") else f"_{text}_"
