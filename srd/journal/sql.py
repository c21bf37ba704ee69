"""What both backends share: the schema, every statement, and the logic of every write.

A write is an *operation*: a generator that yields statements and receives their results, so
its logic (idempotency, existence checks, the fence) is written once and each backend drives
it in one transaction on its own connection — SQLite on its journal thread, PostgreSQL on the
event loop. Statements use ``?`` placeholders; the PostgreSQL backend translates them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeVar, cast

from srd.clock import now as clock_now
from srd.journal.base import (
    NO_TERM,
    AlertReceipt,
    Approval,
    ExecutionRecord,
    ExecutionState,
    Fence,
    FencedError,
    GuardBlock,
    JournalError,
    KillSwitchState,
    StateChange,
    StepRecord,
)
from srd.journal.faults import JournalFault, JournalHealth
from srd.model import RecoveryRecord

T = TypeVar("T")
Clock = Callable[[], float]


class Query(NamedTuple):
    sql: str
    params: tuple[Any, ...] | None = ()
    """None: sent as it is, placeholders and all (DDL, where ``%`` and ``?`` are literal)."""


class Lock(NamedTuple):
    """Serialise this transaction with every other one taking the same lock, until it ends.
    SQLite's write transactions are serial already; PostgreSQL takes an advisory lock."""

    name: Literal["migrate", "fence", "approval"]


class Result(NamedTuple):
    rowcount: int
    rows: list[tuple[Any, ...]]


Statement = Query | Lock
Op = Generator[Statement, Result, T]
"""A write: yields statements, receives each one's result, returns the write's result."""


@dataclass(frozen=True)
class Dialect:
    seq: str
    """An auto-numbered primary key: the order rows were written in."""
    real: str
    """A float that holds Unix time to the microsecond."""
    append_only: Callable[[str, bool], tuple[str, ...]]
    """Statements that make ``table`` refuse UPDATE (and, unless deletable, DELETE)."""
    functions: tuple[str, ...] = ()
    """Created before the first table (what ``append_only``'s triggers call)."""


def schema(d: Dialect) -> tuple[tuple[str, ...], ...]:
    """Schema migrations: version N is the first N applied in order. Append a tuple of
    statements to change the schema; never edit one that has shipped. Each runs in the same
    transaction as its ``schema_version`` row, so a failure mid-migration leaves the old
    version."""
    return (
        (  # 1: the initial schema
            *d.functions,
            f"""CREATE TABLE alerts_received (
            seq {d.seq},
            fingerprint TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            status TEXT NOT NULL,
            alert TEXT NOT NULL,
            received_at {d.real} NOT NULL,
            UNIQUE (fingerprint, starts_at, status))""",
            "CREATE INDEX alerts_received_by_time ON alerts_received (received_at)",
            f"""CREATE TABLE executions (
            seq {d.seq},
            id TEXT NOT NULL UNIQUE,
            key TEXT NOT NULL UNIQUE,
            runbook TEXT NOT NULL,
            mode TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            alert TEXT NOT NULL,
            created_at {d.real} NOT NULL)""",
            f"""CREATE TABLE execution_events (
            seq {d.seq},
            execution_id TEXT NOT NULL REFERENCES executions (id),
            state TEXT NOT NULL,
            detail TEXT,
            at {d.real} NOT NULL)""",
            "CREATE INDEX execution_events_by_execution ON execution_events (execution_id, seq)",
            f"""CREATE TABLE step_events (
            seq {d.seq},
            execution_id TEXT NOT NULL REFERENCES executions (id),
            step_index INTEGER NOT NULL,
            name TEXT NOT NULL,
            phase TEXT NOT NULL,
            key TEXT NOT NULL,
            at {d.real} NOT NULL,
            result TEXT,
            prior TEXT,
            detail TEXT,
            UNIQUE (key, phase))""",
            "CREATE INDEX step_events_by_execution ON step_events (execution_id, seq)",
            f"""CREATE TABLE guard_blocks (
            seq {d.seq},
            execution_id TEXT REFERENCES executions (id),
            guard TEXT NOT NULL,
            reason TEXT NOT NULL,
            at {d.real} NOT NULL)""",
            "CREATE INDEX guard_blocks_by_execution ON guard_blocks (execution_id, seq)",
            *d.append_only("alerts_received", True),  # prune() bounds its growth
            *d.append_only("executions", False),
            *d.append_only("execution_events", False),
            *d.append_only("step_events", False),
            *d.append_only("guard_blocks", False),
        ),
        (  # 2: terms of leadership, for fenced writes (one row per new leader)
            f"""CREATE TABLE leader_terms (
            term BIGINT PRIMARY KEY,
            holder TEXT NOT NULL,
            at {d.real} NOT NULL)""",
            *d.append_only("leader_terms", False),
        ),
        (  # 3: operator controls every replica shares: the kill switch and approvals
            f"""CREATE TABLE kill_switch_events (
            seq {d.seq},
            engaged INTEGER NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            at {d.real} NOT NULL)""",
            f"""CREATE TABLE approval_events (
            seq {d.seq},
            approval_id TEXT NOT NULL,
            execution_id TEXT NOT NULL REFERENCES executions (id),
            event TEXT NOT NULL,
            actor TEXT,
            description TEXT,
            at {d.real} NOT NULL,
            UNIQUE (approval_id, event))""",
            "CREATE INDEX approval_events_by_event ON approval_events (event, seq)",
            *d.append_only("kill_switch_events", False),
            *d.append_only("approval_events", False),
        ),
        (  # 4: receipts decided on; one recorded but not decided (a crash between the two,
            # after the webhook's 2xx) is decided at the next start. Older receipts were.
            f"CREATE TABLE alerts_decided (receipt BIGINT PRIMARY KEY, at {d.real} NOT NULL)",
            "INSERT INTO alerts_decided (receipt, at) SELECT seq, received_at FROM alerts_received",
            *d.append_only("alerts_decided", True),  # pruned with its receipt
        ),
        (  # 5: armed replicas that require every replica sharing the journal to authenticate
            f"""CREATE TABLE auth_required_events (
            seq {d.seq},
            replica TEXT NOT NULL,
            at {d.real} NOT NULL)""",
            *d.append_only("auth_required_events", False),
        ),
    )


