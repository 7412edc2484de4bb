"""Execution backends of the embedded TES: how one executor of a task is started.

Every task has a directory on the host; its ``root/`` holds what the task sees at its container
paths (``/data/in.txt`` is ``root/data/in.txt``).

* **host** (default): the executor runs on this machine as the server's user. There is no
  container, so the image is recorded but not used, and the container paths the task declared
  (its inputs, outputs, volumes, executor workdir and redirections, and their parent
  directories that do not exist on the host) are rewritten to their place under ``root/``
  wherever they appear, whole or inside an argument, in the command and in the environment.
  Service-info and each task's ``system_logs`` say so.
* **host-sandbox**: as ``host`` (same path mapping, no image), but each executor runs inside
  bubblewrap (``bwrap``) in mount, PID, IPC and UTS namespaces of its own, with no
  capabilities: it sees the host's system directories and the tool locations the engines need
  (the node's Python, ``PATH``, ``JAVA_HOME``, the Nextflow installation) read-only, its
  task's ``root/`` and ``tmp/`` read-write, the run's directory (tasks tagged ``wes_run_id``
  with a run of the same user), its in-place inputs read-only and in-place outputs read-write
  at their own paths, and a private ``/tmp``, ``/proc`` and ``/dev``: nothing else of the data
  dir (other runs, other tasks, the database, keys).
* **docker / podman**: ``run --rm`` of the executor's image with the task's directories mounted
  at their container paths; the exact TES semantics.
* **apptainer / singularity**: ``exec --containall`` of ``docker://IMAGE`` with the same binds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .models import TesExecutor, TesTask, has_wildcards
from .paths import local_path

__all__ = [
    "SANDBOX_PACKAGE",
    "Backend",
    "BackendUnavailable",
    "ExecutorCommand",
    "PathMap",
    "SandboxBackend",
    "SandboxPolicy",
    "in_place_paths",
    "make_backend",
]

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


class BackendUnavailable(RuntimeError):
    """The configured backend cannot work on this machine and the node must not start."""


SANDBOX_PACKAGE = "bubblewrap"
# Host directories every sandboxed executor sees, read-only (those that exist).
_SANDBOX_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Python packages whose source a task may import (Toil's workers, Snakemake's jobs): their
# locations are visible even when they are installed in place (editable) outside the venv.
_SANDBOX_PACKAGES = (
    "wes_bridge",
    "toil_wes_bridge",
    "snakemake_executor_plugin_wes_bridge",
    "wes_bridge_cwltool",
    "wes_bridge_toil",
    "wes_bridge_snakemake",
    "wes_bridge_nextflow",
)


@dataclass(frozen=True)
class SandboxPolicy:
    """What the scheduler tells a sandboxed task's runner beyond the task itself."""

    data_dir: Path
    hidden: tuple[Path, ...] = ()
    """Directories never shown unless declared: the input and output roots."""
    run_dir: Path | None = None
    """The directory of the run the task belongs to (its ``wes_run_id``, same user)."""
    network: bool = True
    read_only: tuple[Path, ...] = ()
    """More host paths to show read-only (``tes.sandbox_read_only``)."""


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _under(path: Path, parent: Path) -> bool:
    """``path`` is ``parent`` or inside it."""
    return path == parent or parent in path.parents


def sandbox_system_paths(extra: tuple[Path, ...] = ()) -> list[Path]:
    """Host paths a sandboxed executor sees read-only (before the data dir is taken out)."""
    found: list[str] = [p for p in _SANDBOX_SYSTEM if os.path.lexists(p)]
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    found += sorted(prefixes)
    found.append(str(_real(sys.executable).parent.parent))
    found += [p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)]
    found += [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.isabs(p)]
    for name in _SANDBOX_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            found.append(str(Path(spec.origin).parent.parent))
    found += [str(p) for p in extra]
    result: list[Path] = []
    for text in found:
        if os.path.isdir(text) or os.path.isfile(text):
            path = Path(os.path.normpath(text))
            if path != Path("/") and path not in result:
                result.append(path)
    return result


@dataclass
class _Mount:
    kind: str  # "ro" | "rw" | "symlink" | "tmpfs"
    path: Path
    source: str = ""

    def argv(self) -> list[str]:
        if self.kind == "tmpfs":
            return ["--tmpfs", str(self.path)]
        if self.kind == "symlink":
            return ["--symlink", self.source, str(self.path)]
        flag = "--ro-bind" if self.kind == "ro" else "--bind"
        return [flag, self.source or str(self.path), str(self.path)]


