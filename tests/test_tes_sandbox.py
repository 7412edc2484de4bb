"""The embedded TES's host-sandbox backend, with the real bubblewrap: a task sees its own
directory, its run's, what it declared and the system, and nothing else of the data dir."""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from wes_bridge_nextflow import find_nextflow, installation

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.tes.backends import BackendUnavailable, sandbox_system_paths

from .conftest import WES, SpecCheckedClient, free_port
from .test_tes import TES, TesClient, _Files
from .test_tes import test_echo_task_and_its_views as _echo_checks
from .test_tes import test_executor_errors_stop_unless_ignored as _error_checks
from .test_tes import test_inputs_executors_volumes_and_outputs as _io_checks


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    if shutil.which("bwrap") is None:
        message = "the host-sandbox backend needs bwrap (Debian package bubblewrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ", which CI must install")
        pytest.skip(message)


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    found = {name: tmp_path / name for name in ("in", "out")}
    for path in found.values():
        path.mkdir()
    return found


@pytest.fixture
def tes(tmp_path: Path, dirs: dict[str, Path]) -> Iterator[TesClient]:
    settings = load_settings(
        port=free_port(),
        data_dir=tmp_path / "data",
        url_fetch_allow_private=True,
        tes={
            "backend": "host-sandbox",
            "input_roots": [str(dirs["in"])],
            "output_roots": [str(dirs["out"])],
            # The test's whole directory is shown read-only, so the data dir and the roots
            # lie inside a directory the sandbox shows: they must still be taken out.
            "sandbox_read_only": [str(tmp_path)],
            "cpu_cores": 2,
            "cancel_grace_seconds": 2,
        },
    )
    with TesClient(create_app(settings)) as client:
        yield client


def _data_dir(tes: TesClient) -> Path:
    return Path(tes.app.state.node.settings.data_dir)  # type: ignore[attr-defined]


def _sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "alpine", "command": ["sh", "-c", script], **extra}


def test_service_info_and_system_logs_say_the_sandbox_is_on(tes: TesClient) -> None:
    info = tes.get(f"{TES}/service-info").json()
    assert "bubblewrap sandbox" in info["description"]
    assert "nothing else of the data dir" in info["description"]
    done = tes.wait_task(tes.create({"executors": [_sh("true")]}))
    assert done["state"] == "COMPLETE"
    logs = done["logs"][0]["system_logs"]
    assert any("bubblewrap sandbox" in line for line in logs)
    (summary,) = [line for line in logs if line.startswith("sandbox: the executors see")]
    assert "/root" in summary
    assert "network on" in summary


def test_a_task_sees_nothing_of_other_tasks_other_runs_or_the_database(
    tes: TesClient, dirs: dict[str, Path]
) -> None:
    data = _data_dir(tes)
    first = tes.create({"executors": [_sh("echo mine > /keep/secret.txt")], "volumes": ["/keep"]})
    assert tes.wait_task(first)["state"] == "COMPLETE"
    other_task = data / "tes" / "tasks" / first / "root" / "keep" / "secret.txt"
    assert other_task.read_text() == "mine\n"  # there, on the host
    other_run = data / "runs" / "someone-elses-run" / "work" / "secret.txt"
    other_run.parent.mkdir(parents=True)
    other_run.write_text("theirs\n")
    database = data / "wes-bridge.sqlite"
    assert database.is_file()
    undeclared = dirs["in"] / "undeclared.txt"
    undeclared.write_text("not asked for\n")
    (dirs["in"] / "asked.txt").write_text("asked for\n")
    targets = [other_task, other_run, database, data / "auth.key", undeclared]
    probes = [_sh(f"cat {t}", ignore_error=True) for t in targets]
    probes.append(_sh(f"ls {data}/runs {data}/tes/tasks", ignore_error=True))
    second = tes.create(
        {
            "inputs": [
                {"path": "/data/in.txt", "content": "inline\n"},
                {"path": "/data/asked.txt", "url": (dirs["in"] / "asked.txt").as_uri()},
            ],
            "executors": [
                *probes,
                _sh("cat /data/in.txt /data/asked.txt > /out/copy.txt"),
            ],
            "outputs": [{"path": "/out/copy.txt", "url": (dirs["out"] / "copy.txt").as_uri()}],
        }
    )
    done = tes.wait_task(second)
    assert done["state"] == "COMPLETE", done["logs"]
    logs = done["logs"][0]["logs"]
    for target, log in zip(targets, logs, strict=False):
        assert log["exit_code"] != 0, f"the sandbox let a task read {target}"
        assert "No such file or directory" in log["stderr"], log
        assert log["stdout"] == ""
    listing = logs[len(targets)]
    assert listing["exit_code"] != 0
    assert first not in listing["stdout"]
    assert "someone-elses-run" not in listing["stdout"]
    assert (dirs["out"] / "copy.txt").read_text() == "inline\nasked for\n"


