"""The journal's behaviour, on both backends: a SQLite file and a real PostgreSQL server
(tests/support/pgserver.py). Tests of one backend alone say so in their name."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
import pytest_asyncio

import srd.journal.postgres
import srd.journal.sqlite
from srd.journal import (
    JOURNAL_FILE,
    NO_TERM,
    AlertReceipt,
    ExecutionState,
    Fence,
    FencedError,
    Journal,
    JournalError,
    JournalFault,
    PostgresJournal,
    SqliteJournal,
    StepPhase,
    StepRecord,
    journal_path,
    open_journal,
)
from srd.journal.sql import SqlJournal
from srd.model import RecoveryRecord
from tests.support.clock import Clock
from tests.support.pgserver import PgDatabase, PgServer

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@dataclass
class Backend:
    """One journal location on one backend, and a way to look behind the journal's back."""

    name: str
    target: str | Path
    """What ``open_journal`` takes."""
    password: str | None
    module: ModuleType
    """Where the backend's MIGRATIONS live."""
    error: type[Exception]
    """What the database raises for bad SQL or a refused statement."""
    server: PgServer | None = None
    database: PgDatabase | None = None

    async def open(self, clock: Clock | None = None, *, create: bool = True) -> SqlJournal:
        now = clock or time.time
        if self.database is None:
            return await SqliteJournal.open(journal_path(self.target), create=create, clock=now)
        return await PostgresJournal.open(
            self.database.url, password=self.password, create=create, clock=now
        )

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run ``statement`` on a connection of its own, as an operator (or intruder) would."""
        if self.server is None or self.database is None:
            db = raw(journal_path(self.target))
            try:
                return db.execute(statement).fetchall()
            finally:
                db.close()
        with self.server.connect(self.database) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path, None, srd.journal.sqlite, sqlite3.Error)
    server: PgServer = request.getfixturevalue("pg_server")
    db = server.create_database()
    return Backend("postgres", db.url, db.password, srd.journal.postgres, psycopg.Error, server, db)


@pytest_asyncio.fixture
async def journal(backend: Backend, clock: Clock) -> AsyncIterator[SqlJournal]:
    async with await backend.open(clock) as journal:
        yield journal


@pytest_asyncio.fixture
async def sqlite_journal(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteJournal]:
    journal = await SqliteJournal.open(tmp_path / JOURNAL_FILE, clock=clock)
    async with journal:
        yield journal


def step(execution_id: str, index: int, phase: StepPhase, **fields: Any) -> StepRecord:
    return StepRecord(
        execution_id, index, f"step-{index}", phase, f"{execution_id}:{index}", T0, **fields
    )


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- idempotency


async def test_the_same_alert_received_twice_is_recorded_once(journal: SqlJournal) -> None:
    alert = {"labels": {"alertname": "PrimaryDown"}, "fingerprint": "f1"}
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "firing", alert) is True
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "firing", alert) is False


async def test_a_batch_of_alerts_is_recorded_in_one_call_each_new_once(
    journal: SqlJournal,
) -> None:
    batch = [
        AlertReceipt("f1", "2024-05-01T12:00:00Z", "firing", {"n": 1}),
        AlertReceipt("f2", "2024-05-01T12:00:00Z", "firing", {"n": 2}),
        AlertReceipt("f1", "2024-05-01T12:00:00Z", "firing", {"n": 3}),  # an HA duplicate
        AlertReceipt("f1", "2024-05-01T12:00:00Z", "resolved", {"n": 4}),
    ]
    assert await journal.record_alerts(batch) == [True, True, False, True]
    assert await journal.record_alerts(batch[:2]) == [False, False]  # the resend
    assert [s for s, _ in await journal.receipts("f1", "2024-05-01T12:00:00Z")] == [
        "firing",
        "resolved",
    ]


async def test_the_resolved_notification_of_a_recorded_alert_is_new(
    journal: SqlJournal,
) -> None:
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "firing", {}) is True
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "resolved", {}) is True
    # A new incident of the same alert starts at another time: new as well.
    assert await journal.record_alert("f1", "2024-05-02T08:00:00Z", "firing", {}) is True


async def test_starting_an_execution_with_a_used_key_returns_none(
    journal: SqlJournal,
) -> None:
    first = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert first is not None
    assert first.state == "planned"
    assert await journal.start_execution("failover", "k1", "armed", "c2", {}) is None
    assert [e.id for e in await journal.executions()] == [first.id]


async def test_a_step_event_written_twice_keeps_the_first(journal: SqlJournal) -> None:
    execution = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert execution is not None
    await journal.step(step(execution.id, 0, "started", prior={"replicas": 3}))
    await journal.step(step(execution.id, 0, "started", prior={"replicas": 0}))
    await journal.step(step(execution.id, 0, "ended", result="ok"))
    steps = await journal.steps(execution.id)
    assert [(s.phase, s.prior, s.result) for s in steps] == [
        ("started", {"replicas": 3}, None),
        ("ended", None, "ok"),
    ]


async def test_writes_for_an_unknown_execution_are_refused(journal: SqlJournal) -> None:
    with pytest.raises(KeyError, match="nope"):
        await journal.set_state("nope", "running")
    with pytest.raises(KeyError, match="nope"):
        await journal.step(step("nope", 0, "started"))
    with pytest.raises(KeyError, match="nope"):
        await journal.guard_blocked("nope", "cooldown", "ran 5 m ago")


# --- append-only history


async def test_state_changes_are_new_rows_and_the_latest_wins(
    journal: SqlJournal, clock: Clock
) -> None:
    execution = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert execution is not None
    clock.now = T0 + 1
    await journal.set_state(execution.id, "running")
    clock.now = T0 + 9
    await journal.set_state(execution.id, "escalated", {"reason": "health not restored"})

    latest = await journal.execution(execution.id)
    assert latest is not None
    assert (latest.state, latest.created_at, latest.updated_at) == ("escalated", T0, T0 + 9)
    history = await journal.states(execution.id)
    assert [(s.state, s.at, s.detail) for s in history] == [
        ("planned", T0, None),
        ("running", T0 + 1, None),
        ("escalated", T0 + 9, {"reason": "health not restored"}),
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE execution_events SET state = 'succeeded'",
        "DELETE FROM execution_events",
        "UPDATE executions SET mode = 'armed'",
        "DELETE FROM step_events",
        "UPDATE guard_blocks SET reason = ''",
        "UPDATE alerts_received SET status = 'resolved'",
        "UPDATE leader_terms SET term = 9",
        "DELETE FROM leader_terms",
    ],
)
async def test_the_database_itself_refuses_to_rewrite_history(
    backend: Backend, journal: SqlJournal, statement: str
) -> None:
    execution = await journal.start_execution("failover", "k1", "dry-run", "c1", {})
    assert execution is not None
    await journal.step(step(execution.id, 0, "started"), fence=Fence("a", 1))
    await journal.guard_blocked(execution.id, "mode", "observe")
    await journal.record_alert("f1", "s", "firing", {})
    with pytest.raises(backend.error, match="append-only"):
        backend.sql(statement)


@pytest.mark.parametrize("table", ["executions", "step_events", "leader_terms"])
async def test_postgres_refuses_to_truncate_history(
    pg_server: PgServer, pg_database: PgDatabase, table: str
) -> None:
    await (await PostgresJournal.open(pg_database.url, password=pg_database.password)).close()
    with pg_server.connect(pg_database) as conn, pytest.raises(psycopg.Error, match="append-only"):
        conn.execute(f"TRUNCATE {table} CASCADE")


async def test_guard_blocks_are_listed_newest_first_per_execution_or_all(
    journal: SqlJournal, clock: Clock
) -> None:
    execution = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert execution is not None
    await journal.guard_blocked(None, "kill_switch", "file /run/srd/stop exists")
    clock.now = T0 + 5
    await journal.guard_blocked(execution.id, "cooldown", "last run 60 s ago (cooldown 600 s)")
    mine = await journal.guard_blocks(execution.id)
    assert [(b.guard, b.at) for b in mine] == [("cooldown", T0 + 5)]
    every = await journal.guard_blocks()
    assert [(b.execution_id, b.guard) for b in every] == [
        (execution.id, "cooldown"),
        (None, "kill_switch"),
    ]


# --- durability and crashes


async def test_everything_written_survives_close_and_reopen(backend: Backend) -> None:
    first = await open_journal(backend.target, password=backend.password)
    execution = await first.start_execution("failover", "k1", "armed", "c1", {"a": 1})
    assert execution is not None
    await first.set_state(execution.id, "running")
    await first.step(step(execution.id, 0, "started", prior={"weight": 100}))
    await first.record_alert("f1", "s", "firing", {})
    await first.close()

    reopened = await open_journal(backend.target, password=backend.password)
    try:
        again = await reopened.execution(execution.id)
        assert again is not None
        assert (again.state, again.alert) == ("running", {"a": 1})
        assert [s.prior for s in await reopened.steps(execution.id)] == [{"weight": 100}]
        assert await reopened.record_alert("f1", "s", "firing", {}) is False
        assert await reopened.start_execution("failover", "k1", "armed", "c1", {}) is None
    finally:
        await reopened.close()


async def test_unfinished_lists_planned_and_running_executions_left_by_a_crash(
    backend: Backend,
) -> None:
    journal = await backend.open()
    planned = await journal.start_execution("failover", "k1", "armed", "c1", {})
    running = await journal.start_execution("failover", "k2", "armed", "c2", {})
    done = await journal.start_execution("failover", "k3", "armed", "c3", {})
    assert planned and running and done
    await journal.set_state(running.id, "running")
    await journal.step(step(running.id, 0, "started"))
    await journal.set_state(done.id, "running")
    await journal.set_state(done.id, "succeeded")
    await journal.close()

    journal = await backend.open()
    try:
        unfinished = await journal.unfinished()
        assert [(e.id, e.state) for e in unfinished] == [
            (planned.id, "planned"),
            (running.id, "running"),
        ]
    finally:
        await journal.close()


CHILD = """
import asyncio, os, sys
from srd.journal import StepRecord, open_journal