class SandboxRefused(ValueError):
    """A task asks to see what the sandbox never shows."""


class SandboxBackend(Backend):
    """``host`` inside bubblewrap: see the module docstring."""

    name = "host-sandbox"

    def __init__(self, binary: str | None = None, network: bool = True) -> None:
        self.binary = binary or "bwrap"
        self.network = network
        self.mounts: list[_Mount] = []
        self.visible: dict[str, list[str]] = {"rw": [], "ro": []}

    def describe(self) -> str:
        net = "with" if self.network else "without"
        return (
            "sandboxed host execution: executors run on this machine without a container, "
            "each inside a bubblewrap sandbox (bwrap; no capabilities; own mount, PID, IPC and "
            f"UTS namespaces; {net} network), as the host backend otherwise: the image is "
            "recorded but not used, and container paths are mapped under the task directory. "
            "A task sees the host's system, Python and tool directories read-only, its own "
            "task directory, its run's directory (tasks tagged wes_run_id by a run of the same "
            "user), its in-place file:// inputs read-only and in-place outputs read-write, "
            "and a private /tmp, /proc and /dev; nothing else of the data dir (no other run, "
            "no other task, not the database)"
        )

    def available(self) -> tuple[bool, str]:
        path = shutil.which(self.binary)
        if path is None:
            return False, (
                f"{self.binary} is not on PATH: install the {SANDBOX_PACKAGE} package "
                f"(apt-get install {SANDBOX_PACKAGE})"
            )
        probe = [path, *self._base_args(), *self._system_args([]), "--", "true"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{self.binary} failed: {exc}"
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["failed"]
            return False, f"{self.binary} cannot make a sandbox here: {why[0]}"
        return True, f"{self.binary} works"

    def _base_args(self) -> list[str]:
        args = ["--die-with-parent", "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc"]
        args += ["--unshare-uts", "--unshare-cgroup-try"]
        if not self.network:
            args.append("--unshare-net")
        # A private /tmp: the sandbox's own tmpfs, not the host's directory.
        return [*args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108

    @staticmethod
    def _system_args(system: list[Path]) -> list[str]:
        args: list[str] = []
        for mount in _system_mounts(system or sandbox_system_paths(), []):
            args += mount.argv()
        return args

    def prepare(self, task: TesTask, paths: PathMap, task_dir: Path, policy: SandboxPolicy) -> None:
        """Work out what this task's executors see; :class:`SandboxRefused` if it asks for
        what the sandbox never shows."""
        data = _real(policy.data_dir)
        own = [_real(paths.root), _real(task_dir / "tmp")]
        run_dir = _real(policy.run_dir) if policy.run_dir is not None else None
        allowed = [*own, *([run_dir] if run_dir else [])]

        def check(path: Path, what: str) -> Path:
            real = _real(path)
            if _under(data, real):
                raise SandboxRefused(f"{what}: {path} holds the whole data dir")
            if _under(real, data) and not any(_under(real, a) for a in allowed):
                raise SandboxRefused(
                    f"{what}: {path} is in the data dir but not in this task's run or task "
                    "directory; the sandbox shows a task nothing else of it"
                )
            return real

        # Every file:// input and output in the data dir must be the task's run's own (the
        # runner copies and delivers them outside the sandbox).
        for item in task.inputs or []:
            local = _file_url(item.url)
            if local is not None:
                check(local, f"input {item.path}")
        for out in task.outputs or []:
            local = _file_url(out.url)
            if local is not None:
                check(local, f"output {out.path}")
        rw: list[tuple[Path, Path]] = [(p, p) for p in own]
        if run_dir is not None:
            rw.append((run_dir, run_dir))
        ro: list[tuple[Path, Path]] = []
        links: list[tuple[str, Path]] = []
        for out in task.outputs or []:
            if out.path in paths.in_place:
                where = Path(out.path) if out.type == "DIRECTORY" else Path(out.path).parent
                real = check(where, f"output {out.path}")
                rw.append((real, real))
        for item in task.inputs or []:
            if item.path in paths.in_place:
                real = check(Path(item.path), f"input {item.path}")
                ro.append((real, real))
                if os.path.islink(item.path):
                    links.append((os.readlink(item.path), Path(os.path.normpath(item.path))))
        system = [
            p
            for p in sandbox_system_paths(policy.read_only)
            if not _under(_real(p), data)  # nothing inside the data dir, ever
        ]
        hide = [data, *(_real(h) for h in policy.hidden)]
        mounts = _system_mounts(system, hide)
        task_mounts = [_Mount("rw", t, str(s)) for s, t in rw]
        task_mounts += [_Mount("ro", t, str(s)) for s, t in ro]
        # Parents before children; at the same path read-only last, so it wins.
        task_mounts.sort(key=lambda m: (len(m.path.parts), m.kind == "ro"))
        mounts += _dedupe(task_mounts)
        for target, link in links:
            # The link is there if the mount that shows its directory is a bind (not a
            # tmpfs hiding a root, nor nothing).
            holders = [m for m in mounts if m.kind != "symlink" and _under(link.parent, m.path)]
            holder = max(holders, key=lambda m: len(m.path.parts), default=None)
            if holder is None or holder.kind == "tmpfs":
                mounts.append(_Mount("symlink", link, target))
        self.mounts = mounts
        self.visible = {
            "rw": [str(m.path) for m in task_mounts if m.kind == "rw"],
            "ro": [str(m.path) for m in task_mounts if m.kind == "ro"],
        }

    def summary(self) -> str:
        rw = ", ".join(sorted(set(self.visible["rw"]))) or "none"
        ro = ", ".join(sorted(set(self.visible["ro"]))) or "none"
        system = ", ".join(
            str(m.path)
            for m in self.mounts
            if m.kind == "ro" and str(m.path) not in self.visible["ro"]
        )
        return (
            f"sandbox: the executors see read-write {rw}; read-only {ro}; and the system "
            f"directories {system} read-only; network {'on' if self.network else 'off'}"
        )

    def command(
        self, task_id: str, index: int, executor: TesExecutor, paths: PathMap, tmp: Path
    ) -> ExecutorCommand:
        inner = super().command(task_id, index, executor, paths, tmp)
        argv = [self.binary, *self._base_args()]
        for mount in self.mounts:
            argv += mount.argv()
        # Through the shell's exec, so a command that is not there exits 127 as on the host
        # (bwrap itself would exit 1).
        argv += ["--chdir", str(inner.cwd), "--", "/bin/sh", "-c", 'exec "$@"', "sh"]
        argv += inner.argv
        return ExecutorCommand(argv, inner.cwd, inner.env)


def _file_url(url: str | None) -> Path | None:
    if not url or not url.startswith("file:"):
        return None
    try:
        return local_path(url)
    except ValueError:
        return None


def _dedupe(mounts: list[_Mount]) -> list[_Mount]:
    seen: set[tuple[str, Path]] = set()
    kept: list[_Mount] = []
    for mount in mounts:
        if (mount.kind, mount.path) not in seen:
            seen.add((mount.kind, mount.path))
            kept.append(mount)
    return kept


def _system_mounts(system: list[Path], hide: list[Path]) -> list[_Mount]:
    """Read-only binds of the system paths (each once, the covered ones left out), then a
    tmpfs over each of ``hide`` that one of them would show."""
    mounts: list[_Mount] = []
    binds: list[Path] = []
    for path in system:
        top = len(path.parts) == 2
        if top and path.is_symlink():
            mounts.append(_Mount("symlink", path, os.readlink(path)))
            continue
        real = _real(path)
        if real not in binds:
            binds.append(real)
        if path != real and path.is_symlink() and not top:
            mounts.append(_Mount("symlink", path, str(real)))
    binds.sort(key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in binds:
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    ordered = [_Mount("ro", p) for p in kept]
    # A symlink inside a bound directory is already there.
    links = [m for m in mounts if not any(_under(m.path, k) for k in kept)]
    ordered += links
    for path in hide:
        if any(_under(path, k) and path != k for k in kept) and os.path.isdir(path):
            ordered.append(_Mount("tmpfs", path))
    return ordered


def make_backend(kind: str, binary: str | None = None, *, sandbox_network: bool = True) -> Backend:
    if kind == "host":
        return Backend()
    if kind == "host-sandbox":
        return SandboxBackend(binary, network=sandbox_network)
    if kind in ("docker", "podman"):
        return DockerBackend(kind, binary)
    if kind in ("apptainer", "singularity"):
        return ApptainerBackend(kind, binary)
    raise ValueError(f"unknown TES backend {kind!r}")
