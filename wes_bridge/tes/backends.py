"""Execution backends of the embedded TES: how one executor of a task is started.

Every task has a directory on the host; its ``root/`` holds what the task sees at its container
paths (``/data/in.txt`` is ``root/data/in.txt``).

* **host** (default): the executor runs on this machine as the server's user. There is no
  container, so the image is recorded but not used, and the container paths the task declared
  (its inputs, outputs, volumes, executor workdir and redirections, and their parent
  directories that do not exist on the host) are rewritten to their place under ``root/``
  wherever they appear, whole or inside an argument, in the command and in the environment.
  Service-info and each task's ``system_logs`` say so.
* **docker / podman**: ``run --rm`` of the executor's image with the task's directories mounted
  at their container paths; the exact TES semantics.
* **apptainer / singularity**: ``exec --containall`` of ``docker://IMAGE`` with the same binds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .models import TesExecutor, TesTask, has_wildcards
from .paths import local_path

__all__ = ["Backend", "ExecutorCommand", "PathMap", "in_place_paths", "make_backend"]

# Top-level directories of a container image that a task directory must never be mounted over.
_SYSTEM_TOPS = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin", "sys", "usr", "var"}
)


def declared_paths(task: TesTask) -> set[str]:
    """Every container path a task names."""
    paths: set[str] = set()
    for item in task.inputs or []:
        paths.add(item.path)
    for out in task.outputs or []:
        if has_wildcards(out.path):
            paths.add(out.path_prefix.rstrip("/") if out.path_prefix else "")
        else:
            paths.add(out.path)
    paths.update(task.volumes or [])
    for ex in task.executors:
        paths.update(p for p in (ex.workdir, ex.stdin, ex.stdout, ex.stderr) if p)
    paths.discard("")
    return paths


def in_place_paths(task: TesTask) -> set[str]:
    """Paths a task names as itself: a ``file://`` input or output whose container path is
    the host path of its URL. On the host backend such a path is used where it is (nothing is
    staged, delivered or rewritten), which is what a client sharing this file system and
    running without containers (cwltool's host layout, Snakemake's shared mode) asks for."""
    same: set[str] = set()
    pairs = [(i.url, i.path) for i in task.inputs or []]
    pairs += [(o.url, o.path) for o in task.outputs or []]
    for url, path in pairs:
        if not url or not url.startswith("file://") or has_wildcards(path):
            continue
        try:
            local = local_path(url)
        except ValueError:
            continue
        if local is not None and os.path.normpath(local) == os.path.normpath(path):
            same.add(os.path.normpath(path))
    return same


@dataclass
class PathMap:
    """Container paths of one task and where they live on the host."""

    root: Path
    declared: set[str]
    in_place: set[str] = field(default_factory=set)
    """Declared paths that are the same path on the host (see :func:`in_place_paths`)."""
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def is_in_place(self, container_path: str) -> bool:
        path = os.path.normpath(container_path)
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.in_place)

    def host(self, container_path: str) -> Path:
        if self.is_in_place(container_path):
            return Path(container_path)
        return self.root / container_path.lstrip("/")

    def rewrite_set(self) -> list[str]:
        """Declared paths and their ancestors that do not exist on this host, longest first;
        paths used in place are not rewritten."""
        moved = {p for p in self.declared if not self.is_in_place(p)}
        names = set(moved)
        for path in moved:
            for parent in PurePosixPath(path).parents:
                text = str(parent)
                if text != "/" and not os.path.lexists(text):
                    names.add(text)
        return sorted(names, key=len, reverse=True)

    def rewrite(self, text: str) -> str:
        """``text`` with each declared container path replaced by its host path."""
        if self._pattern is None:
            names = self.rewrite_set()
            if not names:
                return text
            alternation = "|".join(re.escape(n) for n in names)
            self._pattern = re.compile(rf"(?<![\w.\-/])(?:{alternation})(?![\w.\-])")
        return self._pattern.sub(lambda m: str(self.host(m.group(0))), text)


@dataclass
class ExecutorCommand:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    container_name: str | None = None


class Backend:
    name = "host"
    uses_images = False

    def describe(self) -> str:
        return (
            "host execution: executors run on this machine without a container; the image is "
            "recorded but not used, and container paths are mapped under the task directory"
        )

    def available(self) -> tuple[bool, str]:
        return True, "always available"

    def command(
        self, task_id: str, index: int, executor: TesExecutor, paths: PathMap, tmp: Path
    ) -> ExecutorCommand:
        cwd = paths.host(executor.workdir) if executor.workdir else paths.root
        env = _base_env(tmp)
        env.update({k: paths.rewrite(v) for k, v in (executor.env or {}).items()})
        return ExecutorCommand([paths.rewrite(arg) for arg in executor.command], cwd, env)

    def cleanup(self, command: ExecutorCommand) -> None:
        """Stop what the executor left running outside the runner's process group."""


