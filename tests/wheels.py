"""Wheels of tiny one-module projects, and pip installs of them, for the plugin tests.

The wheel is made here with the standard library from the project's ``pyproject.toml`` (name,
version, dependencies, entry points, ``tool.setuptools.py-modules``): setuptools would need the
``wheel`` package or a download of its own, neither of which a test can count on. The install
is pip's, with ``--target``, so the result is an installed distribution like any other.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path


def build_wheel(project: Path, out_dir: Path) -> Path:
    """A ``py3-none-any`` wheel of ``project`` in ``out_dir``."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    info = meta["project"]
    name, version = info["name"], info["version"]
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"
    dist_info = f"{stem}.dist-info"
    files: dict[str, bytes] = {
        f"{module}.py": (project / f"{module}.py").read_bytes()
        for module in meta["tool"]["setuptools"]["py-modules"]
    }
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {d}\n" for d in info.get("dependencies", []))
    files[f"{dist_info}/METADATA"] = metadata.encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests/wheels.py\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    groups = info.get("entry-points", {})
    files[f"{dist_info}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
        for group, points in groups.items()
    ).encode()
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(content)}\n")
    record.append(f"{dist_info}/RECORD,,\n")
    files[f"{dist_info}/RECORD"] = "".join(record).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return wheel


def pip_install(projects: list[Path], target: Path) -> Path:
    """Build each project's wheel and pip-install them all into ``target``."""
    wheels = [build_wheel(p, target.parent / "wheels") for p in projects]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--disable-pip-version-check", "--target", str(target)]
        + [str(w) for w in wheels],
        check=True,
        capture_output=True,
    )
    return target