async def main(target, key):
    journal = await open_journal(target, password=os.environ.get("JOURNAL_PASSWORD"))
    execution = await journal.start_execution("failover", key, "armed", key, {})
    await journal.set_state(execution.id, "running")
    print("execution", execution.id, flush=True)
    for index in range(1_000_000):
        for phase in ("started", "ended"):
            result = "ok" if phase == "ended" else None
            await journal.step(StepRecord(
                execution.id, index, f"step-{index}", phase, f"{execution.id}:{index}",
                0.0, result=result, prior={"padding": "x" * 2000},
            ))
            print(phase, index, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_process_killed_mid_write_leaves_a_consistent_journal(backend: Backend) -> None:
    acknowledged: dict[str, set[tuple[str, int]]] = {}
    env = {**os.environ, "JOURNAL_PASSWORD": backend.password or ""}
    for round_, kill_after in enumerate((3, 40, 151)):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(backend.target), f"round-{round_}",
            stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        _, created = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
        seen = acknowledged.setdefault(created.decode(), set())
        while len(seen) < kill_after:
            phase, index = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
            seen.add((phase.decode(), int(index)))
        child.kill()  # SIGKILL: no handler, no cleanup, mid-way through whatever it does
        await child.wait()
        assert child.returncode == -9

    if backend.name == "sqlite":
        assert backend.sql("PRAGMA integrity_check") == [("ok",)]
    journal = await backend.open()
    try:
        unfinished = {e.id for e in await journal.unfinished()}
        assert unfinished == set(acknowledged)
        for execution_id, seen in acknowledged.items():
            steps = await journal.steps(execution_id)
            written = {(s.phase, s.index) for s in steps}
            assert seen <= written, "a write acknowledged to the caller was lost"
            started = {s.index for s in steps if s.phase == "started"}
            ended = {s.index for s in steps if s.phase == "ended"}
            assert ended <= started
            # The only step in doubt is the last one started, of an execution to reconcile.
            assert started - ended <= {max(started)}
            assert started == set(range(len(started)))
    finally:
        await journal.close()


async def test_a_sqlite_write_waiting_on_the_disk_does_not_block_the_event_loop(
    sqlite_journal: SqliteJournal,
) -> None:
    journal = sqlite_journal
    holder = raw(journal.path)
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock, as a stalled disk would
    try:
        write = asyncio.create_task(journal.record_alert("f1", "s", "firing", {}))
        started = time.monotonic()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 1.0
        assert not write.done()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await write is True


# --- recovery records (measured RTO)


async def test_recovery_records_run_from_the_alert_start_to_success(
    journal: SqlJournal, clock: Clock
) -> None:
    alert = {
        "labels": {"alertname": "PrimaryDown", "scenario": "primary-region-loss"},
        "startsAt": "2024-05-01T11:59:00.123456789Z",
    }
    clock.now = T0
    real = await journal.start_execution("failover", "k1", "armed", "c1", alert)
    assert real is not None
    await journal.set_state(real.id, "running")
    clock.now = T0 + 240
    await journal.set_state(real.id, "succeeded")

    assert await journal.recovery_records() == [
        RecoveryRecord("primary-region-loss", T0 - 60 + 0.123456, T0 + 240, "real")
    ]
    assert (await journal.recovery_records())[0].seconds == pytest.approx(300 - 0.123456)


async def test_drills_name_their_scenario_and_kind_and_start_at_creation(
    journal: SqlJournal, clock: Clock
) -> None:
    drill = await journal.start_execution(
        "restore", "k1", "armed", "c1", {"scenario": "db-restore", "kind": "drill"}
    )
    assert drill is not None
    clock.now = T0 + 95
    await journal.set_state(drill.id, "succeeded")
    assert await journal.recovery_records() == [RecoveryRecord("db-restore", T0, T0 + 95, "drill")]


async def test_only_armed_successful_executions_with_a_scenario_are_recoveries(
    journal: SqlJournal,
) -> None:
    with_scenario = {"scenario": "primary-region-loss"}
    cases: list[tuple[str, str, dict[str, Any], ExecutionState]] = [
        ("k1", "armed", with_scenario, "failed"),
        ("k2", "armed", with_scenario, "escalated"),
        ("k3", "armed", with_scenario, "running"),
        ("k4", "dry-run", with_scenario, "succeeded"),
        ("k5", "armed", {"labels": {"alertname": "X"}}, "succeeded"),
    ]
    for key, mode, alert, state in cases:
        execution = await journal.start_execution("failover", key, mode, key, alert)
        assert execution is not None
        await journal.set_state(execution.id, state)
    assert await journal.recovery_records() == []


async def test_an_alert_clock_ahead_of_ours_gives_a_zero_interval_not_an_error(
    journal: SqlJournal,
) -> None:
    alert = {"scenario": "s", "startsAt": "2030-01-01T00:00:00Z"}
    execution = await journal.start_execution("failover", "k1", "armed", "c1", alert)
    assert execution is not None
    await journal.set_state(execution.id, "succeeded")
    [record] = await journal.recovery_records()
    assert record.seconds == 0


# --- bounded growth


async def test_prune_drops_old_alert_receipts_and_keeps_executions(
    journal: SqlJournal, clock: Clock
) -> None:
    await journal.record_alert("old", "s", "firing", {})
    execution = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert execution is not None
    clock.now = T0 + 8 * 86400
    await journal.record_alert("new", "s", "firing", {})

    assert await journal.prune(7 * 86400) == 1
    assert await journal.record_alert("old", "s", "firing", {}) is True
    assert await journal.record_alert("new", "s", "firing", {}) is False
    assert await journal.execution(execution.id) is not None


# --- opening, schema versions and migrations


def test_a_state_directory_or_a_sqlite_url_names_the_journal(tmp_path: Path) -> None:
    assert journal_path(tmp_path) == tmp_path / "journal.sqlite3"
    assert journal_path(str(tmp_path)) == tmp_path / "journal.sqlite3"
    assert journal_path(f"sqlite://{tmp_path}/j.sqlite3") == tmp_path / "j.sqlite3"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/srd", "unsupported journal URL scheme 'mysql'"),
        ("sqlite://relative/j.sqlite3", "absolute path"),
    ],
)
def test_unsupported_journal_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(JournalError, match=message):
        journal_path(url)


