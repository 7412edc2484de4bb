"""The run store: runs, their state history, tags and tasks (SQLAlchemy 2).

SQLite (WAL mode) is the embedded default; any SQLAlchemy URL works, PostgreSQL being the one
meant for several replicas. Every state change is a conditional UPDATE (``WHERE state IN
(...)``) so two actors can never both move a run, and each change is kept in ``run_events``
with its timestamp.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    Table,
    Text,
    create_engine,
    event,
    false,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = ["Base", "RunRecord", "RunStore", "TaskRecord", "add_missing_columns", "utcnow"]

TERMINAL_STATES = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
ACTIVE_STATES = frozenset({"INITIALIZING", "RUNNING", "CANCELING"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The tables of the node's database (runs here, TES tasks in ``wes_bridge.tes.store``)."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class _Run(Base):
    __tablename__ = "runs"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    engine: Mapped[str] = mapped_column(String(100), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    run_dir: Mapped[str] = mapped_column(Text, nullable=False)
    staged: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    cmd: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    system_logs: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    driver_started: Mapped[float | None] = mapped_column(Float)
    # The replica that claimed the run (not its user: that is ``subject``).
    owner: Mapped[str | None] = mapped_column(String(64))
    # The user who submitted the run (the token's subject; None with auth.mode none), the
    # dataset grants they held then, and their token encrypted for an external TES that needs
    # it (tes.forward_user_token; cleared when the run ends).
    subject: Mapped[str | None] = mapped_column(String(255))
    grants: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    credential: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        Index("ix_runs_state_seq", "state", "seq"),
        Index("ix_runs_subject_seq", "subject", "seq"),
    )


class _RunTag(Base):
    __tablename__ = "run_tags"
    run_seq: Mapped[int] = mapped_column(ForeignKey("runs.seq"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    __table_args__ = (Index("ix_run_tags_key_value", "key", "value", "run_seq"),)


class _RunEvent(Base):
    __tablename__ = "run_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)


class _Task(Base):
    __tablename__ = "tasks"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    id: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    cmd: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)
    tes_uri: Mapped[str | None] = mapped_column(Text)
    system_logs: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    __table_args__ = (Index("ux_tasks_run_id", "run_id", "id", unique=True),)


class _Secret(Base):
    __tablename__ = "node_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


@dataclass(frozen=True)
class RunRecord:
    seq: int
    id: str
    state: str
    engine: str
    request: dict[str, Any]
    tags: dict[str, str]
    run_dir: str
    staged: dict[str, Any]
    created_at: datetime
    start_time: datetime | None
    end_time: datetime | None
    exit_code: int | None
    cmd: list[str]
    outputs: dict[str, Any]
    system_logs: list[str]
    driver_pid: int | None
    driver_started: float | None
    subject: str | None = None
    grants: dict[str, Any] | None = None
    credential: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TaskRecord:
    seq: int
    run_id: str
    id: str
    name: str
    state: str
    cmd: list[str]
    start_time: datetime | None
    end_time: datetime | None
    exit_code: int | None
    stdout_path: str | None
    stderr_path: str | None
    tes_uri: str | None
    system_logs: list[str]


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _run_record(row: _Run) -> RunRecord:
    return RunRecord(
        seq=row.seq,
        id=row.id,
        state=row.state,
        engine=row.engine,
        request=row.request,
        tags=row.tags,
        run_dir=row.run_dir,
        staged=dict(row.staged or {}),
        created_at=_aware(row.created_at) or utcnow(),
        start_time=_aware(row.start_time),
        end_time=_aware(row.end_time),
        exit_code=row.exit_code,
        cmd=list(row.cmd or []),
        outputs=dict(row.outputs or {}),
        system_logs=list(row.system_logs or []),
        driver_pid=row.driver_pid,
        driver_started=row.driver_started,
        subject=row.subject,
        grants=dict(row.grants) if row.grants is not None else None,
        credential=row.credential,
    )


def _task_record(row: _Task) -> TaskRecord:
    return TaskRecord(
        seq=row.seq,
        run_id=row.run_id,
        id=row.id,
        name=row.name,
        state=row.state,
        cmd=list(row.cmd or []),
        start_time=_aware(row.start_time),
        end_time=_aware(row.end_time),
        exit_code=row.exit_code,
        stdout_path=row.stdout_path,
        stderr_path=row.stderr_path,
        tes_uri=row.tes_uri,
        system_logs=list(row.system_logs or []),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off; ``_sqlite_begin`` issues it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take SQLite's write lock when their transaction begins, not at their first
    # write: a deferred transaction that reads and then writes can fail with "database is
    # locked" at once, without the busy handler, when another process wrote in between.
    if conn.get_execution_options().get("wes_bridge_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class RunStore:
    """Persistence of runs and tasks. Thread-safe: every call uses its own session.

    On SQLite, writes from the threads of one process queue on a Python lock and only then
    ask for the database's write lock. SQLite itself makes a waiting writer poll with sleeps
    of up to 100 ms, which under a burst of submissions costs far more than the writes.
    """

    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {}
        self._sqlite = url.startswith("sqlite")
        if self._sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self._sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine, _Run.__table__)  # type: ignore[arg-type]
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(wes_bridge_write=True)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        # On SQLite, one writer at a time per process (see the class docstring).
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else contextlib.nullcontext()
        )

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """A read transaction (for other stores sharing this database)."""
        return self._session()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_lock, self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in a write transaction (for hot paths without ORM objects)."""
        with self._write_lock, self._write_engine.begin() as conn:
            yield conn

    # -- runs -------------------------------------------------------------------------------
    @staticmethod
    def new_run_id() -> str:
        return str(uuid.uuid4())

    def create_run(
        self,
        run_id: str,
        engine: str,
        request: dict[str, Any],
        tags: dict[str, str],
        run_dir: str,
        staged: dict[str, Any],
        *,
        subject: str | None = None,
        grants: dict[str, Any] | None = None,
        credential: str | None = None,
    ) -> RunRecord:
        now = utcnow()
        values: dict[str, Any] = {
            "id": run_id,
            "state": "QUEUED",
            "engine": engine,
            "request": request,
            "tags": tags,
            "run_dir": run_dir,
            "staged": staged,
            "created_at": now,
            "cmd": [],
            "outputs": {},
            "system_logs": [],
            "subject": subject,
            "grants": grants,
            "credential": credential,
        }
        # Core statements with bound parameters, compiled once and cached: this is the hot
        # path of POST /runs, and it runs while holding the write lock.
        with self.write_connection() as conn:
            seq = conn.execute(_INSERT_RUN, values).scalar_one()
            if tags:
                conn.execute(
                    _INSERT_TAG, [{"run_seq": seq, "key": k, "value": v} for k, v in tags.items()]
                )
            conn.execute(_INSERT_EVENT, {"run_id": run_id, "state": "QUEUED", "at": now})
        row = _Run(
            seq=seq,
            start_time=None,
            end_time=None,
            exit_code=None,
            driver_pid=None,
            driver_started=None,
            **values,
        )
        return _run_record(row)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._session() as s:
            row = s.scalar(select(_Run).where(_Run.id == run_id))
            return _run_record(row) if row else None

    def get_state(self, run_id: str) -> str | None:
        with self._session() as s:
            return s.scalar(select(_Run.state).where(_Run.id == run_id))

    def get_state_and_subject(self, run_id: str) -> tuple[str, str | None] | None:
        with self._session() as s:
            row = s.execute(select(_Run.state, _Run.subject).where(_Run.id == run_id)).first()
            return (row[0], row[1]) if row is not None else None

    def list_runs(
        self,
        limit: int,
        before_seq: int | None = None,
        state: str | None = None,
        tag_key: str | None = None,
        tag_value: str | None = None,
        *,
        subject: str | None = None,
        everyone: bool = True,
    ) -> list[RunRecord]:
        """Newest first; ``before_seq`` continues a page (keyset, stable under inserts).
        Unless ``everyone``, only the runs of ``subject``."""
        query = select(_Run).order_by(_Run.seq.desc()).limit(limit)
        if not everyone:
            query = query.where(_Run.subject == subject) if subject else query.where(false())
        if before_seq is not None:
            query = query.where(_Run.seq < before_seq)
        if state is not None:
            query = query.where(_Run.state == state)
        if tag_key is not None:
            tagged = select(_RunTag.run_seq).where(_RunTag.key == tag_key)
            if tag_value is not None:
                tagged = tagged.where(_RunTag.value == tag_value)
            query = query.where(_Run.seq.in_(tagged))
        with self._session() as s:
            return [_run_record(r) for r in s.scalars(query)]

    def state_counts(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(select(_Run.state, func.count()).group_by(_Run.state))
            return {state: int(count) for state, count in rows}

    def runs_in_states(self, states: Iterable[str]) -> list[RunRecord]:
        with self._session() as s:
            rows = s.scalars(select(_Run).where(_Run.state.in_(list(states))).order_by(_Run.seq))
            return [_run_record(r) for r in rows]

    def ids_in_state(self, run_ids: Sequence[str], state: str) -> set[str]:
        if not run_ids:
            return set()
        with self._session() as s:
            return set(s.scalars(select(_Run.id).where(_Run.id.in_(run_ids), _Run.state == state)))

    def transition(
        self,
        run_id: str,
        to_state: str,
        from_states: Iterable[str],
        reason: str | None = None,
        *,
        task_changes: Sequence[tuple[str, dict[str, Any]]] = (),
        close_open_tasks: tuple[str, str] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a run to ``to_state`` if it is in one of ``from_states``; True if it moved.

        In the same transaction, ``task_changes`` are applied (as by :meth:`upsert_tasks`)
        and, if the run moved, its tasks that have not ended are closed with ``close_open_tasks``
        (state, note): a run's end is one write, not three.
        """
        now = utcnow()
        values: dict[str, Any] = {"state": to_state, **fields}
        if to_state in TERMINAL_STATES and "end_time" not in fields:
            values["end_time"] = now
        if to_state in TERMINAL_STATES:
            values["credential"] = None  # the user's token is kept no longer than the run
        with self._write() as s:
            result = s.execute(
                update(_Run)
                .where(_Run.id == run_id, _Run.state.in_(list(from_states)))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            moved = bool(getattr(result, "rowcount", 0))
            _apply_task_changes(s, run_id, task_changes)
            if moved:
                s.execute(
                    insert(_RunEvent).values(run_id=run_id, state=to_state, at=now, reason=reason)
                )
                if close_open_tasks is not None:
                    _close_open_tasks(s, run_id, *close_open_tasks)
            return moved

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._write() as s:
            s.execute(update(_Run).where(_Run.id == run_id).values(**fields))

    def claim_queued(self, limit: int, owner: str) -> list[RunRecord]:
        """Atomically move up to ``limit`` of the oldest QUEUED runs to INITIALIZING.

        One conditional UPDATE ... RETURNING: two replicas never claim the same run.
        """
        if limit <= 0:
            return []
        now = utcnow()
        oldest = select(_Run.seq).where(_Run.state == "QUEUED").order_by(_Run.seq).limit(limit)
        # Look before writing: an UPDATE that matches nothing still takes SQLite's write lock,
        # and the supervisor asks at every wake-up.
        with self._session() as s:
            if s.scalar(oldest.limit(1)) is None:
                return []
        with self._write() as s:
            rows = s.scalars(
                update(_Run)
                .where(_Run.seq.in_(oldest.scalar_subquery()), _Run.state == "QUEUED")
                .values(state="INITIALIZING", owner=owner)
                .returning(_Run)
                .execution_options(synchronize_session=False)
            ).all()
            claimed = sorted((_run_record(r) for r in rows), key=lambda r: r.seq)
            if claimed:
                s.execute(
                    insert(_RunEvent),
                    [{"run_id": r.id, "state": "INITIALIZING", "at": now} for r in claimed],
                )
        return claimed

    def run_events(self, run_id: str) -> list[tuple[str, datetime, str | None]]:
        with self._session() as s:
            rows = s.execute(
                select(_RunEvent.state, _RunEvent.at, _RunEvent.reason)
                .where(_RunEvent.run_id == run_id)
                .order_by(_RunEvent.seq)
            )
            return [(st, _aware(at) or utcnow(), reason) for st, at, reason in rows]

    # -- tasks ------------------------------------------------------------------------------
    def upsert_task(self, run_id: str, task_id: str, **fields: Any) -> None:
        self.upsert_tasks(run_id, [(task_id, fields)])

    def upsert_tasks(self, run_id: str, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Create or update several tasks of a run in one transaction, in order."""
        if not changes:
            return
        with self._write() as s:
            _apply_task_changes(s, run_id, changes)

    def close_open_tasks(self, run_id: str, state: str, note: str) -> None:
        """Mark every task of a run that has not ended as ended in ``state``."""
        with self._write() as s:
            _close_open_tasks(s, run_id, state, note)

    def list_tasks(self, run_id: str, limit: int, after_seq: int | None = None) -> list[TaskRecord]:
        query = select(_Task).where(_Task.run_id == run_id).order_by(_Task.seq).limit(limit)
        if after_seq is not None:
            query = query.where(_Task.seq > after_seq)
        with self._session() as s:
            return [_task_record(t) for t in s.scalars(query)]

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        with self._session() as s:
            row = s.scalar(select(_Task).where(_Task.run_id == run_id, _Task.id == task_id))
            return _task_record(row) if row else None

    # -- node-wide secrets ------------------------------------------------------------------
    def secret(self, name: str) -> bytes:
        """A random secret shared by every replica on this database, created on first use."""
        with self._session() as s:
            value = s.scalar(select(_Secret.value).where(_Secret.name == name))
        if value is None:
            try:
                with self._write() as s:
                    s.add(_Secret(name=name, value=secrets.token_hex(32)))
            except IntegrityError:
                pass  # another replica created it first
            with self._session() as s:
                value = s.scalar(select(_Secret.value).where(_Secret.name == name))
        assert value is not None
        return bytes.fromhex(value)


_INSERT_RUN = insert(_Run).returning(_Run.seq)
_INSERT_TAG = insert(_RunTag)
_INSERT_EVENT = insert(_RunEvent)


def _apply_task_changes(
    s: Session, run_id: str, changes: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    if not changes:
        return
    ids = {task_id for task_id, _ in changes}
    existing = {
        t.id: t for t in s.scalars(select(_Task).where(_Task.run_id == run_id, _Task.id.in_(ids)))
    }
    for task_id, fields in changes:
        row = existing.get(task_id)
        if row is None:
            values = {"name": task_id, "state": "RUNNING", **fields}
            row = _Task(run_id=run_id, id=task_id, **values)
            s.add(row)
            existing[task_id] = row
        else:
            for key, value in fields.items():
                setattr(row, key, value)
    s.flush()


def _close_open_tasks(s: Session, run_id: str, state: str, note: str) -> None:
    s.execute(
        update(_Task)
        .where(_Task.run_id == run_id, _Task.state.not_in(TERMINAL_STATES))
        .values(state=state, end_time=utcnow(), system_logs=[note])
        .execution_options(synchronize_session=False)
    )


def add_missing_columns(engine: Engine, table: Table) -> None:
    """Add the columns of ``table`` that a database made by an older version lacks.

    ``create_all`` creates missing tables but never alters existing ones. New columns are
    nullable, so adding them needs no default; a replica that adds one at the same moment
    makes the other's ALTER fail, which is fine. Missing indexes are created likewise.
    """
    inspector = inspect(engine)
    if not inspector.has_table(table.name):
        return
    present = {c["name"] for c in inspector.get_columns(table.name)}
    preparer = engine.dialect.identifier_preparer
    for column in table.columns:
        if column.name in present:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        statement = (
            f"ALTER TABLE {preparer.format_table(table)} "
            f"ADD COLUMN {preparer.format_column(column)} {kind}"
        )
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
        except (OperationalError, ProgrammingError):
            if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                raise
    for index in table.indexes:
        # (created meanwhile by another replica: fine)
        with contextlib.suppress(OperationalError, ProgrammingError):
            index.create(engine, checkfirst=True)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
