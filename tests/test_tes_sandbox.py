"""The embedded TES's host-sandbox backend, with the real bubblewrap: a task sees its own
directory, its run's, what it declared and the system, and nothing else of the data dir."""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from wes_bridge_nextflow import find_nextflow, installation

from wes_bridge.app import create_app
from wes_bridge.config import load_settings
from wes_bridge.registry import EngineRegistry
from wes_bridge.supervisor_process import engine_sandbox_paths
from wes_bridge.tes.backends import BackendUnavailable, sandbox_system_paths

from .conftest import WES, SpecCheckedClient, free_port, nextflow_command
from .live_server import Server
from .spec_check import check_response, tes_api
from .test_tes import TES, TesClient, _Files
from .test_tes import test_echo_task_and_its_views as _echo_checks
from .test_tes import test_executor_errors_stop_unless_ignored as _error_checks
from .test_tes import test_inputs_executors_volumes_and_outputs as _io_checks
from .test_workflows_direct import _check_file, _expected
from .test_workflows_wes import _request, _tasks, _wait


def _require_bwrap() -> None:
    if shutil.which("bwrap") is None:
        message = "the host-sandbox backend needs bwrap (Debian package bubblewrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ", which CI must install")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    _require_bwrap()


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
    tes.app.state.node.tokens.seal("a user's token")  # type: ignore[attr-defined]
    assert (data / "auth.key").is_file()  # the node key (made at the first sealed token)
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
    """The loaded engines say what their tasks read (Nextflow: Java and its installation);
    the sandbox shows that, and nothing else of the node user's home."""
    jdk = tmp_path / "jdk"
    jdk.mkdir()
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    registry = EngineRegistry.from_entry_points()
    extra = engine_sandbox_paths(registry)
    assert jdk in extra
    home = installation(find_nextflow())
    if home is not None:  # scripts/install-nextflow's, under the home by default
        assert home in extra
    shown = sandbox_system_paths(extra)
    assert jdk in shown
    assert Path.home() not in shown
    assert jdk not in sandbox_system_paths()  # not a path of the sandbox by itself


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


# -- Toil, Snakemake and Nextflow under the sandbox, through a live `wes-bridge serve` ---------
SANDBOXED_RUNS = [
    ("cwl/hello", "toil"),
    ("snakemake/fanout", "snakemake"),
    ("nextflow/fanout", "nextflow"),
]

PROBE_CWL = """\
cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c]
inputs:
  script: {type: string, inputBinding: {position: 1}}
stdout: probe.txt
outputs:
  probe: {type: stdout}
"""


@pytest.fixture(scope="module")
def sandboxed_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[tuple[str, str], str]]]:
    """One `wes-bridge serve` with tes.backend host-sandbox, the runs of SANDBOXED_RUNS
    submitted to it at once."""
    _require_bwrap()  # before the autouse check, which runs after module fixtures
    server = Server(
        tmp_path_factory.mktemp("sandboxed-node") / "data",
        free_port(),
        env={"WES_BRIDGE_TES__BACKEND": "host-sandbox"},
    )
    server.start()
    try:
        ids = {}
        for case, engine in SANDBOXED_RUNS:
            if engine == "nextflow" and find_nextflow() is None:
                continue  # its test skips (fails in CI)
            data, files = _request(case, engine)
            response = server.request("POST", "/runs", data=data, files=files)
            assert response.status_code == 200, response.text
            ids[(case, engine)] = str(response.json()["run_id"])
        yield server, ids
    finally:
        server.stop(signal.SIGTERM)