def migrate(migrations: Sequence[Sequence[str]], d: Dialect, where: str, now: float) -> Op[None]:
    yield Lock("migrate")  # several replicas may open the journal at the same time
    yield Query(
        "CREATE TABLE IF NOT EXISTS schema_version"
        f" (version INTEGER PRIMARY KEY, applied_at {d.real} NOT NULL)"
    )
    result = yield Query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    current: int = result.rows[0][0]
    if current > len(migrations):
        raise JournalError(
            f"{where}: schema version {current} is newer than this srd knows ({len(migrations)});"
            " upgrade srd (downgrading a journal is not supported)"
        )
    for version in range(current + 1, len(migrations) + 1):
        for statement in migrations[version - 1]:
            yield Query(statement, None)
        yield Query("INSERT INTO schema_version VALUES (?, ?)", (version, now))


_EXECUTION_COLUMNS = """
    SELECT e.id, e.runbook, e.key, e.mode, ev.state, e.correlation_id, e.alert, e.created_at,
           ev.at
    FROM executions AS e
    JOIN execution_events AS ev
      ON ev.seq = (SELECT MAX(seq) FROM execution_events WHERE execution_id = e.id)
"""
_UNFINISHED = ("planned", "running")
_LAST_STATE = "SELECT state FROM execution_events WHERE execution_id = ? ORDER BY seq DESC LIMIT 1"
_PENDING = """
    SELECT r.approval_id, r.execution_id, r.description, r.at
    FROM approval_events AS r
    JOIN execution_events AS ev
      ON ev.seq = (SELECT MAX(seq) FROM execution_events WHERE execution_id = r.execution_id)
    WHERE r.event = 'requested' AND ev.state IN (?, ?)
      AND NOT EXISTS (SELECT 1 FROM approval_events AS o
                      WHERE o.approval_id = r.approval_id AND o.event IN ('approved', 'expired'))
    ORDER BY r.seq
"""


LOCK_RETRY = 5.0
"""Seconds a write retries while another connection holds the write lock (``locked``):
srd is the only writer, so a lock is a reader's checkpoint or a second process pointed at the
same file by mistake. Each failed attempt is counted and shown by ``/readyz``."""
LOCK_BACKOFF = (0.05, 1.0)
"""Seconds before the first retry of a locked write, doubled up to the second."""


