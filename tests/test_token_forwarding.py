"""The user's token forwarded to an external TES (``tes.forward_user_token``), end to end.

Two real nodes with OIDC on, one identity provider: node A takes the WES run, and its engine
driver sends the run's steps to node B's TES with the user's own token (B owns the tasks by
that user); A follows and cancels them with a node credential B accepts for every user. The
token must reach B on the driver's requests only, and be written nowhere by either node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .live_server import Server, free_port
from .spec_check import check_response, tes_api
from .test_auth import IdentityProvider, _auth, bearer

pytestmark = pytest.mark.integration

HELLO_CWL = b"""cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
inputs:
  message: {type: string, inputBinding: {position: 1}}
stdout: hello.txt
outputs:
  greeting: {type: stdout}
"""


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


def test_the_users_token_reaches_the_external_tes_and_is_written_nowhere(
    tmp_path: Path, idp: IdentityProvider
) -> None:
    datasets = tmp_path / "datasets"
    (datasets / "EGAD1").mkdir(parents=True)
    (datasets / "EGAD2").mkdir()
    auth = json.dumps(_auth(idp, datasets))
    a_data, b_data = tmp_path / "a" / "data", tmp_path / "b" / "data"
    b_data.parent.mkdir()
    a_data.parent.mkdir()
    # B: the site's TES. It may read and write A's run directories (a shared file system).
    b = Server(
        b_data,
        free_port(),
        {
            "WES_BRIDGE_AUTH": auth,
            "WES_BRIDGE_TES__INPUT_ROOTS": json.dumps([str(a_data)]),
            "WES_BRIDGE_TES__OUTPUT_ROOTS": json.dumps([str(a_data)]),
            "WES_BRIDGE_LOG_LEVEL": "debug",
        },
    )
    b_tes = f"http://127.0.0.1:{b.port}/ga4gh/tes/v1"
    node_token = idp.token("wes-bridge-node-a", roles=["wes-admin"], lifetime=7200)
    a = Server(
        a_data,
        free_port(),
        {
            "WES_BRIDGE_AUTH": auth,
            "WES_BRIDGE_TES__URL": b_tes,
            "WES_BRIDGE_TES__TOKEN": node_token,
            "WES_BRIDGE_TES__FORWARD_USER_TOKEN": "true",
            "WES_BRIDGE_TES__SHARED_FILESYSTEM": "true",
            "WES_BRIDGE_LOG_LEVEL": "debug",
        },
    )
    token = idp.token("erin")
    other = idp.token("mallory")
    b.start()
    try:
        a.start()
        try:
            response = a.request(
                "POST",
                "/runs",
                data={
                    "workflow_type": "CWL",
                    "workflow_type_version": "v1.2",
                    "workflow_url": "hello.cwl",
                    "workflow_params": json.dumps({"message": "forwarded"}),
                    "workflow_engine": "cwltool",
                },
                files=[("workflow_attachment", ("hello.cwl", HELLO_CWL))],
                headers=bearer(token),
            )
            assert response.status_code == 200, response.text
            run_id = response.json()["run_id"]
            deadline = time.monotonic() + 120
            state = "QUEUED"
            while time.monotonic() < deadline:
                state = a.get(f"/runs/{run_id}/status", headers=bearer(token)).json()["state"]
                if state not in ("QUEUED", "INITIALIZING", "RUNNING"):
                    break
                time.sleep(0.2)
            log = a.get(f"/runs/{run_id}", headers=bearer(token)).json()
            assert state == "COMPLETE", log
            assert log["outputs"]["greeting"]["size"] == len("forwarded\n")
            listed = a.get(f"/runs/{run_id}/tasks", headers=bearer(token)).json()["task_logs"]
            assert listed
            assert all(t["tes_uri"].startswith(b_tes) for t in listed)

            # On B, the run's tasks are erin's: she sees them, mallory does not, and the
            # node's own credential (an admin of B) does.
            with httpx.Client(timeout=30) as http:
                for task in listed:
                    url = f"{b_tes}/tasks/{task['id']}"
                    mine = http.get(url, params={"view": "BASIC"}, headers=bearer(token))
                    assert check_response(
                        tes_api(),
                        "GET",
                        f"/ga4gh/tes/v1/tasks/{task['id']}",
                        mine.status_code,
                        mine.content,
                        mine.headers.get("content-type", ""),
                    )
                    assert mine.status_code == 200, mine.text
                    assert mine.json()["state"] == "COMPLETE"
                    assert mine.json()["tags"]["wes_run_id"] == run_id
                    assert http.get(url, headers=bearer(other)).status_code == 404
                    assert http.get(url, headers=bearer(node_token)).status_code == 200
                theirs = http.get(f"{b_tes}/tasks", headers=bearer(other)).json()
                assert theirs.get("tasks", []) == []
        finally:
            a.stop()
    finally:
        b.stop()
    signature = token.rsplit(".", 1)[1]
    written = [p for p in [a.log, b.log, *a_data.rglob("*"), *b_data.rglob("*")] if p.is_file()]
    assert sum(p.name.endswith(".sqlite") for p in written) == 2
    for path in written:
        content = path.read_bytes()
        assert token.encode() not in content, path
        assert signature.encode() not in content, path