def _tes_task(server: Server, tes_uri: str) -> dict[str, Any]:
    response = httpx.get(tes_uri, params={"view": "FULL"}, timeout=30)
    check_response(
        tes_api(),
        "GET",
        httpx.URL(tes_uri).path,
        response.status_code,
        response.content,
        response.headers.get("content-type", ""),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _shown_read_only(summary: str) -> list[str]:
    """The system directories a task's sandbox summary lists."""
    shown = summary.split("and the system directories ", 1)[1].split(" read-only; network")[0]
    return shown.split(", ")


@pytest.mark.integration
@pytest.mark.parametrize(("case", "engine"), SANDBOXED_RUNS)
def test_toil_snakemake_and_nextflow_run_in_the_sandbox(
    sandboxed_node: tuple[Server, dict[tuple[str, str], str]], case: str, engine: str
) -> None:
    server, ids = sandboxed_node
    if engine == "nextflow":
        nextflow_command()
    log = _wait(server, ids[(case, engine)], timeout=300)
    assert log["state"] == "COMPLETE", json.dumps(log["run_log"], indent=1)[-4000:]
    for output_id, want in _expected(case)["outputs"].items():
        got = log["outputs"][output_id]
        assert (got["checksum"], got["size"]) == (want["checksum"], want["size"]), output_id
        _check_file(Path(got["path"]), want)
    # Every TES task of the run (Nextflow's: the one Nextflow task) ran in the sandbox.
    uris = [t["tes_uri"] for t in _tasks(server, log["run_id"]) if t.get("tes_uri")]
    tasks = [_tes_task(server, uri) for uri in uris]
    assert tasks
    summaries = []
    for task in tasks:
        assert task["state"] == "COMPLETE"
        system_logs = task["logs"][-1]["system_logs"]
        summaries += [s for s in system_logs if s.startswith("sandbox: the executors see")]
    assert len(summaries) == len(tasks)
    if engine == "nextflow":
        # Nextflow ran from its installation, shown read-only, with a home of the run's own:
        # nothing else of the node user's home was there.
        [task] = tasks
        env = task["executors"][0]["env"]
        assert Path(env["HOME"]).is_relative_to(server.data_dir / "runs" / log["run_id"])
        assert env["NXF_HOME"] == env["HOME"]
        shown = _shown_read_only(summaries[0])
        home = installation(find_nextflow())
        if home is not None:  # shown itself, or within a directory shown (a source checkout)
            assert any(home.is_relative_to(p) for p in shown), shown
        assert str(Path.home()) not in shown


@pytest.mark.integration
def test_a_sandboxed_run_sees_its_own_run_and_not_another_or_the_node_files(
    sandboxed_node: tuple[Server, dict[tuple[str, str], str]],
) -> None:
    """A workflow's step names another run's output, the database and the node key: none is
    there; the data dir shows it its own run only."""
    server, ids = sandboxed_node
    other = _wait(server, ids[("snakemake/fanout", "snakemake")], timeout=300)
    assert other["state"] == "COMPLETE"
    theirs = Path(other["outputs"]["fanout.txt"]["path"])
    data = server.data_dir
    key = data / "auth.key"  # made by the node with tes.forward_user_token; here by hand
    if not key.exists():
        key.write_text("node-key-material\n")
        key.chmod(0o600)
    targets = [theirs, data / "wes-bridge.sqlite", key]
    assert all(t.is_file() for t in targets)  # there, on the host
    script = "; ".join(f"cat {t} 2>&1" for t in targets) + f"; echo runs: $(ls {data}/runs)"
    response = server.request(
        "POST",
        "/runs",
        data={
            "workflow_type": "CWL",
            "workflow_type_version": "v1.2",
            "workflow_url": "probe.cwl",
            "workflow_params": json.dumps({"script": script}),
            "workflow_engine": "cwltool",
        },
        files=[("workflow_attachment", ("probe.cwl", PROBE_CWL.encode()))],
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    log = _wait(server, run_id, timeout=120)
    assert log["state"] == "COMPLETE", json.dumps(log["run_log"], indent=1)[-4000:]
    probe = Path(log["outputs"]["probe"]["path"]).read_text()
    lines = probe.splitlines()
    for target, line in zip(targets, lines, strict=False):
        assert line == f"cat: {target}: No such file or directory", probe
    assert lines[len(targets)] == f"runs: {run_id}", probe
    assert "node-key-material" not in probe
    assert "SQLite format" not in probe
    assert theirs.read_text().splitlines()[0] not in probe