class SqlJournal(ABC):
    """The ``Journal`` Protocol over SQL; a backend supplies transactions and reads, and
    turns its errors into ``JournalFault``s."""

    def __init__(self, clock: Clock = clock_now, health: JournalHealth | None = None) -> None:
        self._clock = clock
        self.health = health or JournalHealth()

    @abstractmethod
    async def _transact(self, what: str, op: Op[T], *, durable: bool) -> T:
        """Run ``op`` in one transaction, committed before this returns; with ``durable``
        the commit is on disk (a power loss keeps it). Backend errors raise JournalFault."""

    @abstractmethod
    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one read; backend errors raise JournalFault."""

    async def _write(self, what: str, make: Callable[[], Op[T]], *, durable: bool = True) -> T:
        """``make()``'s operation in one transaction, retried while the journal is locked
        (nothing was written then); every fault is reported to ``health``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_RETRY
        delay = LOCK_BACKOFF[0]
        while True:
            try:
                result = await self._transact(what, make(), durable=durable)
            except JournalFault as fault:
                self.health.fault(fault, write=True)
                if fault.kind != "locked" or loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOCK_BACKOFF[1])
                continue
            self.health.wrote()
            return result

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return await self._query(sql, params)
        except JournalFault as fault:
            self.health.fault(fault, write=False)
            raise

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> SqlJournal:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- writes

    async def record_alert(
        self, fingerprint: str, starts_at: str, status: str, alert: dict[str, Any]
    ) -> bool:
        [fresh] = await self.record_alerts([AlertReceipt(fingerprint, starts_at, status, alert)])
        return fresh

    async def record_alerts(self, receipts: Sequence[AlertReceipt]) -> list[bool]:
        def insert() -> Op[list[bool]]:
            now, fresh = self._clock(), []
            for receipt in receipts:
                result = yield Query(
                    "INSERT INTO alerts_received"
                    " (fingerprint, starts_at, status, alert, received_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (*receipt[:3], _dumps(receipt.alert), now),
                )
                fresh.append(result.rowcount == 1)
            return fresh

        # Durable: the webhook answers 2xx once this returns, and Alertmanager will not send
        # the alert again before its repeat_interval. Group commit pays one fsync per batch.
        return await self._write("record_alerts", insert)

    async def mark_decided(self, receipts: Sequence[AlertReceipt]) -> None:
        def insert() -> Op[None]:
            now = self._clock()
            for receipt in receipts:
                yield Query(
                    "INSERT INTO alerts_decided (receipt, at) SELECT seq, ? FROM alerts_received"
                    " WHERE fingerprint = ? AND starts_at = ? AND status = ?"
                    " ON CONFLICT DO NOTHING",
                    (now, *receipt[:3]),
                )

        # Not durable: a mark lost to a power loss only decides the alert again, which its
        # execution key makes a no-op.
        await self._write("mark_decided", insert, durable=False)

    async def start_execution(
        self, runbook: str, key: str, mode: str, correlation_id: str, alert: dict[str, Any]
    ) -> ExecutionRecord | None:
        def insert() -> Op[ExecutionRecord | None]:
            now, execution_id = self._clock(), secrets.token_hex(6)
            # ON CONFLICT (key) only: an id collision must fail loudly, not read as a duplicate.
            result = yield Query(
                "INSERT INTO executions"
                " (id, key, runbook, mode, correlation_id, alert, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (execution_id, key, runbook, mode, correlation_id, _dumps(alert), now),
            )
            if result.rowcount != 1:
                return None
            yield Query(
                "INSERT INTO execution_events (execution_id, state, at) VALUES (?, ?, ?)",
                (execution_id, "planned", now),
            )
            return ExecutionRecord(
                execution_id, runbook, key, mode, "planned", correlation_id, alert, now, now
            )

        return await self._write("start_execution", insert)

    async def set_state(
        self,
        execution_id: str,
        state: ExecutionState,
        detail: dict[str, Any] | None = None,
        *,
        fence: Fence | None = None,
    ) -> None:
        def insert() -> Op[None]:
            yield from _require_execution(execution_id)
            yield from self._fenced(fence)
            yield Query(
                "INSERT INTO execution_events (execution_id, state, detail, at)"
                " VALUES (?, ?, ?, ?)",
                (execution_id, state, _dumps_optional(detail), self._clock()),
            )

        await self._write("set_state", insert)

    async def step(self, record: StepRecord, *, fence: Fence | None = None) -> None:
        """Append a step event. The same (key, phase) again is ignored, so a retried write
        is harmless; the first one stands."""

        def insert() -> Op[None]:
            yield from _require_execution(record.execution_id)
            yield from self._fenced(fence)
            yield Query(
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

        await self._write("step", insert)

    async def lead(self, fence: Fence) -> None:
        await self._write("lead", lambda: self._fenced(fence))

    async def guard_blocked(self, execution_id: str | None, guard: str, reason: str) -> None:
        def insert() -> Op[None]:
            if execution_id is not None:
                yield from _require_execution(execution_id)
            yield Query(
                "INSERT INTO guard_blocks (execution_id, guard, reason, at) VALUES (?, ?, ?, ?)",
                (execution_id, guard, reason, self._clock()),
            )

        await self._write("guard_blocked", insert)

    async def prune(self, older_than: float) -> int:
        def delete() -> Op[int]:
            cutoff = self._clock() - older_than
            yield Query(
                "DELETE FROM alerts_decided WHERE receipt IN"
                " (SELECT seq FROM alerts_received WHERE received_at < ?)",
                (cutoff,),
            )
            result = yield Query("DELETE FROM alerts_received WHERE received_at < ?", (cutoff,))
            return result.rowcount

        return await self._write("prune", delete, durable=False)

    async def forget_alert(self, fingerprint: str, starts_at: str) -> None:
        def delete() -> Op[None]:
            yield Query(
                "DELETE FROM alerts_decided WHERE receipt IN (SELECT seq FROM alerts_received"
                " WHERE fingerprint = ? AND starts_at = ? AND status = 'firing')",
                (fingerprint, starts_at),
            )
            yield Query(
                "DELETE FROM alerts_received"
                " WHERE fingerprint = ? AND starts_at = ? AND status = 'firing'",
                (fingerprint, starts_at),
            )

        await self._write("forget_alert", delete)

    async def set_kill_switch(self, on: bool, by: str, reason: str) -> None:
        def insert() -> Op[None]:
            yield Query(
                "INSERT INTO kill_switch_events (engaged, actor, reason, at) VALUES (?, ?, ?, ?)",
                (int(on), by, reason, self._clock()),
            )

        await self._write("set_kill_switch", insert)

    async def require_auth(self, replica: str) -> None:
        def insert() -> Op[None]:
            yield Query(
                "INSERT INTO auth_required_events (replica, at) VALUES (?, ?)",
                (replica, self._clock()),
            )

        await self._write("require_auth", insert)

    async def request_approval(self, approval_id: str, execution_id: str, description: str) -> None:
        def insert() -> Op[None]:
            yield from _require_execution(execution_id)
            # A new leader resuming the step asks again: the first request stands.
            yield Query(
                "INSERT INTO approval_events"
                " (approval_id, execution_id, event, description, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (approval_id, event) DO NOTHING",
                (approval_id, execution_id, "requested", description, self._clock()),
            )

        await self._write("request_approval", insert)

    async def approve(self, approval_id: str, by: str) -> bool:
        def insert() -> Op[bool]:
            # Serialised with expire_approval: an approval and a timeout cannot both win.
            yield Lock("approval")
            result = yield Query(
                "SELECT event, execution_id FROM approval_events WHERE approval_id = ?",
                (approval_id,),
            )
            events = {row[0]: row[1] for row in result.rows}
            if "requested" not in events or {"approved", "expired"} & events.keys():
                return False
            execution_id = events["requested"]
            result = yield Query(_LAST_STATE, (execution_id,))
            if not result.rows or result.rows[0][0] not in _UNFINISHED:
                return False
            yield Query(
                "INSERT INTO approval_events (approval_id, execution_id, event, actor, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (approval_id, execution_id, "approved", by, self._clock()),
            )
            return True

        return await self._write("approve", insert)

    async def expire_approval(self, approval_id: str) -> str | None:
        def insert() -> Op[str | None]:
            yield Lock("approval")
            result = yield Query(
                "SELECT event, execution_id, actor FROM approval_events WHERE approval_id = ?",
                (approval_id,),
            )
            events = {row[0]: (row[1], row[2]) for row in result.rows}
            if "approved" in events:
                return cast(str, events["approved"][1])
            if "requested" not in events:
                return None
            yield Query(
                "INSERT INTO approval_events (approval_id, execution_id, event, at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (approval_id, event) DO NOTHING",
                (approval_id, events["requested"][0], "expired", self._clock()),
            )
            return None

        return await self._write("expire_approval", insert)

    def _fenced(self, fence: Fence | None) -> Op[None]:
        """The fence, checked (and a new leader's term recorded) inside the write's own
        transaction, after every other fenced writer's transaction has ended."""
        if fence is None:
            return
        if fence.term <= NO_TERM:
            raise FencedError(f"write refused: {fence.holder} does not lead (it holds no term)")
        yield Lock("fence")
        result = yield Query("SELECT term, holder FROM leader_terms ORDER BY term DESC LIMIT 1")
        if not result.rows or fence.term > result.rows[0][0]:
            yield Query(
                "INSERT INTO leader_terms (term, holder, at) VALUES (?, ?, ?)",
                (fence.term, fence.holder, self._clock()),
            )
            return
        term, holder = result.rows[0]
        if (term, holder) != (fence.term, fence.holder):
            raise FencedError(
                f"write refused: {fence.holder} at term {fence.term} is deposed;"
                f" {holder} leads at term {term}"
            )

    # -- reads

    async def kill_switch(self) -> KillSwitchState | None:
        rows = await self._read(
            "SELECT engaged, actor, at, reason FROM kill_switch_events ORDER BY seq DESC LIMIT 1",
            (),
        )
        if not rows:
            return None
        engaged, by, at, reason = rows[0]
        return KillSwitchState(bool(engaged), by, at, reason)

    async def auth_required(self) -> str | None:
        rows = await self._read(
            "SELECT replica FROM auth_required_events ORDER BY seq DESC LIMIT 1", ()
        )
        return str(rows[0][0]) if rows else None

    async def approval(self, approval_id: str) -> Approval | None:
        rows = await self._read(
            "SELECT event, execution_id, actor, description, at FROM approval_events"
            " WHERE approval_id = ? ORDER BY seq",
            (approval_id,),
        )
        events = {row[0]: row for row in rows}
        requested = events.get("requested")
        if requested is None:
            return None
        approved = events.get("approved")
        return Approval(
            approval_id,
            requested[1],
            requested[3] or "",
            requested[4],
            approved[2] if approved else None,
            approved[4] if approved else None,
        )

    async def pending_approvals(self) -> Sequence[Approval]:
        rows = await self._read(_PENDING, _UNFINISHED)
        return [Approval(row[0], row[1], row[2] or "", row[3]) for row in rows]

    async def execution(self, execution_id: str) -> ExecutionRecord | None:
        rows = await self._read(_EXECUTION_COLUMNS + " WHERE e.id = ?", (execution_id,))
        return _execution(rows[0]) if rows else None

    async def execution_by_key(self, key: str) -> ExecutionRecord | None:
        rows = await self._read(_EXECUTION_COLUMNS + " WHERE e.key = ?", (key,))
        return _execution(rows[0]) if rows else None

    async def receipts(self, fingerprint: str, starts_at: str) -> Sequence[tuple[str, float]]:
        rows = await self._read(
            "SELECT status, received_at FROM alerts_received"
            " WHERE fingerprint = ? AND starts_at = ? ORDER BY seq",
            (fingerprint, starts_at),
        )
        return [(row[0], row[1]) for row in rows]

    async def undecided(self, limit: int = 1000) -> Sequence[AlertReceipt]:
        """Oldest first: decide in the order the alerts were received."""
        rows = await self._read(
            "SELECT r.fingerprint, r.starts_at, r.status, r.alert FROM alerts_received AS r"
            " WHERE NOT EXISTS (SELECT 1 FROM alerts_decided AS d WHERE d.receipt = r.seq)"
            " ORDER BY r.seq LIMIT ?",
            (limit,),
        )
        return [AlertReceipt(row[0], row[1], row[2], json.loads(row[3])) for row in rows]

    async def executions(self, limit: int = 100) -> Sequence[ExecutionRecord]:
        rows = await self._read(_EXECUTION_COLUMNS + " ORDER BY e.seq DESC LIMIT ?", (limit,))
        return [_execution(row) for row in rows]

    async def steps(self, execution_id: str) -> Sequence[StepRecord]:
        rows = await self._read(
            "SELECT execution_id, step_index, name, phase, key, at, result, prior, detail"
            " FROM step_events WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        )
        return [_step(row) for row in rows]

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
        return [StateChange(row[0], row[1], row[2], _loads(row[3])) for row in rows]

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


def _require_execution(execution_id: str) -> Op[None]:
    result = yield Query("SELECT 1 FROM executions WHERE id = ?", (execution_id,))
    if not result.rows:
        raise KeyError(f"no execution {execution_id!r} in the journal")


def _step(row: tuple[Any, ...]) -> StepRecord:
    """A row of ``steps``' query (in StepRecord's field order)."""
    execution_id, index, name, phase, key, at, result, prior, detail = row
    return StepRecord(
        execution_id, index, name, phase, key, at, result, _loads(prior), _loads(detail)
    )


def _execution(row: tuple[Any, ...]) -> ExecutionRecord:
    """A row of ``_EXECUTION_COLUMNS`` (in ExecutionRecord's field order)."""
    id_, runbook, key, mode, state, correlation, alert, created, updated = row
    return ExecutionRecord(
        id_, runbook, key, mode, state, correlation, json.loads(alert), created, updated
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


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else cast(dict[str, Any], json.loads(text))
