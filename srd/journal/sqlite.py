"""The journal in one SQLite file, WAL mode: the default for a single srd (in ``state_dir``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from srd.clock import now as clock_now
from srd.journal.base import JournalError
from srd.journal.faults import FaultKind, JournalFault, JournalHealth
from srd.journal.sql import Clock, Dialect, Lock, Op, Result, SqlJournal, migrate, schema

BUSY_TIMEOUT = 1.0
"""Seconds one attempt waits for SQLite's lock before it fails as ``locked``: short, so a
held lock shows (``/readyz``, ``srd_journal_errors_total``) while writes retry it for
``LOCK_RETRY`` in all."""
HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""
_KINDS: dict[int, FaultKind] = {
    sqlite3.SQLITE_BUSY: "locked",
    sqlite3.SQLITE_LOCKED: "locked",
    sqlite3.SQLITE_FULL: "full",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_PERM: "read_only",
    sqlite3.SQLITE_CANTOPEN: "read_only",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
    sqlite3.SQLITE_IOERR: "io",
}
"""SQLite's primary result codes (the low byte of an extended code) by fault kind."""
_ERRNO_KINDS: dict[int, FaultKind] = {
    errno.EACCES: "read_only",
    errno.EPERM: "read_only",
    errno.EROFS: "read_only",
    errno.ENOSPC: "full",
}
_ADVICE: dict[FaultKind, str] = {
    "locked": "another connection holds its write lock (a second srd on the same state_dir,"
    " or a tool with an open transaction); writes retry",
    "full": "the disk (or the file's max_page_count) is full: free space; srd retries",
    "read_only": "srd cannot write the file or its directory: make both writable by srd",
    "corrupt": "the file is not an srd journal, or it is truncated or damaged: restore it from"
    " a backup or move it aside (srd left it untouched)",
    "io": "the disk failed a read or write: check it",
}

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

    def __init__(
        self, path: Path, *, clock: Clock = clock_now, health: JournalHealth | None = None
    ) -> None:
        super().__init__(clock, health)
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srd-journal")
        self._db: sqlite3.Connection | None = None
        self._synchronous = ""
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        clock: Clock = clock_now,
        health: JournalHealth | None = None,
    ) -> SqliteJournal:
        """Open (or with ``create`` make) the journal at ``path`` and migrate its schema. A
        file that is not an SQLite database, or is shorter than its header says (truncated),
        raises a ``corrupt`` JournalFault before anything is written to it."""
        journal = cls(path, clock=clock, health=health)
        try:
            await journal._call("open", lambda: journal._connect(create))
        except BaseException:
            journal._closed = True
            journal._thread.shutdown(wait=False)
            raise
        return journal

    async def close(self) -> None:
        """Finish every call already made, then close; later calls raise RuntimeError."""
        if self._closed:
            return
        await self._call("close", self._disconnect)
        self._closed = True
        self._thread.shutdown(wait=False)

    # -- on the journal thread

    def _connect(self, create: bool) -> None:
        if not create and not self.path.exists():
            raise JournalError(f"no journal at {self.path}")
        self._check_file()
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

    def _check_file(self) -> None:
        """Refuse a foreign or truncated file before SQLite touches it: SQLite would take an
        empty file for a new database, and finds damage only on the page it reads."""
        try:
            with self.path.open("rb") as file:
                header = file.read(100)
                size = file.seek(0, 2)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fault(exc, "open", _ERRNO_KINDS.get(exc.errno or 0, "io")) from None
        if size == 0:
            return  # created, and killed before the first write: a new journal
        if len(header) < 100 or not header.startswith(HEADER):
            raise self._fault("not an SQLite database (wrong header)", "open", "corrupt")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        # The page count is valid when its change counter matches (SQLite 3.7.0 and later).
        valid = header[24:28] == header[92:96]
        if valid and size < pages * page_size:
            raise self._fault(
                f"truncated: {size} bytes, its header says {pages * page_size}", "open", "corrupt"
            )

    def _fault(self, error: Exception | str, op: str, kind: FaultKind) -> JournalFault:
        advice = f"; {_ADVICE[kind]}" if kind in _ADVICE else ""
        return JournalFault(f"journal {self.path}: {op} failed: {error}{advice}", kind=kind, op=op)

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
            # SQLite rolls back by itself on some errors (a full disk): the original error,
            # not a failed ROLLBACK, is what the caller must see.
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            raise
        return result

    # -- from the event loop

    async def _call(self, what: str, work: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError(f"journal {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            kind = _KINDS.get(code & 0xFF, "error") if code is not None else "error"
            raise self._fault(exc, what, kind) from None
        except OSError as exc:  # making the state directory
            kind = _ERRNO_KINDS.get(exc.errno or 0, "io")
            raise self._fault(exc, what, kind) from None

    async def _transact(self, what: str, op: Op[T], *, durable: bool) -> T:
        return await self._call(
            what, lambda: self._transaction(self._connection(), durable, lambda db: _drive(db, op))
        )

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._call("read", lambda: self._connection().execute(sql, params).fetchall())

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
