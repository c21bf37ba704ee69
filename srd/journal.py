"""The journal: the durable, append-only record of alerts received, decisions and steps.

Contract (this module's ``Journal`` Protocol) first; the SQLite implementation (WAL, in
``state_dir``) follows. A later issue adds PostgreSQL behind the same Protocol.

Rules every implementation keeps:
- append-only: rows are never updated in place; the state of an execution is its last event;
- every step is written *before* it starts (with its idempotency key and the prior state) and
  *after* it ends (with its result), so a restart knows what was done and what was interrupted;
- idempotency keys are unique: recording an alert (fingerprint + startsAt + status) or
  starting an execution twice returns False/None instead of a duplicate.

What ``recovery_records`` reads (the executor writes it into the execution's ``alert``): the
scenario is ``alert["scenario"]`` (set from the runbook) or else the alert label ``scenario``;
the kind is ``alert["kind"]`` (``"drill"`` for game days) and ``"real"`` when absent. Only
``armed`` executions that ``succeeded`` count; detection is the alert's ``startsAt`` (RFC 3339,
as Alertmanager sends it) or else the execution's creation, recovery is the ``succeeded`` event.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from srd.model import RecoveryRecord

ExecutionState = Literal[
    "planned",  # decided, not started (cancellable by a resolved alert)
    "running",
    "succeeded",
    "failed",  # a step failed and could not be compensated
    "rolled_back",
    "escalated",  # health not restored by the deadline; paged, stopped
    "blocked",  # a guard refused
    "cancelled",  # resolved before it started
]
StepPhase = Literal["started", "ended"]
StepResult = Literal["ok", "failed", "skipped", "blocked", "planned", "compensated"]


@dataclass(frozen=True)
class ExecutionRecord:
    id: str
    runbook: str
    key: str
    """Idempotency key of the decision: runbook + alert fingerprint + startsAt."""
    mode: str
    state: ExecutionState
    correlation_id: str
    alert: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class StepRecord:
    execution_id: str
    index: int
    name: str
    phase: StepPhase
    key: str
    """Idempotency key of the step: execution id + index."""
    at: float
    result: StepResult | None = None
    prior: dict[str, Any] | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class StateChange:
    """One event of an execution's state history (``set_state`` and the initial ``planned``)."""

    execution_id: str
    state: ExecutionState
    at: float
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class GuardBlock:
    """A guard's refusal; ``execution_id`` None when it refused before an execution existed."""

    execution_id: str | None
    guard: str
    reason: str
    at: float


class Journal(Protocol):
    async def record_alert(
        self, fingerprint: str, starts_at: str, status: str, alert: dict[str, Any]
    ) -> bool:
        """Record one received alert; False when this (fingerprint, startsAt, status) was
        already recorded (an Alertmanager resend or an HA duplicate)."""
        ...

    async def start_execution(
        self, runbook: str, key: str, mode: str, correlation_id: str, alert: dict[str, Any]
    ) -> ExecutionRecord | None:
        """Create an execution in state ``planned``; None when ``key`` already exists."""
        ...

    async def set_state(
        self, execution_id: str, state: ExecutionState, detail: dict[str, Any] | None = None
    ) -> None: ...

    async def step(self, record: StepRecord) -> None:
        """Append a step event (started or ended)."""
        ...

    async def guard_blocked(self, execution_id: str | None, guard: str, reason: str) -> None: ...

    async def execution(self, execution_id: str) -> ExecutionRecord | None: ...

    async def executions(self, limit: int = 100) -> Sequence[ExecutionRecord]: ...

    async def steps(self, execution_id: str) -> Sequence[StepRecord]: ...

    async def unfinished(self) -> Sequence[ExecutionRecord]:
        """Executions left ``planned`` or ``running`` (a crash or kill): to reconcile at start."""
        ...

    async def recovery_records(self) -> Sequence[RecoveryRecord]:
        """Detected → recovered intervals of finished executions, for measured RTO."""
        ...

    async def states(self, execution_id: str) -> Sequence[StateChange]:
        """The execution's state history, oldest first (empty for an unknown id)."""
        ...

    async def guard_blocks(
        self, execution_id: str | None = None, limit: int = 100
    ) -> Sequence[GuardBlock]:
        """Guard refusals, newest first: of one execution, or of all when ``execution_id`` is
        None."""
        ...

    async def prune(self, older_than: float) -> int:
        """Delete alert receipts older than ``older_than`` seconds (executions, steps and
        guard blocks are kept); return how many were deleted. Keep well above Alertmanager's
        ``repeat_interval``: a pruned receipt lets a resend through to the execution-key check."""
        ...

    async def close(self) -> None: ...


