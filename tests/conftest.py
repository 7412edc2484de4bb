from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from wes_bridge.app import create_app
from wes_bridge.config import Settings, load_settings

from .spec_check import check_response, tes_api, wes_api

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "test-workflows"
WES = "/ga4gh/wes/v1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def nextflow_command() -> str:
    """The `nextflow` the node would run. Missing, the test is skipped, but in CI (`CI` set,
    as .ci/run does) it fails: there every engine must really run."""
    from wes_bridge_nextflow import find_nextflow

    found = find_nextflow()
    if found is None:
        message = "no nextflow command: scripts/install-nextflow installs one (Java 17, Maven)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SpecCheckedClient(httpx.Client):
    """An app served for real (uvicorn in a thread, on its settings' port) and an HTTP client
    for it that checks every WES and TES response against the official documents.

    A real port, not an in-process transport: engine drivers submit their steps to the node's
    TES over HTTP, as they do in production.
    """

    checked = 0

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        port = app.state.node.settings.port
        super().__init__(base_url=f"http://127.0.0.1:{port}", timeout=60)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the test server did not start")
            time.sleep(0.01)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._server.should_exit = True
        self._thread.join(60)

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        response = super().request(method, url, *args, **kwargs)
        path = httpx.URL(str(url)).path
        for api in (wes_api(), tes_api()):
            if check_response(
                api,
                method,
                path,
                response.status_code,
                response.content,
                response.headers.get("content-type", ""),
            ):
                SpecCheckedClient.checked += 1
        return response

    def submit(
        self,
        workflow: Path | str,
        params: dict[str, Any] | None = None,
        attachments: list[tuple[str, bytes]] | None = None,
        **fields: str,
    ) -> httpx.Response:
        """POST /runs with a workflow file from test-workflows/ (or explicit attachments)."""
        import json

        files: list[tuple[str, tuple[str, bytes]]] = []
        data = {"workflow_type": "CWL", "workflow_type_version": "v1.2"}
        if attachments is None:
            path = WORKFLOWS / workflow
            attachments = [(path.name, path.read_bytes())]
            data["workflow_url"] = path.name
        for name, content in attachments:
            files.append(("workflow_attachment", (name, content)))
        if params is not None:
            data["workflow_params"] = json.dumps(params)
        data.update(fields)
        return self.post(f"{WES}/runs", data=data, files=files or None)

    def wait(self, run_id: str, timeout: float = 120, states: set[str] = TERMINAL) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.get(f"{WES}/runs/{run_id}/status").json()["state"]
            if state in states:
                return str(state)
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} still {state} after {timeout} s")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data", max_concurrent_runs=4, cancel_grace_seconds=2, port=free_port()
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[SpecCheckedClient]:
    app = create_app(settings)
    with SpecCheckedClient(app) as test_client:
        yield test_client


@pytest.fixture
def settings_one_slot_client(tmp_path: Path) -> Iterator[SpecCheckedClient]:
    settings = load_settings(
        data_dir=tmp_path / "data", max_concurrent_runs=1, cancel_grace_seconds=2, port=free_port()
    )
    with SpecCheckedClient(create_app(settings)) as test_client:
        yield test_client