async def test_the_sqlite_journal_file_is_in_wal_mode(sqlite_journal: SqliteJournal) -> None:
    db = raw(sqlite_journal.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


async def test_opening_without_create_refuses_a_missing_journal(backend: Backend) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        await backend.open(create=False)
    if backend.name == "sqlite":
        assert not journal_path(backend.target).exists()
    else:
        assert backend.sql("SELECT to_regclass('schema_version')") == [(None,)]


async def test_a_new_migration_is_applied_once_on_open(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await backend.open()
    await journal.record_alert("f1", "s", "firing", {})
    await journal.close()
    known = backend.module.MIGRATIONS
    monkeypatch.setattr(backend.module, "MIGRATIONS", (*known, ("CREATE TABLE notes (text TEXT)",)))
    for _ in range(2):
        await (await backend.open()).close()

    versions = backend.sql("SELECT version FROM schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, len(known) + 2))
    assert backend.sql("SELECT count(*) FROM notes") == [(0,)]
    assert backend.sql("SELECT count(*) FROM alerts_received") == [(1,)]


async def test_a_journal_of_the_previous_schema_gains_leader_terms_on_open(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = backend.module.MIGRATIONS
    with monkeypatch.context() as patch:
        patch.setattr(backend.module, "MIGRATIONS", known[:1])
        old = await backend.open()
        execution = await old.start_execution("failover", "k1", "armed", "c1", {})
        await old.close()
    assert execution is not None
    async with await backend.open() as journal:
        await journal.set_state(execution.id, "running", fence=Fence("a", 3))
    assert backend.sql("SELECT term, holder FROM leader_terms") == [(3, "a")]


async def test_a_failing_migration_leaves_the_previous_schema(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await backend.open()).close()
    known = backend.module.MIGRATIONS
    broken = ("CREATE TABLE notes (text TEXT)", "THIS IS NOT SQL")
    monkeypatch.setattr(backend.module, "MIGRATIONS", (*known, broken))
    with pytest.raises(JournalFault, match="syntax error"):
        await backend.open()

    versions = backend.sql("SELECT version FROM schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, len(known) + 1))
    with pytest.raises(backend.error, match="notes"):
        backend.sql("SELECT * FROM notes")


async def test_a_journal_from_a_newer_srd_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    backend.sql("INSERT INTO schema_version VALUES (99, 0)")
    with pytest.raises(JournalError, match="schema version 99 is newer"):
        await backend.open()


async def test_a_closed_journal_refuses_calls(journal: SqlJournal) -> None:
    await journal.close()
    with pytest.raises(RuntimeError, match="closed"):
        await journal.executions()


# --- fencing: a deposed leader writes nothing more


async def started(journal: Journal) -> str:
    execution = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert execution is not None
    return execution.id


async def test_a_deposed_leaders_next_step_is_refused_and_not_written(backend: Backend) -> None:
    # Two replicas, each with its own connection to the one journal.
    a, b = await backend.open(), await backend.open()
    try:
        execution_id = await started(a)
        await a.step(step(execution_id, 0, "started"), fence=Fence("a", 1))
        await b.lead(Fence("b", 2))

        with pytest.raises(FencedError, match="a at term 1 is deposed; b leads at term 2"):
            await a.step(step(execution_id, 0, "ended", result="ok"), fence=Fence("a", 1))
        with pytest.raises(FencedError):
            await a.set_state(execution_id, "succeeded", fence=Fence("a", 1))

        assert [(s.index, s.phase) for s in await b.steps(execution_id)] == [(0, "started")]
        [(state, _)] = [(c.state, c.at) for c in await b.states(execution_id)]
        assert state == "planned"
        await b.step(step(execution_id, 0, "ended", result="ok"), fence=Fence("b", 2))
    finally:
        await a.close()
        await b.close()


async def test_the_first_fenced_write_of_a_new_term_records_it(journal: SqlJournal) -> None:
    execution_id = await started(journal)
    await journal.set_state(execution_id, "running", fence=Fence("a", 1))
    await journal.step(step(execution_id, 0, "started"), fence=Fence("b", 2))
    with pytest.raises(FencedError):
        await journal.step(step(execution_id, 0, "ended", result="ok"), fence=Fence("a", 1))
    # The refused write left nothing behind; unfenced writes (a single srd) are not checked.
    await journal.step(step(execution_id, 1, "started"))
    assert [(s.index, s.phase) for s in await journal.steps(execution_id)] == [
        (0, "started"),
        (1, "started"),
    ]


async def test_a_term_stays_refused_after_its_successor_released_the_lease(
    journal: SqlJournal,
) -> None:
    execution_id = await started(journal)
    await journal.lead(Fence("a", 1))
    await journal.lead(Fence("b", 2))
    # b released the Lease and nobody holds it: term 2 is still the highest recorded.
    with pytest.raises(FencedError):
        await journal.set_state(execution_id, "running", fence=Fence("a", 1))
    with pytest.raises(FencedError):
        await journal.lead(Fence("a", 1))


async def test_another_holder_at_the_same_term_is_refused(journal: SqlJournal) -> None:
    execution_id = await started(journal)
    await journal.lead(Fence("a", 4))
    with pytest.raises(FencedError, match="b at term 4 is deposed; a leads at term 4"):
        await journal.set_state(execution_id, "running", fence=Fence("b", 4))
    await journal.set_state(execution_id, "running", fence=Fence("a", 4))


async def test_a_replica_that_does_not_lead_is_refused_even_by_an_empty_journal(
    journal: SqlJournal,
) -> None:
    execution_id = await started(journal)
    with pytest.raises(FencedError, match="does not lead"):
        await journal.set_state(execution_id, "running", fence=Fence("a", NO_TERM))
    assert [s.state for s in await journal.states(execution_id)] == ["planned"]


async def test_racing_new_leaders_leave_one_term_each_and_the_highest_wins(
    backend: Backend,
) -> None:
    journals = [await backend.open() for _ in range(3)]
    try:
        execution_id = await started(journals[0])
        outcomes = await asyncio.gather(
            *(
                j.set_state(execution_id, "running", fence=Fence(f"r{term}", term))
                for term, j in enumerate(journals, start=1)
                for _ in range(3)
            ),
            return_exceptions=True,
        )
        assert all(o is None or isinstance(o, FencedError) for o in outcomes)
        # Whatever the order, nothing below the highest term wrote after it was recorded.
        terms = backend.sql("SELECT term, holder FROM leader_terms ORDER BY term")
        assert terms[-1] == (3, "r3")
        with pytest.raises(FencedError):
            await journals[0].set_state(execution_id, "failed", fence=Fence("r1", 1))
    finally:
        for j in journals:
            await j.close()


async def test_an_armed_replicas_demand_for_auth_is_shared_and_never_lifted(
    backend: Backend, journal: SqlJournal, clock: Clock
) -> None:
    assert await journal.auth_required() is None
    await journal.require_auth("replica-0")
    async with await backend.open(clock) as other:  # another replica on the same journal
        assert await other.auth_required() == "replica-0"
    with pytest.raises(backend.error, match="append-only"):
        backend.sql("DELETE FROM auth_required_events")
    assert await journal.auth_required() == "replica-0"
