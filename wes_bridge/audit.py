"""The audit log: who submitted, read, cancelled or was refused what, and when.

One append-only table (``audit_log``) in the node's database, next to the runs. The code has
no way to change or delete a record: :class:`AuditLog` only inserts and reads. Each audited
request adds exactly one row, with one INSERT (see ``wes_bridge.api.audit``). A record never
holds a token or request data: the reason of a refusal is the message the client was given,
which names at most a dataset id.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from .store import Base, RunStore, add_missing_columns, utcnow

__all__ = ["AuditEntry", "AuditLog", "workflow_checksum"]

Outcome = Literal["allowed", "refused", "failed"]


class _AuditRecord(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The token's subject (None: no valid credentials; "anonymous" with auth.mode none).
    subject: Mapped[str | None] = mapped_column(String(255))
    client: Mapped[str | None] = mapped_column(String(255))
    api: Mapped[str] = mapped_column(String(8), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    workflow_checksum: Mapped[str | None] = mapped_column(String(80))
    datasets: Mapped[list[Any] | None] = mapped_column(JSON)
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_subject_seq", "subject", "seq"),
        Index("ix_audit_log_target_seq", "target", "seq"),
    )


@dataclass(frozen=True)
class AuditEntry:
    api: str
    action: str
    outcome: Outcome
    status_code: int
    subject: str | None = None
    client: str | None = None
    target: str | None = None
    reason: str | None = None
    workflow_checksum: str | None = None
    datasets: list[str] = field(default_factory=list)
    at: datetime = field(default_factory=utcnow)
    seq: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return data


_INSERT = insert(_AuditRecord)


class AuditLog:
    """Appends audit records to, and reads them from, the node's database."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        # Created on start, like the other tables (also in a database an older version made).
        _AuditRecord.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]
        add_missing_columns(store.engine, _AuditRecord.__table__)  # type: ignore[arg-type]

    def record(self, entry: AuditEntry) -> None:
        """Append one record: a single INSERT."""
        values = asdict(entry)
        values.pop("seq")
        values["datasets"] = sorted(entry.datasets) or None
        with self.store.write_connection() as conn:
            conn.execute(_INSERT, values)

    def query(
        self,
        *,
        since: datetime | None = None,
        subject: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Matching records, oldest first; with ``limit``, the most recent ``limit`` of them."""
        table = _AuditRecord
        query = select(table)
        if since is not None:
            query = query.where(table.at >= since)
        if subject is not None:
            query = query.where(table.subject == subject)
        if action is not None:
            query = query.where(table.action == action)
        if target is not None:
            query = query.where(table.target == target)
        query = query.order_by(table.seq.desc() if limit else table.seq)
        if limit:
            query = query.limit(limit)
        with self.store.session() as s:
            rows = list(s.scalars(query))
        if limit:
            rows.reverse()
        return [
            AuditEntry(
                seq=r.seq,
                at=r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC),
                subject=r.subject,
                client=r.client,
                api=r.api,
                action=r.action,
                target=r.target,
                outcome=r.outcome,  # type: ignore[arg-type]
                status_code=r.status_code,
                reason=r.reason,
                workflow_checksum=r.workflow_checksum,
                datasets=list(r.datasets or []),
            )
            for r in rows
        ]


def workflow_checksum(root: Path) -> str:
    """``sha256:<hex>`` of a staged workflow folder: the SHA-256 of the sorted lines
    ``<sha-256 of the file> <path relative to root>``, one per regular file."""
    lines = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()} {path.relative_to(root).as_posix()}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