# --- SQLite ----------------------------------------------------------------------------------

JOURNAL_FILE = "journal.sqlite3"
BUSY_TIMEOUT = 5.0
"""Seconds a write waits for SQLite's lock. srd is the only writer; this covers a reader's
checkpoint or a second process pointed at the same state directory by mistake."""

T = TypeVar("T")
Clock = Callable[[], float]

_UNFINISHED = ("planned", "running")


def _append_only(table: str, *, deletable: bool = False) -> tuple[str, ...]:
    """Triggers that make the append-only rule a property of the file, not of the code."""
    verbs = ("UPDATE",) if deletable else ("UPDATE", "DELETE")
    return tuple(
        f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for verb in verbs
    )


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the initial schema
        """CREATE TABLE alerts_received (
            seq INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            status TEXT NOT NULL,
            alert TEXT NOT NULL,
            received_at REAL NOT NULL,
            UNIQUE (fingerprint, starts_at, status))""",
        "CREATE INDEX alerts_received_by_time ON alerts_received (received_at)",
        """CREATE TABLE executions (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            key TEXT NOT NULL UNIQUE,
            runbook TEXT NOT NULL,
            mode TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            alert TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        """CREATE TABLE execution_events (
            seq INTEGER PRIMARY KEY,
            execution_id TEXT NOT NULL REFERENCES executions (id),
            state TEXT NOT NULL,
            detail TEXT,
            at REAL NOT NULL)""",
        "CREATE INDEX execution_events_by_execution ON execution_events (execution_id, seq)",
        """CREATE TABLE step_events (
            seq INTEGER PRIMARY KEY,
            execution_id TEXT NOT NULL REFERENCES executions (id),
            step_index INTEGER NOT NULL,
            name TEXT NOT NULL,
            phase TEXT NOT NULL,
            key TEXT NOT NULL,
            at REAL NOT NULL,
            result TEXT,
            prior TEXT,
            detail TEXT,
            UNIQUE (key, phase))""",
        "CREATE INDEX step_events_by_execution ON step_events (execution_id, seq)",
        """CREATE TABLE guard_blocks (
            seq INTEGER PRIMARY KEY,
            execution_id TEXT REFERENCES executions (id),
            guard TEXT NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL)""",
        "CREATE INDEX guard_blocks_by_execution ON guard_blocks (execution_id, seq)",
        *_append_only("alerts_received", deletable=True),  # prune() bounds its growth
        *_append_only("executions"),
        *_append_only("execution_events"),
        *_append_only("step_events"),
        *_append_only("guard_blocks"),
    ),
)
"""Schema migrations: version N is ``MIGRATIONS[:N]`` applied in order. Append a tuple of
statements to change the schema; never edit one that has shipped. Each runs in the same
transaction as its ``schema_version`` row, so a crash mid-migration leaves the old version."""

_EXECUTION_COLUMNS = """
    SELECT e.id, e.runbook, e.key, e.mode, ev.state, e.correlation_id, e.alert, e.created_at,
           ev.at
    FROM executions AS e
    JOIN execution_events AS ev
      ON ev.seq = (SELECT MAX(seq) FROM execution_events WHERE execution_id = e.id)
