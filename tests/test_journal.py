from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import srd.journal
from srd.journal import (
    JOURNAL_FILE,
    JournalError,
    SqliteJournal,
    StepRecord,
    journal_path,
    open_journal,
)
from srd.model import RecoveryRecord

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def journal(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteJournal]:
    async with await SqliteJournal.open(tmp_path / JOURNAL_FILE, clock=clock) as journal:
        yield journal


def step(execution_id: str, index: int, phase: str, **fields: object) -> StepRecord:
    return StepRecord(
        execution_id, index, f"step-{index}", phase, f"{execution_id}:{index}", T0, **fields
    )


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- idempotency


async def test_the_same_alert_received_twice_is_recorded_once(journal: SqliteJournal) -> None:
    alert = {"labels": {"alertname": "PrimaryDown"}, "fingerprint": "f1"}
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "firing", alert) is True
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "firing", alert) is False


async def test_the_resolved_notification_of_a_recorded_alert_is_new(
    journal: SqliteJournal,
) -> None:
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "firing", {}) is True
    assert await journal.record_alert("f1", "2024-05-01T12:00:00Z", "resolved", {}) is True
    # A new incident of the same alert starts at another time: new as well.
    assert await journal.record_alert("f1", "2024-05-02T08:00:00Z", "firing", {}) is True


async def test_starting_an_execution_with_a_used_key_returns_none(
    journal: SqliteJournal,
) -> None:
    first = await journal.start_execution("failover", "k1", "armed", "c1", {})
    assert first is not None
    assert first.state == "planned"
    assert await journal.start_execution("failover", "k1", "armed", "c2", {}) is None
    assert [e.id for e in await journal.executions()] == [first.id]


async def test_a_step_event_written_twice_keeps_the_first(journal: SqliteJournal) -> None:
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


async def test_writes_for_an_unknown_execution_are_refused(journal: SqliteJournal) -> None:
    with pytest.raises(KeyError, match="nope"):
        await journal.set_state("nope", "running")
    with pytest.raises(KeyError, match="nope"):
        await journal.step(step("nope", 0, "started"))
    with pytest.raises(KeyError, match="nope"):
        await journal.guard_blocked("nope", "cooldown", "ran 5 m ago")


# --- append-only history


