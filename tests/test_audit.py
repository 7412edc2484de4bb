"""The audit log (issue 7): one append-only record per WES, TES or TRS request, allowed or
refused, with the subject, the workflow's checksum and the datasets a submission names;
``wes-bridge audit`` prints them. Tokens are real (see tests/test_auth.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from wes_bridge.app import create_app
from wes_bridge.audit import AuditEntry, AuditLog
from wes_bridge.cli import main
from wes_bridge.config import Settings
from wes_bridge.store import RunStore

from .conftest import WES, SpecCheckedClient
from .test_auth import (
    EGAD1,
    TES,
    TRS,
    WC_CWL,
    IdentityProvider,
    _submit,
    _wc_run,
    bearer,
    datasets,
    idp,
    oidc_settings,
)

__all__ = ["datasets", "idp", "oidc_settings"]  # fixtures shared with test_auth

HELLO = (
    b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: "
    b"echo\ninputs: []\nstdout: out.txt\noutputs:\n  out: {type: stdout}\n"
)


def _checksum(files: dict[str, bytes]) -> str:
    lines = "".join(
        f"{hashlib.sha256(content).hexdigest()} {name}\n" for name, content in sorted(files.items())
    )
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


class Trail:
    """The WES records added since the last look (a run's own TES calls are left aside)."""

    def __init__(self, client: SpecCheckedClient) -> None:
        self.log: AuditLog = client.app.state.node.audit
        self.seen = 0

    def new(self, api: str = "wes") -> list[AuditEntry]:
        entries = self.log.query()
        fresh = [e for e in entries[self.seen :] if e.api == api]
        self.seen = len(entries)
        return fresh


def _only(entries: list[AuditEntry], **expected: Any) -> AuditEntry:
    assert len(entries) == 1, entries
    entry = entries[0]
    for key, value in expected.items():
        assert getattr(entry, key) == value, (key, entry)
    assert entry.client == "127.0.0.1"
    return entry


def test_each_request_leaves_exactly_its_record(
    oidc_settings: Settings, idp: IdentityProvider, datasets: Path
) -> None:
    alice = idp.token("alice", ga4gh_passport_v1=[idp.visa(EGAD1)])
    bob = idp.token("bob")
    location = (datasets / "EGAD1" / "reads.txt").as_uri()
    with SpecCheckedClient(create_app(oidc_settings)) as node:
        trail = Trail(node)
        # service-info is not recorded.
        assert node.get(f"{WES}/service-info").status_code == 200
        assert trail.new() == []
        # A submission: its run id, the workflow's checksum, the datasets it names.
        response = _wc_run(node, alice, location)
        assert response.status_code == 200, response.text
        run_id = response.json()["run_id"]
        entry = _only(
            trail.new(),
            subject="alice",
            api="wes",
            action="submit",
            target=run_id,
            outcome="allowed",
            status_code=200,
            reason=None,
            workflow_checksum=_checksum({"wc.cwl": WC_CWL}),
            datasets=[EGAD1],
        )
        assert entry.at.tzinfo is not None
        # A read of the run log, a list, a cancel.
        assert node.get(f"{WES}/runs/{run_id}", headers=bearer(alice)).status_code == 200
        _only(trail.new(), subject="alice", action="read", target=run_id, outcome="allowed")
        assert node.get(f"{WES}/runs", headers=bearer(alice)).status_code == 200
        _only(trail.new(), subject="alice", action="list", target=None, outcome="allowed")
        hello = _submit(node, alice)
        assert hello.status_code == 200
        other = hello.json()["run_id"]
        _only(
            trail.new(),
            action="submit",
            target=other,
            workflow_checksum=_checksum({"hello.cwl": HELLO}),
            datasets=[],
        )
        assert node.post(f"{WES}/runs/{other}/cancel", headers=bearer(alice)).status_code == 200
        _only(trail.new(), subject="alice", action="cancel", target=other, outcome="allowed")
        # Refusals: a dataset without a grant (403), no token (401), another user's run (404).
        response = _wc_run(node, bob, location)
        assert response.status_code == 403
        refused = _only(
            trail.new(),
            subject="bob",
            action="submit",
            outcome="refused",
            status_code=403,
            datasets=[EGAD1],
            workflow_checksum=None,
        )
        assert refused.reason == response.json()["msg"]
        assert EGAD1 in (refused.reason or "")
        assert str(datasets) not in (refused.reason or "")
        assert node.get(f"{WES}/runs/{run_id}").status_code == 401
        _only(
            trail.new(),
            subject=None,
            action="read",
            target=run_id,
            outcome="refused",
            status_code=401,
        )
        assert node.get(f"{WES}/runs/{run_id}", headers=bearer(bob)).status_code == 404
        _only(
            trail.new(),
            subject="bob",
            action="read",
            target=run_id,
            outcome="refused",
            status_code=404,
            reason=f"run {run_id} not found",
        )
        assert node.post(f"{WES}/runs/{run_id}/cancel", headers=bearer(bob)).status_code == 404
        _only(trail.new(), subject="bob", action="cancel", outcome="refused", status_code=404)
        # A bad request is a failure, its reason the error's kind only (no request data).
        bad = node.get(f"{WES}/runs?page_size=0", headers=bearer(alice))
        assert bad.status_code == 400
        _only(trail.new(), action="list", outcome="failed", status_code=400, reason="BadRequest")
        # TES and TRS are audited too.
        task = {"executors": [{"image": "alpine", "command": ["cat", location]}]}
        created = node.post(f"{TES}/tasks", json=task, headers=bearer(alice))
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]
        _only(
            trail.new("tes"),
            subject="alice",
            action="create_task",
            target=task_id,
            datasets=[EGAD1],
        )
        assert node.post(f"{TES}/tasks/{task_id}:cancel", headers=bearer(bob)).status_code == 404
        _only(trail.new("tes"), subject="bob", action="cancel_task", status_code=404)
        assert node.get(f"{TRS}/tools", headers=bearer(bob)).status_code == 200
        _only(trail.new("trs"), subject="bob", action="list", outcome="allowed")
        # No token is in the table, in whole or in part.
        with sqlite3.connect(oidc_settings.data_dir / "wes-bridge.sqlite") as db:
            dump = json.dumps(db.execute("SELECT * FROM audit_log").fetchall(), default=str)
        for token in (alice, bob):
            for part in token.split("."):
                assert part not in dump