"""


class JournalError(Exception):
    """The journal cannot be opened: missing, unsupported URL, or a schema from a newer srd."""


class SqliteJournal:
    """The journal in one SQLite file, WAL mode.

    Durability: ``synchronous=FULL`` for executions, steps and guard blocks — each commit is
    fsynced before the call returns, so a step journaled as started survives a power loss, not
    only a crash, and a restart can never repeat it unknowingly. Alert receipts use ``NORMAL``
    (no fsync per commit; the webhook's throughput depends on it): a receipt lost to a power
    loss only lets Alertmanager's resend through to ``start_execution``, whose key is durable.
    WAL appends in order, so a FULL commit also makes every earlier receipt durable.

    Threading: every call runs on one dedicated thread, never on the event loop, so a slow
    disk or a lock wait never stalls probes or the webhook. One thread, not
    ``asyncio.to_thread``: the connection belongs to the thread that opened it; calls commit
    in the order they were made (a step's ``started`` before its ``ended``) without contending
    for SQLite's write lock; and journal writes never queue behind the default executor's
    other work (aiohttp's DNS lookups). A call cancelled while it runs still completes on the
    thread; its idempotency key makes a retry safe.
    """

    def __init__(self, path: Path, *, clock: Clock = time.time) -> None:
        self.path = path
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srd-journal")
        self._db: sqlite3.Connection | None = None
        self._synchronous = ""
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, *, create: bool = True, clock: Clock = time.time
    ) -> SqliteJournal:
        """Open (or with ``create`` make) the journal at ``path`` and migrate its schema."""
        journal = cls(path, clock=clock)
        try:
            await journal._call(lambda: journal._connect(create))
        except BaseException:
            journal._closed = True
            journal._thread.shutdown(wait=False)
            raise
        return journal

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- the Journal protocol

    async def record_alert(
        self, fingerprint: str, starts_at: str, status: str, alert: dict[str, Any]
    ) -> bool:
        def insert(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO alerts_received (fingerprint, starts_at, status, alert, received_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (fingerprint, starts_at, status, _dumps(alert), self._clock()),
            )
            return cursor.rowcount == 1

        return await self._write(insert, durable=False)

    async def start_execution(
        self, runbook: str, key: str, mode: str, correlation_id: str, alert: dict[str, Any]
    ) -> ExecutionRecord | None:
        def insert(db: sqlite3.Connection) -> ExecutionRecord | None:
            now, execution_id = self._clock(), secrets.token_hex(6)
            # ON CONFLICT (key) only: an id collision must fail loudly, not read as a duplicate.
            cursor = db.execute(
                "INSERT INTO executions"
                " (id, key, runbook, mode, correlation_id, alert, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (execution_id, key, runbook, mode, correlation_id, _dumps(alert), now),
            )
            if cursor.rowcount != 1:
                return None
            db.execute(
                "INSERT INTO execution_events (execution_id, state, at) VALUES (?, ?, ?)",
                (execution_id, "planned", now),
            )
            return ExecutionRecord(
                execution_id, runbook, key, mode, "planned", correlation_id, alert, now, now
            )

        return await self._write(insert)

    async def set_state(
        self, execution_id: str, state: ExecutionState, detail: dict[str, Any] | None = None
    ) -> None:
        def insert(db: sqlite3.Connection) -> None:
            _require_execution(db, execution_id)
            db.execute(
                "INSERT INTO execution_events (execution_id, state, detail, at)"
                " VALUES (?, ?, ?, ?)",
                (execution_id, state, _dumps_optional(detail), self._clock()),
            )

        await self._write(insert)

    async def step(self, record: StepRecord) -> None:
        """Append a step event. The same (key, phase) again is ignored, so a retried write
        is harmless; the first one stands."""

        def insert(db: sqlite3.Connection) -> None:
            _require_execution(db, record.execution_id)
            db.execute(
                "INSERT INTO step_events (execution_id, step_index, name, phase, key, at,"
                " result, prior, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key, phase) DO NOTHING",
                (
                    record.execution_id,
                    record.index,
                    record.name,
                    record.phase,
                    record.key,
                    record.at,
                    record.result,
                    _dumps_optional(record.prior),
                    _dumps_optional(record.detail),
                ),
            )

        await self._write(insert)

    async def guard_blocked(self, execution_id: str | None, guard: str, reason: str) -> None:
        def insert(db: sqlite3.Connection) -> None:
            if execution_id is not None:
                _require_execution(db, execution_id)
            db.execute(
                "INSERT INTO guard_blocks (execution_id, guard, reason, at) VALUES (?, ?, ?, ?)",
                (execution_id, guard, reason, self._clock()),
            )

        await self._write(insert)

    async def execution(self, execution_id: str) -> ExecutionRecord | None:
        rows = await self._read(_EXECUTION_COLUMNS + " WHERE e.id = ?", (execution_id,))
        return _execution(rows[0]) if rows else None

    async def executions(self, limit: int = 100) -> Sequence[ExecutionRecord]:
        rows = await self._read(_EXECUTION_COLUMNS + " ORDER BY e.seq DESC LIMIT ?", (limit,))
        return [_execution(row) for row in rows]

    async def steps(self, execution_id: str) -> Sequence[StepRecord]:
        rows = await self._read(
            "SELECT execution_id, step_index, name, phase, key, at, result, prior, detail"
            " FROM step_events WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        )
        return [
            StepRecord(
                execution_id=row[0],
                index=row[1],
                name=row[2],
                phase=row[3],
                key=row[4],
                at=row[5],
                result=row[6],
                prior=_loads_optional(row[7]),
                detail=_loads_optional(row[8]),
            )
            for row in rows
        ]

    async def unfinished(self) -> Sequence[ExecutionRecord]:
        """Oldest first: reconcile in the order the executions were decided."""
        rows = await self._read(
            _EXECUTION_COLUMNS + " WHERE ev.state IN (?, ?) ORDER BY e.seq", _UNFINISHED
        )
        return [_execution(row) for row in rows]

    async def recovery_records(self) -> Sequence[RecoveryRecord]:
        rows = await self._read(
            _EXECUTION_COLUMNS + " WHERE ev.state = 'succeeded' AND e.mode = 'armed'"
            " ORDER BY e.seq",
            (),
        )
        records = (_recovery(_execution(row)) for row in rows)
        return [record for record in records if record is not None]

    async def states(self, execution_id: str) -> Sequence[StateChange]:
        rows = await self._read(
            "SELECT execution_id, state, at, detail FROM execution_events"
            " WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        )
        return [StateChange(row[0], row[1], row[2], _loads_optional(row[3])) for row in rows]

    async def guard_blocks(
        self, execution_id: str | None = None, limit: int = 100
    ) -> Sequence[GuardBlock]:
        where, params = (
            ("WHERE execution_id = ?", (execution_id,)) if execution_id is not None else ("", ())
        )
        rows = await self._read(
            f"SELECT execution_id, guard, reason, at FROM guard_blocks {where}"  # noqa: S608 - a fixed clause
            " ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [GuardBlock(*row) for row in rows]

    async def prune(self, older_than: float) -> int:
        def delete(db: sqlite3.Connection) -> int:
            cutoff = self._clock() - older_than
            return db.execute(
                "DELETE FROM alerts_received WHERE received_at < ?", (cutoff,)
            ).rowcount

        # Freed pages are reused by later inserts, so the file stops growing without VACUUM.
        return await self._write(delete, durable=False)

    async def close(self) -> None:
        """Finish every call already made, then close; later calls raise RuntimeError."""
        if self._closed:
            return
        await self._call(self._disconnect)
        self._closed = True
        self._thread.shutdown(wait=False)

    # -- on the journal thread

    def _connect(self, create: bool) -> None:
        if not create and not self.path.exists():
            raise JournalError(f"no journal at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise JournalError(f"{self.path}: cannot use WAL mode (got {mode!r})")
            db.execute("PRAGMA foreign_keys=ON")
            self._transaction(db, True, lambda tx: _migrate(tx, self.path, self._clock()))
        except BaseException:
            db.close()
            raise
        self._db = db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _transaction(
        self, db: sqlite3.Connection, durable: bool, work: Callable[[sqlite3.Connection], T]
    ) -> T:
        level = "FULL" if durable else "NORMAL"
        if self._synchronous != level:
            db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    # -- from the event loop

    async def _call(self, work: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError(f"journal {self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def _write(self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``work`` in one transaction, committed (and with ``durable`` fsynced) before
        this returns."""
        return await self._call(lambda: self._transaction(self._connection(), durable, work))

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return await self._call(lambda: self._connection().execute(sql, params).fetchall())

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"journal {self.path} is closed")
        return self._db


async def open_journal(target: str | Path, *, create: bool = True) -> Journal:
    """Open the journal named by ``target``: a state directory (the journal is its
    ``journal.sqlite3``) or a URL, ``sqlite:///abs/path.sqlite3``. With ``create`` False a
    missing journal raises JournalError (readers such as ``srd journal`` must not make one)."""
    return await SqliteJournal.open(journal_path(target), create=create)


def journal_path(target: str | Path) -> Path:
    """The SQLite file ``target`` names; JournalError for a URL scheme srd does not support."""
    text = str(target)
    if "://" not in text:
        return Path(target) / JOURNAL_FILE
    url = urlsplit(text)
    if url.scheme != "sqlite":
        raise JournalError(f"unsupported journal URL {text!r}: expected sqlite:///abs/path")
    if url.netloc or not url.path.startswith("/"):
        raise JournalError(f"journal URL {text!r} must name an absolute path: sqlite:///abs/path")
    return Path(url.path)


def _migrate(db: sqlite3.Connection, path: Path, now: float) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    current: int = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise JournalError(
            f"{path}: schema version {current} is newer than this srd knows ({len(MIGRATIONS)});"
            " upgrade srd (downgrading a journal is not supported)"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for statement in MIGRATIONS[version - 1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now))


def _require_execution(db: sqlite3.Connection, execution_id: str) -> None:
    if db.execute("SELECT 1 FROM executions WHERE id = ?", (execution_id,)).fetchone() is None:
        raise KeyError(f"no execution {execution_id!r} in the journal")


def _execution(row: tuple[Any, ...]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row[0],
        runbook=row[1],
        key=row[2],
        mode=row[3],
        state=row[4],
        correlation_id=row[5],
        alert=json.loads(row[6]),
        created_at=row[7],
        updated_at=row[8],
    )


def _recovery(execution: ExecutionRecord) -> RecoveryRecord | None:
    alert = execution.alert
    labels = alert.get("labels")
    scenario = alert.get("scenario") or (
        labels.get("scenario") if isinstance(labels, dict) else None
    )
    if not isinstance(scenario, str) or not scenario:
        return None
    kind: Literal["real", "drill"] = "drill" if alert.get("kind") == "drill" else "real"
    detected = _timestamp(alert.get("startsAt")) or execution.created_at
    recovered = execution.updated_at
    # An alert clock ahead of ours must not make the interval negative (RecoveryRecord refuses).
    return RecoveryRecord(scenario, min(detected, recovered), recovered, kind)


def _timestamp(value: object) -> float | None:
    """RFC 3339 (Alertmanager sends nanoseconds; Python keeps microseconds) → Unix seconds."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Go's zero time (an alert without a start) is not a detection time.
    if parsed.tzinfo is None or parsed.year < 2000:
        return None
    return parsed.timestamp()


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _dumps_optional(value: dict[str, Any] | None) -> str | None:
    return None if value is None else _dumps(value)


def _loads_optional(text: str | None) -> dict[str, Any] | None:
    return None if text is None else cast(dict[str, Any], json.loads(text))
