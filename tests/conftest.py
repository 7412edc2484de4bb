from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from wes_bridge.app import create_app
from wes_bridge.config import Settings, load_settings

from .spec_check import check_response, tes_api, wes_api

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "test-workflows"
WES = "/ga4gh/wes/v1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


class SpecCheckedClient(TestClient):
    """A TestClient that checks every WES response against the official document."""

    checked = 0

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
    return load_settings(data_dir=tmp_path / "data", max_concurrent_runs=4, cancel_grace_seconds=2)


@pytest.fixture
def client(settings: Settings) -> Iterator[SpecCheckedClient]:
    app = create_app(settings)
    with SpecCheckedClient(app) as test_client:
        yield test_client


@pytest.fixture
def settings_one_slot_client(tmp_path: Path) -> Iterator[SpecCheckedClient]:
    settings = load_settings(
        data_dir=tmp_path / "data", max_concurrent_runs=1, cancel_grace_seconds=2
    )
    with SpecCheckedClient(create_app(settings)) as test_client:
        yield test_client
