"""The journal in PostgreSQL: one journal shared by several srd replicas (``ha``).

Same schema, statements and semantics as SQLite (``srd.journal.sql``). What PostgreSQL adds:
- concurrency: idempotency keys are UNIQUE constraints, so of two replicas recording the same
  alert or starting the same execution exactly one wins; fenced writes and migrations are
  serialised by transaction-scoped advisory locks;
- a pool of autocommit connections, each checked before use: after a server restart the
  broken connections are dropped and the next call gets a fresh one. A call that fails
  mid-way raises JournalError and is not retried: it may have committed, and only the
  caller's idempotency keys can tell;
- timeouts on everything: connecting, waiting for a pooled connection, each statement, each
  call as a whole.
The password is never part of the URL and never in an error: it comes from
``failover.journal_password`` (or libpq's ``PGPASSWORD`` / ``~/.pgpass``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, TypeVar, cast

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from srd.clock import now as clock_now
from srd.config.journal import JournalUrlError, PostgresTarget, postgres_target
from srd.journal.base import JournalError
from srd.journal.faults import FaultKind, JournalFault, JournalHealth
from srd.journal.sql import (
    Clock,
    Dialect,
    Lock,
    Op,
    Result,
    SqlJournal,
    Statement,
    migrate,
    schema,
)

CONNECT_TIMEOUT = 5
"""Seconds to open one connection (libpq's connect_timeout): a reachable server answers in
milliseconds; longer means it is down or a firewall drops the packets."""
STATEMENT_TIMEOUT = 10.0
"""Seconds one statement may run on the server, waits for the fence lock included: every
statement touches a few rows, so longer means a stuck lock, not work."""
CALL_TIMEOUT = 15.0
"""Seconds one journal call may take in all (a connection, its statements, the commit): above
the statement timeout, it catches a network that stopped answering."""
POOL_SIZE = 4
"""Connections per replica: a step write, the webhook's receipts and an API read at once."""
POOL_WAIT = 5.0
"""Seconds a call waits for a pooled connection: calls take milliseconds, so a longer wait
means the pool cannot connect (then one direct attempt finds out why, for the error)."""

T = TypeVar("T")
_LOCKS = {"migrate": 0x5_7D_0001, "fence": 0x5_7D_0002, "approval": 0x5_7D_0003}
"""Advisory lock keys (arbitrary; srd should have a database of its own anyway)."""


def _append_only(table: str, deletable: bool) -> tuple[str, ...]:
    verbs = "UPDATE OR TRUNCATE" if deletable else "UPDATE OR DELETE OR TRUNCATE"
    # TRUNCATE triggers fire per statement; one trigger per table covers all three.
    return (
        f"CREATE TRIGGER {table}_append_only BEFORE {verbs} ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION srd_append_only()",
    )


POSTGRES = Dialect(
    seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    real="DOUBLE PRECISION",
    append_only=_append_only,
    functions=(
        """CREATE FUNCTION srd_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
    ),
)
MIGRATIONS = schema(POSTGRES)


def parse(url: str) -> PostgresTarget:
    """Check a ``postgresql://user@host:port/db`` URL without connecting."""
    try:
        return postgres_target(url)
    except JournalUrlError as exc:
        raise JournalError(str(exc)) from None


class PostgresJournal(SqlJournal):
    def __init__(
        self, target: PostgresTarget, pool: AsyncConnectionPool[Any], kwargs: dict[str, Any],
        clock: Clock, health: JournalHealth | None = None,
    ) -> None:  # fmt: skip
        super().__init__(clock, health)
        self.target = target
        self._pool = pool
        self._kwargs = kwargs
        self._password: str | None = kwargs.get("password")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        create: bool = True,
        clock: Clock = clock_now,
        health: JournalHealth | None = None,
    ) -> PostgresJournal:
        """Connect, migrate the schema (with ``create``; without it a database that has no
        journal is refused) and open the pool."""
        target = parse(url)
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "srd",
        }
        if password is not None:
            kwargs["password"] = password
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            target.url,
            kwargs=kwargs,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            timeout=POOL_WAIT,
            name="srd-journal",
        )
        journal = cls(target, pool, kwargs, clock, health)
        try:
            # One connection first, so a wrong password or host is named at once (the pool
            # would only time out), then the schema.
            await journal._guarded("connect", journal._connect(create))
            await pool.open(wait=False)
        except BaseException:
            await pool.close()
            raise
        return journal

    async def close(self) -> None:
        await self._pool.close()

    async def _connect(self, create: bool) -> None:
        conn = await AsyncConnection.connect(self.target.url, **self._kwargs)
        async with conn:
            await _configure(conn)
            if not create:
                cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
                row = await cursor.fetchone()
                if row is None or not row[0]:
                    raise JournalError(
                        f"no journal at {self.target.shown}: the database has no srd schema"
                        " (srd creates it when it starts)"
                    )
            op = migrate(MIGRATIONS, POSTGRES, self.target.shown, self._clock())
            await _transaction(conn, op, durable=True)

    async def _transact(self, what: str, op: Op[T], *, durable: bool) -> T:
        return await self._with_connection(what, lambda c: _transaction(c, op, durable))

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async def read(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(_placeholders(sql), params)
            return await cursor.fetchall()

        return await self._with_connection("read", read)

    async def _with_connection(
        self, what: str, work: Callable[[AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        if self._pool.closed:
            raise RuntimeError(f"journal {self.target.shown} is closed")

        async def call() -> T:
            async with self._pool.connection() as conn:
                return await work(conn)

        return await self._guarded(what, call())

    async def _guarded(self, what: str, call: Awaitable[T]) -> T:
        """``call`` within CALL_TIMEOUT; a connection failure becomes a JournalError naming
        the journal, what failed and what to do."""
        kind: FaultKind
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await call
        except PoolTimeout:
            kind, reason = "connection", await self._why_no_connection()
        except TimeoutError:
            kind, reason = "timeout", f"no answer within {CALL_TIMEOUT:g}s"
        except psycopg.Error as exc:
            kind, reason = _kind(exc), self._scrub(str(exc).strip())
            if kind not in ("connection", "timeout"):
                raise JournalFault(
                    f"journal {self.target.shown}: {what} failed: {reason}", kind=kind, op=what
                ) from None
        raise JournalFault(
            f"journal {self.target.shown}: {what} failed: {reason}; check that PostgreSQL is up"
            " and reachable and the user and password are right (the next call reconnects)",
            kind=kind,
            op=what,
        ) from None

    async def _why_no_connection(self) -> str:
        try:
            conn = await AsyncConnection.connect(self.target.url, **self._kwargs)
        except psycopg.OperationalError as exc:
            return self._scrub(str(exc).strip())
        await conn.close()
        return f"no pooled connection within {POOL_WAIT:g}s (a new one works now)"

    def _scrub(self, message: str) -> str:
        return message.replace(self._password, "***") if self._password else message


_SQLSTATE_KINDS: dict[str, FaultKind] = {
    "53100": "full",  # disk_full
    "25006": "read_only",  # read_only_sql_transaction (a standby, or default_transaction_read_only)
    "XX001": "corrupt",  # data_corrupted
    "XX002": "corrupt",  # index_corrupted
    "57014": "timeout",  # query_canceled: statement_timeout
    "55P03": "locked",  # lock_not_available
}


def _kind(exc: psycopg.Error) -> FaultKind:
    kind = _SQLSTATE_KINDS.get(exc.sqlstate or "")
    if kind is not None:
        return kind
    # Connection failures and server shutdowns (class 08, 57P0x) are OperationalErrors.
    return "connection" if isinstance(exc, psycopg.OperationalError) else "error"


async def _configure(conn: AsyncConnection[Any]) -> None:
    await conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT * 1000)}")


async def _transaction(conn: AsyncConnection[Any], op: Op[T], durable: bool) -> T:
    async with conn.transaction(), conn.cursor() as cursor:
        if not durable:
            # As SQLite's NORMAL: committed, not waited for on disk (alert receipts).
            await cursor.execute("SET LOCAL synchronous_commit = off")
        try:
            statement = next(op)
            while True:
                statement = op.send(await _execute(cursor, statement))
        except StopIteration as stop:
            return cast(T, stop.value)


async def _execute(cursor: AsyncCursor[Any], statement: Statement) -> Result:
    if isinstance(statement, Lock):
        await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCKS[statement.name],))
        return Result(0, [])
    if statement.params is None:
        await cursor.execute(statement.sql)
    else:
        await cursor.execute(_placeholders(statement.sql), statement.params)
    rows = await cursor.fetchall() if cursor.description is not None else []
    return Result(cursor.rowcount, rows)


@lru_cache(maxsize=64)
def _placeholders(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the shared statements have no
    literal ``?`` or ``%``)."""
    return sql.replace("?", "%s")