async def test_state_changes_are_new_rows_and_the_latest_wins(
    journal: SqliteJournal, clock: FakeClock
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
    ],
)
async def test_the_file_itself_refuses_to_rewrite_history(
    journal: SqliteJournal, statement: str
) -> None:
    execution = await journal.start_execution("failover", "k1", "dry-run", "c1", {})
    assert execution is not None
    await journal.step(step(execution.id, 0, "started"))
    await journal.guard_blocked(execution.id, "mode", "observe")
    await journal.record_alert("f1", "s", "firing", {})
    db = raw(journal.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    finally:
        db.close()


async def test_guard_blocks_are_listed_newest_first_per_execution_or_all(
    journal: SqliteJournal, clock: FakeClock
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


async def test_everything_written_survives_close_and_reopen(tmp_path: Path) -> None:
    first = await open_journal(tmp_path)
    execution = await first.start_execution("failover", "k1", "armed", "c1", {"a": 1})
    assert execution is not None
    await first.set_state(execution.id, "running")
    await first.step(step(execution.id, 0, "started", prior={"weight": 100}))
    await first.record_alert("f1", "s", "firing", {})
    await first.close()

    reopened = await open_journal(tmp_path)
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
    tmp_path: Path,
) -> None:
    journal = await open_journal(tmp_path)
    planned = await journal.start_execution("failover", "k1", "armed", "c1", {})
    running = await journal.start_execution("failover", "k2", "armed", "c2", {})
    done = await journal.start_execution("failover", "k3", "armed", "c3", {})
    assert planned and running and done
    await journal.set_state(running.id, "running")
    await journal.step(step(running.id, 0, "started"))
    await journal.set_state(done.id, "running")
    await journal.set_state(done.id, "succeeded")
    await journal.close()

    journal = await open_journal(tmp_path)
    try:
        unfinished = await journal.unfinished()
        assert [(e.id, e.state) for e in unfinished] == [
            (planned.id, "planned"),
            (running.id, "running"),
        ]
    finally:
        await journal.close()


CHILD = """
import asyncio, sys
from pathlib import Path
from srd.journal import SqliteJournal, StepRecord

async def main(path, key):
    journal = await SqliteJournal.open(Path(path))
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


async def test_a_process_killed_mid_write_leaves_a_consistent_journal(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    acknowledged: dict[str, set[tuple[str, int]]] = {}
    for round_, kill_after in enumerate((3, 40, 151)):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(path), f"round-{round_}",
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert child.stdout is not None
        _, execution_id = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
        seen = acknowledged.setdefault(execution_id.decode(), set())
        while len(seen) < kill_after:
            phase, index = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
            seen.add((phase.decode(), int(index)))
        child.kill()  # SIGKILL: no handler, no cleanup, mid-way through whatever it does
        await child.wait()
        assert child.returncode == -9

    db = raw(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    journal = await open_journal(tmp_path)
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


async def test_a_write_waiting_on_the_disk_does_not_block_the_event_loop(
    journal: SqliteJournal,
) -> None:
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
    journal: SqliteJournal, clock: FakeClock
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
    journal: SqliteJournal, clock: FakeClock
) -> None:
    drill = await journal.start_execution(
        "restore", "k1", "armed", "c1", {"scenario": "db-restore", "kind": "drill"}
    )
    assert drill is not None
    clock.now = T0 + 95
    await journal.set_state(drill.id, "succeeded")
    assert await journal.recovery_records() == [RecoveryRecord("db-restore", T0, T0 + 95, "drill")]


async def test_only_armed_successful_executions_with_a_scenario_are_recoveries(
    journal: SqliteJournal,
) -> None:
    with_scenario = {"scenario": "primary-region-loss"}
    cases = [
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
    journal: SqliteJournal,
) -> None:
    alert = {"scenario": "s", "startsAt": "2030-01-01T00:00:00Z"}
    execution = await journal.start_execution("failover", "k1", "armed", "c1", alert)
    assert execution is not None
    await journal.set_state(execution.id, "succeeded")
    [record] = await journal.recovery_records()
    assert record.seconds == 0


# --- bounded growth


async def test_prune_drops_old_alert_receipts_and_keeps_executions(
    journal: SqliteJournal, clock: FakeClock
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
        ("postgresql://db/srd", "unsupported journal URL"),
        ("sqlite://relative/j.sqlite3", "absolute path"),
    ],
)
def test_unsupported_journal_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(JournalError, match=message):
        journal_path(url)


async def test_the_journal_file_is_in_wal_mode(journal: SqliteJournal) -> None:
    db = raw(journal.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


async def test_opening_without_create_refuses_a_missing_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        await open_journal(tmp_path, create=False)
    assert not (tmp_path / JOURNAL_FILE).exists()


async def test_a_new_migration_is_applied_once_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await open_journal(tmp_path)
    await journal.record_alert("f1", "s", "firing", {})
    await journal.close()
    monkeypatch.setattr(
        srd.journal, "MIGRATIONS", (*srd.journal.MIGRATIONS, ("CREATE TABLE notes (text TEXT)",))
    )
    for _ in range(2):
        journal = await open_journal(tmp_path)
        await journal.close()

    db = raw(tmp_path / JOURNAL_FILE)
    try:
        assert [v for (v,) in db.execute("SELECT version FROM schema_version")] == [1, 2]
        assert db.execute("SELECT count(*) FROM notes").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM alerts_received").fetchone() == (1,)
    finally:
        db.close()


async def test_a_failing_migration_leaves_the_previous_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await open_journal(tmp_path)).close()
    broken = ("CREATE TABLE notes (text TEXT)", "THIS IS NOT SQL")
    monkeypatch.setattr(srd.journal, "MIGRATIONS", (*srd.journal.MIGRATIONS, broken))
    with pytest.raises(sqlite3.OperationalError):
        await open_journal(tmp_path)

    db = raw(tmp_path / JOURNAL_FILE)
    try:
        assert [v for (v,) in db.execute("SELECT version FROM schema_version")] == [1]
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchone() is None
    finally:
        db.close()


async def test_a_journal_from_a_newer_srd_is_refused(tmp_path: Path) -> None:
    await (await open_journal(tmp_path)).close()
    db = raw(tmp_path / JOURNAL_FILE)
    db.execute("INSERT INTO schema_version VALUES (99, 0)")
    db.close()
    with pytest.raises(JournalError, match="schema version 99 is newer"):
        await open_journal(tmp_path)


async def test_a_closed_journal_refuses_calls(journal: SqliteJournal) -> None:
    await journal.close()
    with pytest.raises(RuntimeError, match="closed"):
        await journal.executions()
