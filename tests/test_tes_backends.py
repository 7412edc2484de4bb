"""The embedded TES's execution backends: path mapping on the host, container command lines."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.tes.backends import DockerBackend, PathMap, declared_paths, make_backend
from wes_bridge.tes.models import TesTask

from .conftest import free_port
from .test_tes import TES, TesClient


def _task(**extra: Any) -> TesTask:
    return TesTask.model_validate(
        {"executors": [{"image": "alpine", "command": ["cat", "/data/in.txt"]}], **extra}
    )


def test_host_paths_are_rewritten_only_where_they_are_whole_paths(tmp_path: Path) -> None:
    task = _task(
        inputs=[{"path": "/data/in.txt", "content": "x"}],
        outputs=[{"path": "/results/out.txt", "url": "file:///tmp/x"}],
        volumes=["/scratch"],
    )
    paths = PathMap(tmp_path / "root", declared_paths(task))
    root = str(tmp_path / "root")
    assert paths.rewrite("/data/in.txt") == f"{root}/data/in.txt"
    assert paths.rewrite("--in=/data/in.txt,/scratch/x") == (
        f"--in={root}/data/in.txt,{root}/scratch/x"
    )
    # /data does not exist on the host, so it is mapped too (ls /data works).
    assert paths.rewrite("ls /data") == f"ls {root}/data"
    assert paths.rewrite("cat /data/in.txt > /results/out.txt") == (
        f"cat {root}/data/in.txt > {root}/results/out.txt"
    )
    # Not a declared path: left alone, as are paths that only end with one.
    assert paths.rewrite("/usr/bin/env") == "/usr/bin/env"
    assert paths.rewrite("/x/data/in.txt") == "/x/data/in.txt"
    # Everything under /data is the task's: /data is not a directory of this host.
    assert paths.rewrite("/data/in.txt.bak") == f"{root}/data/in.txt.bak"
    assert paths.rewrite("/scratchpad") == "/scratchpad"


def test_host_paths_that_exist_on_the_host_are_not_mapped_as_parents(tmp_path: Path) -> None:
    task = _task(outputs=[{"path": "/tmp/result.txt", "url": "file:///tmp/x"}])
    paths = PathMap(tmp_path / "root", declared_paths(task))
    assert "/tmp" not in paths.rewrite_set()  # the host's /tmp stays the host's /tmp
    assert paths.rewrite("/tmp/result.txt") == f"{tmp_path}/root/tmp/result.txt"
    assert paths.rewrite("/tmp/other") == "/tmp/other"
    assert paths.rewrite("/tmp/result.txt.bak") == "/tmp/result.txt.bak"


def test_docker_command_mounts_the_task_and_overrides_the_entrypoint(tmp_path: Path) -> None:
    task = _task(
        inputs=[{"path": "/data/in.txt", "content": "x"}],
        volumes=["/scratch"],
        executors=[
            {
                "image": "quay.io/biocontainers/samtools:1.19",
                "command": ["samtools", "view", "/data/in.txt"],
                "workdir": "/scratch",
                "env": {"A": "1"},
                "stdin": "/data/in.txt",
            }
        ],
    )
    root = tmp_path / "root"
    for sub in ("data", "scratch", "usr"):
        (root / sub).mkdir(parents=True)
    backend = make_backend("podman")
    assert isinstance(backend, DockerBackend)
    command = backend.command(
        "t1", 0, task.executors[0], PathMap(root, declared_paths(task)), tmp_path
    )
    argv = command.argv
    assert argv[:5] == ["podman", "run", "--rm", "--name", "wes-bridge-t1-0"]
    assert "-i" in argv
    assert argv[argv.index("--workdir") + 1] == "/scratch"
    assert argv[argv.index("--env") + 1] == "A=1"
    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    assert volumes == [f"{root}/data:/data", f"{root}/scratch:/scratch"]  # never over /usr
    # TES's command is the argv: its first word replaces the image's entrypoint.
    assert argv[-5:] == [
        "--entrypoint",
        "samtools",
        "quay.io/biocontainers/samtools:1.19",
        "view",
        "/data/in.txt",
    ]
    assert command.container_name == "wes-bridge-t1-0"
    # The container paths are not rewritten: the runtime mounts them.
    assert "/data/in.txt" in argv


def test_apptainer_command(tmp_path: Path) -> None:
    task = _task(inputs=[{"path": "/data/in.txt", "content": "x"}])
    (tmp_path / "root" / "data").mkdir(parents=True)
    backend = make_backend("apptainer", "apptainer")
    command = backend.command(
        "t2", 1, task.executors[0], PathMap(tmp_path / "root", declared_paths(task)), tmp_path
    )
    assert command.argv[:4] == ["apptainer", "exec", "--containall", "--cleanenv"]
    assert f"{tmp_path}/root/data:/data" in command.argv
    assert command.argv[-3:] == ["docker://alpine", "cat", "/data/in.txt"]


def test_unusable_container_runtime_is_said_and_tasks_fail_fast(tmp_path: Path) -> None:
    # A runtime command that cannot work here: the node says so and refuses to pretend.
    settings = load_settings(
        port=free_port(),
        data_dir=tmp_path / "data",
        tes={"backend": "docker", "container_binary": "no-such-container-runtime"},
    )
    with TesClient(create_app(settings)) as tes:
        info = tes.get(f"{TES}/service-info").json()
        assert "NOT usable here: no-such-container-runtime is not on PATH" in info["description"]
        task_id = tes.create({"executors": [{"image": "alpine", "command": ["true"]}]})
        task = tes.task_doc(task_id)
        assert task["state"] == "SYSTEM_ERROR"
        assert "docker backend is not usable here" in task["logs"][0]["system_logs"][-1]


def _runtime() -> str | None:
    for name in ("docker", "podman"):
        if shutil.which(name) and make_backend(name).available()[0]:
            return name
    return None


@pytest.mark.skipif(_runtime() is None, reason="no working docker or podman on this machine")
def test_a_real_container_runs_the_task(tmp_path: Path) -> None:
    runtime = _runtime()
    assert runtime is not None
    out = tmp_path / "out"
    out.mkdir()
    settings = load_settings(
        port=free_port(),
        data_dir=tmp_path / "data",
        tes={"backend": runtime, "output_roots": [str(out)]},
    )
    with TesClient(create_app(settings)) as tes:
        task_id = tes.create(
            {
                "inputs": [{"path": "/data/in.txt", "content": "in a container\n"}],
                "outputs": [{"path": "/out/copy.txt", "url": (out / "copy.txt").as_uri()}],
                "executors": [
                    {"image": "alpine", "command": ["cp", "/data/in.txt", "/out/copy.txt"]}
                ],
            }
        )
        assert tes.wait_task(task_id, timeout=300)["state"] == "COMPLETE"
        assert (out / "copy.txt").read_text() == "in a container\n"