def _base_env(tmp: Path) -> dict[str, str]:
    # A clean environment: nothing of the server's (its credentials least of all) leaks in.
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(tmp),
        "TMPDIR": str(tmp),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    return env


class _ContainerBackend(Backend):
    uses_images = True

    def __init__(self, name: str, binary: str | None) -> None:
        self.name = name
        self.binary = binary or name

    def describe(self) -> str:
        return f"container execution with {self.name} ({self.binary})"

    def available(self) -> tuple[bool, str]:
        path = shutil.which(self.binary)
        if path is None:
            return False, f"{self.binary} is not on PATH"
        probe = [path, "info"] if self.name in ("docker", "podman") else [path, "--version"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{' '.join(probe)} failed: {exc}"
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["failed"]
            return False, f"{' '.join(probe)}: {why[0]}"
        return True, f"{self.binary} works"

    def mounts(self, paths: PathMap) -> list[tuple[Path, str]]:
        """Host directory -> container path binds: one per top-level directory of the task."""
        binds: list[tuple[Path, str]] = []
        if not paths.root.exists():
            return binds
        for entry in sorted(paths.root.iterdir()):
            if entry.name not in _SYSTEM_TOPS:
                binds.append((entry, "/" + entry.name))
        # Paths under system directories are bound one by one.
        for path in sorted(paths.declared):
            top = PurePosixPath(path).parts[1] if len(PurePosixPath(path).parts) > 1 else ""
            if top in _SYSTEM_TOPS and paths.host(path).exists():
                binds.append((paths.host(path), path))
        return binds


class DockerBackend(_ContainerBackend):
    def command(
        self, task_id: str, index: int, executor: TesExecutor, paths: PathMap, tmp: Path
    ) -> ExecutorCommand:
        name = f"wes-bridge-{task_id}-{index}"
        argv = [self.binary, "run", "--rm", "--name", name]
        if executor.stdin:
            argv.append("-i")
        if executor.workdir:
            argv += ["--workdir", executor.workdir]
        for key, value in (executor.env or {}).items():
            argv += ["--env", f"{key}={value}"]
        for host, container in self.mounts(paths):
            argv += ["--volume", f"{host}:{container}"]
        argv += ["--entrypoint", executor.command[0], executor.image, *executor.command[1:]]
        return ExecutorCommand(argv, paths.root, _base_env(tmp), container_name=name)

    def cleanup(self, command: ExecutorCommand) -> None:
        if command.container_name:
            subprocess.run(
                [self.binary, "rm", "-f", command.container_name],
                capture_output=True,
                timeout=60,
                check=False,
            )


class ApptainerBackend(_ContainerBackend):
    def command(
        self, task_id: str, index: int, executor: TesExecutor, paths: PathMap, tmp: Path
    ) -> ExecutorCommand:
        argv = [self.binary, "exec", "--containall", "--cleanenv"]
        if executor.workdir:
            argv += ["--pwd", executor.workdir]
        for key, value in (executor.env or {}).items():
            argv += ["--env", f"{key}={value}"]
        for host, container in self.mounts(paths):
            argv += ["--bind", f"{host}:{container}"]
        image = executor.image
        if "://" not in image and not image.endswith(".sif"):
            image = "docker://" + image
        argv += [image, *executor.command]
        return ExecutorCommand(argv, paths.root, _base_env(tmp))


def make_backend(kind: str, binary: str | None = None) -> Backend:
    if kind == "host":
        return Backend()
    if kind in ("docker", "podman"):
        return DockerBackend(kind, binary)
    if kind in ("apptainer", "singularity"):
        return ApptainerBackend(kind, binary)
    raise ValueError(f"unknown TES backend {kind!r}")
