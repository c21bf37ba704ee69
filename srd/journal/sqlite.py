"""The journal in one SQLite file, WAL mode: the default for a single srd (in ``state_dir``)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from srd.clock import now as clock_now
from srd.journal.base import JournalError
from srd.journal.sql import Clock, Dialect, Lock, Op, Result, SqlJournal, migrate, schema

JOURNAL_FILE = "journal.sqlite3"
BUSY_TIMEOUT = 5.0
"""Seconds a write waits for SQLite's lock. srd is the only writer; this covers a reader's
checkpoint or a second process pointed at the same state directory by mistake."""

T = TypeVar("T")


def _append_only(table: str, deletable: bool) -> tuple[str, ...]:
    """Triggers that make the append-only rule a property of the file, not of the code."""
    verbs = ("UPDATE",) if deletable else ("UPDATE", "DELETE")
    return tuple(
        f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for verb in verbs
    )


SQLITE = Dialect(seq="INTEGER PRIMARY KEY", real="REAL", append_only=_append_only)
MIGRATIONS = schema(SQLITE)


class SqliteJournal(SqlJournal):
    """The journal in one SQLite file, WAL mode.

    Durability: ``synchronous=FULL`` for executions, steps and guard blocks — each commit is
    fsynced before the call returns, so a step journaled as started survives a power loss, not
    only a crash, and a restart can never repeat it unknowingly. Alert receipts use ``NORMAL``
    (no fsync per commit). WAL appends in order, so a FULL commit also makes every earlier
    receipt durable.

    Threading: every call runs on one dedicated thread, never on the event loop, so a slow
    disk or a lock wait never stalls probes or the webhook. One thread, not
    ``asyncio.to_thread``: the connection belongs to the thread that opened it; calls commit
    in the order they were made (a step's ``started`` before its ``ended``) without contending
    for SQLite's write lock; and journal writes never queue behind the default executor's
    other work (aiohttp's DNS lookups). A call cancelled while it runs still completes on the
    thread; its idempotency key makes a retry safe.
    """

    def __init__(self, path: Path, *, clock: Clock = clock_now) -> None:
        super().__init__(clock)
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srd-journal")
        self._db: sqlite3.Connection | None = None
        self._synchronous = ""
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, *, create: bool = True, clock: Clock = clock_now
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
            op = migrate(MIGRATIONS, SQLITE, str(self.path), self._clock())
            self._transaction(db, True, lambda tx: _drive(tx, op))
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

    async def _write(self, op: Op[T], *, durable: bool = True) -> T:
        return await self._call(
            lambda: self._transaction(self._connection(), durable, lambda db: _drive(db, op))
        )

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._call(lambda: self._connection().execute(sql, params).fetchall())

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"journal {self.path} is closed")
        return self._db


def _drive(db: sqlite3.Connection, op: Op[T]) -> T:
    """Run ``op``'s statements on ``db``, inside the caller's transaction."""
    try:
        statement = next(op)
        while True:
            if isinstance(statement, Lock):
                # BEGIN IMMEDIATE already made this the only write transaction.
                result = Result(0, [])
            elif statement.params is None:
                result = Result(0, db.execute(statement.sql).fetchall())
            else:
                cursor = db.execute(statement.sql, statement.params)
                result = Result(cursor.rowcount, cursor.fetchall())
            statement = op.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)