def test_the_cli_prints_filtered_records_that_survive_a_restart(
    oidc_settings: Settings, idp: IdentityProvider
) -> None:
    alice, bob = idp.token("alice"), idp.token("bob")
    with SpecCheckedClient(create_app(oidc_settings)) as node:
        run_id = _submit(node, alice).json()["run_id"]
        assert node.post(f"{WES}/runs/{run_id}/cancel", headers=bearer(alice)).status_code == 200
        assert node.get(f"{WES}/runs/{run_id}", headers=bearer(bob)).status_code == 404
        assert node.get(f"{WES}/runs").status_code == 401
    # The node is down; a new one on the same data directory sees the records and adds more.
    with SpecCheckedClient(create_app(oidc_settings)) as node:
        assert node.get(f"{WES}/runs/{run_id}", headers=bearer(alice)).status_code == 200
    runner = CliRunner()
    data_dir = str(oidc_settings.data_dir)

    def lines(*args: str) -> list[dict[str, Any]]:
        result = runner.invoke(main, ["audit", "--data-dir", data_dir, "--json", *args])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    wes = [e for e in lines() if e["api"] == "wes"]
    assert [(e["subject"], e["action"], e["outcome"], e["status_code"]) for e in wes] == [
        ("alice", "submit", "allowed", 200),
        ("alice", "cancel", "allowed", 200),
        ("bob", "read", "refused", 404),
        (None, "list", "refused", 401),
        ("alice", "read", "allowed", 200),
    ]
    assert [e["action"] for e in lines("--run", run_id)] == ["submit", "cancel", "read", "read"]
    assert [e["subject"] for e in lines("--action", "read")] == ["bob", "alice"]
    assert [e["action"] for e in lines("--subject", "alice", "--run", run_id)] == [
        "submit",
        "cancel",
        "read",
    ]
    assert [e["action"] for e in lines("--run", run_id, "--limit", "2")] == ["read", "read"]
    assert lines("--since", "2999-01-01") == []
    assert len(lines("--since", wes[0]["at"], "--run", run_id)) == 4
    # The table: a header and one line per record, the refusal's status and reason in it.
    result = runner.invoke(main, ["audit", "--data-dir", data_dir, "--action", "read"])
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    assert table[0].split()[:3] == ["TIME", "(UTC)", "SUBJECT"]
    assert len(table) == 3
    assert "refused 404" in table[1]
    assert f"run {run_id} not found" in table[1]
    bad = runner.invoke(main, ["audit", "--data-dir", data_dir, "--since", "yesterday"])
    assert bad.exit_code != 0


def test_anonymous_in_mode_none(client: SpecCheckedClient) -> None:
    """Reads are not recorded with mode none (every driver poll would be a write);
    changes and refusals are, as anonymous."""
    assert client.get(f"{WES}/runs").status_code == 200
    assert client.get(f"{WES}/runs/nope").status_code == 404
    assert client.post(f"{WES}/runs/nope/cancel").status_code == 404
    entries = client.app.state.node.audit.query()
    assert [(e.subject, e.action, e.outcome) for e in entries] == [
        ("anonymous", "read", "refused"),
        ("anonymous", "cancel", "refused"),
    ]


def test_an_older_database_gains_the_audit_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    store = RunStore(f"sqlite:///{path}")
    store.close()
    with sqlite3.connect(path) as db:  # as a version without the audit log made it
        db.execute("DROP TABLE audit_log")
    store = RunStore(f"sqlite:///{path}")
    audit = AuditLog(store)
    audit.record(AuditEntry(api="wes", action="list", outcome="allowed", status_code=200))
    assert [e.action for e in audit.query()] == ["list"]
    # Append-only: the log has no way to change or remove a record.
    assert not [name for name in dir(audit) if name.startswith(("update", "delete", "remove"))]
    store.close()