def test_a_task_cannot_name_another_runs_files(tes: TesClient) -> None:
    data = _data_dir(tes)
    secret = data / "runs" / "another-run" / "outputs" / "result.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("theirs\n")
    task_id = tes.create(
        {
            "inputs": [{"path": "/data/x.txt", "url": secret.as_uri()}],
            "executors": [_sh("cat /data/x.txt")],
        }
    )
    done = tes.wait_task(task_id)
    assert done["state"] == "SYSTEM_ERROR"
    assert any("refused by the sandbox" in s for s in done["logs"][0]["system_logs"])
    assert not done["logs"][0]["logs"]  # no executor ran
    assert not (data / "tes" / "tasks" / task_id / "root" / "data" / "x.txt").exists()


def test_in_place_inputs_are_read_only_and_in_place_outputs_writable(
    tes: TesClient, dirs: dict[str, Path]
) -> None:
    source = dirs["in"] / "job" / "reads.txt"
    source.parent.mkdir()
    source.write_text("AC\nGT\n")
    link = dirs["in"] / "job" / "staged.txt"
    link.symlink_to(source)  # as cwltool stages inputs on the host
    outdir = dirs["out"] / "step1"
    task_id = tes.create(
        {
            "inputs": [
                {"path": str(source), "url": source.as_uri()},
                {"path": str(link), "url": link.as_uri()},
            ],
            "executors": [
                _sh(f"echo changed >> {source}", ignore_error=True),
                _sh(f"wc -l < {link} > {outdir}/count.txt && cat {source} > {outdir}/copy.txt"),
            ],
            "outputs": [
                {"path": str(outdir), "url": outdir.as_uri(), "type": "DIRECTORY"},
            ],
        }
    )
    done = tes.wait_task(task_id)
    assert done["state"] == "COMPLETE", json.dumps(done["logs"], indent=1)
    assert done["logs"][0]["logs"][0]["exit_code"] != 0  # read-only
    assert "Read-only file system" in done["logs"][0]["logs"][0]["stderr"]
    assert source.read_text() == "AC\nGT\n"
    assert (outdir / "count.txt").read_text().strip() == "2"
    assert (outdir / "copy.txt").read_text() == "AC\nGT\n"


def test_echo_io_and_errors_as_on_the_host(
    tes: TesClient, dirs: dict[str, Path], http_url: str
) -> None:
    _echo_checks(tes)
    _io_checks(tes, dirs, http_url)
    _error_checks(tes)


@pytest.fixture
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file.txt"
    server.shutdown()
    server.server_close()


def _sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", marker]:
            found.append(proc)
    return found


def test_cancel_kills_the_sandboxed_processes(tes: TesClient) -> None:
    marker = str(random.randint(100_000, 999_999))
    task_id = tes.create({"executors": [_sh(f"sleep {marker} & sleep {marker}; wait")]})
    tes.wait_task(task_id, {"RUNNING"})
    deadline = time.monotonic() + 10
    while len(_sleepers(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_sleepers(marker)) == 2
    assert tes.post(f"{TES}/tasks/{task_id}:cancel").json() == {}
    assert tes.wait_task(task_id)["state"] == "CANCELED"
    deadline = time.monotonic() + 5
    while _sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in _sleepers(marker) if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, "a sandboxed process survived the cancel"


def test_the_engines_tools_are_shown_and_no_more_of_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jdk = tmp_path / "jdk"
    jdk.mkdir()
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    shown = sandbox_system_paths()
    assert jdk in shown
    home = installation(find_nextflow())
    if home is not None:  # scripts/install-nextflow's, under the home by default
        assert home in shown
    assert Path.home() not in shown


def test_the_node_refuses_to_start_without_bwrap(tmp_path: Path) -> None:
    settings = load_settings(
        port=free_port(),
        data_dir=tmp_path / "data",
        tes={"backend": "host-sandbox", "container_binary": "no-such-bwrap"},
    )
    with pytest.raises(BackendUnavailable, match="apt-get install bubblewrap"):
        create_app(settings)


def test_a_cwl_workflow_runs_in_the_sandbox(tmp_path: Path) -> None:
    from .conftest import WORKFLOWS

    settings = load_settings(
        data_dir=tmp_path / "data",
        cancel_grace_seconds=2,
        port=free_port(),
        tes={"backend": "host-sandbox"},
    )
    root = WORKFLOWS / "cwl/pipeline"
    files = [
        (str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    ]
    with SpecCheckedClient(create_app(settings)) as client:
        response = client.submit(
            "",
            {"infile": {"class": "File", "location": "data.txt"}},
            attachments=files,
            workflow_url="workflow.cwl",
        )
        assert response.status_code == 200, response.text
        run_id = response.json()["run_id"]
        state = client.wait(run_id, timeout=240)
        log = client.get(f"{WES}/runs/{run_id}").json()
        assert state == "COMPLETE", json.dumps(log, indent=1)[-4000:]
        report = log["outputs"]["report"]
        assert Path(report["path"]).read_text() == "lines: 3\n"
        assert report["checksum"] == "sha1$4f8ad5eabee5e84e0ec3c7a452ff3b865732c58d"
        tasks = client.get(f"{WES}/runs/{run_id}/tasks").json()["task_logs"]
        assert sorted(t["name"] for t in tasks) == ["count", "report"]
        for task in tasks:
            task_id = task["tes_uri"].rsplit("/", 1)[-1]
            doc = client.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json()
            logs = doc["logs"][0]["system_logs"]
            assert any(line.startswith("sandbox: the executors see") for line in logs), logs
