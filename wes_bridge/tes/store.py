"""TES tasks in the node's database (the same one as the WES runs).

A task row keeps the request as submitted (normalised), its state, its TES task logs and what
the scheduler needs to find the task's runner again after a restart. Like runs, every state
change is a conditional UPDATE, so the API and the scheduler can never both move a task.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..store import Base, RunStore, add_missing_columns
from .models import TERMINAL_TASK_STATES

__all__ = ["TaskRow", "TesStore"]

ACTIVE_TASK_STATES = frozenset({"INITIALIZING", "RUNNING", "CANCELING"})


class _TesTask(Base):
    __tablename__ = "tes_tasks"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    logs: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    creation_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    cpu_cores: Mapped[int] = mapped_column(Integer, nullable=False)
    ram_gb: Mapped[float] = mapped_column(Float, nullable=False)
    task_dir: Mapped[str] = mapped_column(Text, nullable=False)
    runner_pid: Mapped[int | None] = mapped_column(Integer)
    runner_started: Mapped[float | None] = mapped_column(Float)
    claimed_by: Mapped[str | None] = mapped_column(String(128))  # the replica running it
    # The user the task belongs to (the token's subject, or the user of the run whose driver
    # created it); None with auth.mode none.
    owner: Mapped[str | None] = mapped_column(String(255))
    __table_args__ = (
        Index("ix_tes_tasks_state_seq", "state", "seq"),
        Index("ix_tes_tasks_name", "name"),
        Index("ix_tes_tasks_owner_seq", "owner", "seq"),
    )


class _TesTaskTag(Base):
    __tablename__ = "tes_task_tags"
    task_seq: Mapped[int] = mapped_column(ForeignKey("tes_tasks.seq"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    __table_args__ = (Index("ix_tes_task_tags_key_value", "key", "value", "task_seq"),)


@dataclass(frozen=True)
class TaskRow:
    seq: int
    id: str
    state: str
    name: str | None
    tags: dict[str, str]
    request: dict[str, Any]
    logs: list[dict[str, Any]]
    creation_time: datetime
    cpu_cores: int
    ram_gb: float
    task_dir: str
    runner_pid: int | None
    runner_started: float | None
    owner: str | None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _row(r: Any) -> TaskRow:
    """A task from an ORM object or a Core row (both have the columns as attributes)."""
    created = _aware(r.creation_time)
    return TaskRow(
        seq=r.seq,
        id=r.id,
        state=r.state,
        name=r.name,
        tags=dict(r.tags or {}),
        request=dict(r.request or {}),
        logs=list(r.logs or []),
        creation_time=created,
        cpu_cores=r.cpu_cores,
        ram_gb=r.ram_gb,
        task_dir=r.task_dir,
        runner_pid=r.runner_pid,
        runner_started=r.runner_started,
        owner=r.owner,
    )


_INSERT_TASK = insert(_TesTask).returning(_TesTask.seq)
_STATE_OF = select(_TesTask.state).where(_TesTask.id == bindparam("task_id"))
_QUEUED = (
    select(*_TesTask.__table__.columns)
    .where(_TesTask.state == "QUEUED")
    .order_by(_TesTask.seq)
    .limit(bindparam("limit"))
)
_INSERT_TAG = insert(_TesTaskTag)


class TesStore:
    """TES tasks, on the engine, sessions and write lock of a :class:`RunStore`."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        Base.metadata.create_all(store.engine)  # the TES tables, if an older node made the file
        add_missing_columns(store.engine, _TesTask.__table__)  # type: ignore[arg-type]

    @staticmethod
    def new_task_id() -> str:
        return uuid.uuid4().hex

    def create_task(
        self,
        task_id: str,
        request: dict[str, Any],
        *,
        cpu_cores: int,
        ram_gb: float,
        task_dir: str,
        state: str = "QUEUED",
        logs: list[dict[str, Any]] | None = None,
        owner: str | None = None,
    ) -> None:
        tags = dict(request.get("tags") or {})
        values = {
            "id": task_id,
            "state": state,
            "name": request.get("name"),
            "tags": tags,
            "request": request,
            "logs": logs or [],
            "creation_time": datetime.now(UTC),
            "cpu_cores": cpu_cores,
            "ram_gb": ram_gb,
            "task_dir": task_dir,
            "owner": owner,
        }
        with self.store.write_connection() as conn:
            seq = conn.execute(_INSERT_TASK, values).scalar_one()
            if tags:
                conn.execute(
                    _INSERT_TAG,
                    [{"task_seq": seq, "key": k, "value": v} for k, v in tags.items()],
                )

    def get(self, task_id: str) -> TaskRow | None:
        with self.store.session() as s:
            row = s.scalar(select(_TesTask).where(_TesTask.id == task_id))
            return _row(row) if row else None

    def get_state(self, task_id: str) -> str | None:
        # Core, not an ORM session: clients poll this.
        with self.store.engine.connect() as conn:
            state = conn.execute(_STATE_OF, {"task_id": task_id}).scalar()
            return str(state) if state is not None else None

    def list_tasks(
        self,
        limit: int,
        before_seq: int | None = None,
        *,
        name_prefix: str | None = None,
        state: str | None = None,
        tags: dict[str, str] | None = None,
        owner: str | None = None,
        everyone: bool = True,
    ) -> list[TaskRow]:
        """Newest first; ``before_seq`` continues a page. Empty tag values match any value.
        Unless ``everyone``, only the tasks of ``owner``."""
        query = select(_TesTask).order_by(_TesTask.seq.desc()).limit(limit)
        if not everyone:
            query = query.where(_TesTask.owner == owner) if owner else query.where(false())
        if before_seq is not None:
            query = query.where(_TesTask.seq < before_seq)
        if state is not None:
            query = query.where(_TesTask.state == state)
        if name_prefix:
            escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(_TesTask.name.like(escaped + "%", escape="\\"))
        for key, value in (tags or {}).items():
            tagged = select(_TesTaskTag.task_seq).where(_TesTaskTag.key == key)
            if value:
                tagged = tagged.where(_TesTaskTag.value == value)
            query = query.where(_TesTask.seq.in_(tagged))
        with self.store.session() as s:
            return [_row(r) for r in s.scalars(query)]

    def in_states(self, states: set[str] | frozenset[str]) -> list[TaskRow]:
        with self.store.session() as s:
            rows = s.scalars(
                select(_TesTask).where(_TesTask.state.in_(list(states))).order_by(_TesTask.seq)
            )
            return [_row(r) for r in rows]

    def states_of(self, task_ids: list[str]) -> dict[str, str]:
        if not task_ids:
            return {}
        with self.store.session() as s:
            rows = s.execute(select(_TesTask.id, _TesTask.state).where(_TesTask.id.in_(task_ids)))
            return {task_id: state for task_id, state in rows}

    def queued(self, limit: int) -> list[TaskRow]:
        """The oldest queued tasks (Core, not ORM: this is on the path of every task start)."""
        with self.store.engine.connect() as conn:
            return [_row(r) for r in conn.execute(_QUEUED, {"limit": limit})]

    def state_counts(self) -> dict[str, int]:
        with self.store.session() as s:
            rows = s.execute(select(_TesTask.state, func.count()).group_by(_TesTask.state))
            return {state: int(count) for state, count in rows}

    def transition(
        self, task_id: str, to_state: str, from_states: set[str] | frozenset[str], **fields: Any
    ) -> bool:
        """Move a task to ``to_state`` if it is in one of ``from_states``; True if it moved."""
        with self.store.write_connection() as conn:
            result = conn.execute(
                update(_TesTask)
                .where(_TesTask.id == task_id, _TesTask.state.in_(list(from_states)))
                .values(state=to_state, **fields)
            )
            return bool(result.rowcount)

    def update(self, task_id: str, **fields: Any) -> None:
        with self.store.write_connection() as conn:
            conn.execute(update(_TesTask).where(_TesTask.id == task_id).values(**fields))


__all__ += ["ACTIVE_TASK_STATES", "TERMINAL_TASK_STATES"]
