"""Journal faults, injected for real: a full file (``max_page_count``), a second connection
holding ``BEGIN IMMEDIATE``, a connection that may not write, foreign and truncated files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from srd.failover.intake import IncomingAlert, Intake
from srd.journal import (
    AlertReceipt,
    JournalFault,
    JournalHealth,
    PostgresJournal,
    SqliteJournal,
)
from tests.support.pgserver import PgServer
from tests.support.sqlitelock import held_lock

FaultLog = list[tuple[str, str]]


def receipts(count: int, prefix: str = "f", labels: int = 0) -> list[AlertReceipt]:
    extra = {f"label{i}": "x" * 64 for i in range(labels)}
    return [
        AlertReceipt(f"{prefix}{i}", "2026-01-01T00:00:00.000Z", "firing", {"labels": extra})
        for i in range(count)
    ]


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[SqliteJournal, FaultLog]]:
    health = JournalHealth()
    faults: FaultLog = []
    health.listen(lambda op, kind: faults.append((op, kind)))
    journal = await SqliteJournal.open(tmp_path / "journal.sqlite3", health=health)
    try:
        yield journal, faults
    finally:
        await journal.close()


async def pragma(journal: SqliteJournal, statement: str) -> None:
    """A pragma on srd's own connection: ``max_page_count`` and ``query_only`` hold for the
    connection that sets them, so this is the only way to make srd's writes meet them."""
    await journal._call("test", lambda: journal._connection().execute(statement).fetchall())


async def test_a_full_journal_is_a_full_fault_shown_by_health_until_a_write_succeeds(
    watched: tuple[SqliteJournal, FaultLog],
) -> None:
    journal, faults = watched
    await journal.record_alerts(receipts(10))
    pages = (await journal._read("PRAGMA page_count", ()))[0][0]
    await pragma(journal, f"PRAGMA max_page_count = {pages}")

    with pytest.raises(JournalFault) as caught:
        await journal.record_alerts(receipts(500, "g", labels=8))
    assert (caught.value.kind, caught.value.transient) == ("full", False)
    assert "free space" in str(caught.value)
    assert faults == [("record_alerts", "full")]
    [reason] = journal.health.reasons()
    assert reason.startswith("journal cannot be written (full)")

    await pragma(journal, "PRAGMA max_page_count = 1073741823")
    assert await journal.record_alerts(receipts(2, "h")) == [True, True]
    assert journal.health.reasons() == []
    # Nothing of the refused batch was written: a transaction is all or nothing.
    assert await journal.receipts("g0", "2026-01-01T00:00:00.000Z") == []


async def test_a_journal_srd_may_not_write_is_a_read_only_fault(
    watched: tuple[SqliteJournal, FaultLog],
) -> None:
    journal, faults = watched
    await pragma(journal, "PRAGMA query_only = ON")
    with pytest.raises(JournalFault) as caught:
        await journal.start_execution("rb", "k", "armed", "c", {})
    assert caught.value.kind == "read_only"
    assert faults == [("start_execution", "read_only")]
    assert journal.health.outage is not None


async def test_a_write_retries_a_held_lock_counting_each_attempt_and_succeeds_once_released(
    watched: tuple[SqliteJournal, FaultLog],
) -> None:
    journal, faults = watched
    with held_lock(journal.path, 2.5):
        write = asyncio.create_task(journal.record_alerts(receipts(3)))
        await asyncio.sleep(1.5)
        assert not write.done()
        assert journal.health.outage is not None
        assert journal.health.outage.kind == "locked"
        assert await write == [True, True, True]
    assert faults and set(faults) == {("record_alerts", "locked")}
    assert journal.health.reasons() == []


async def test_a_lock_held_past_the_retry_window_is_a_transient_locked_fault(
    watched: tuple[SqliteJournal, FaultLog],
) -> None:
    journal, _ = watched
    with held_lock(journal.path, 7):
        with pytest.raises(JournalFault) as caught:
            await journal.record_alerts(receipts(1))
        assert (caught.value.kind, caught.value.transient) == ("locked", True)
        assert "another connection holds its write lock" in str(caught.value)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def real_journal(path: Path) -> None:
    journal = await SqliteJournal.open(path)
    await journal.record_alerts(receipts(400, labels=4))
    await journal.close()


def plain_text(path: Path) -> None:
    path.write_text("these are not the droids\n" * 10)


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0:16] = b"\x00" * 16
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [plain_text, truncated, corrupt_header])
async def test_a_foreign_or_damaged_journal_file_is_refused_as_corrupt_and_left_untouched(
    tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "journal.sqlite3"
    await real_journal(path)
    damage(path)  # type: ignore[operator]
    before = digest(path)
    with pytest.raises(JournalFault) as caught:
        await SqliteJournal.open(path)
    assert caught.value.kind == "corrupt"
    assert str(path) in str(caught.value)
    assert "restore it from a backup or move it aside" in str(caught.value)
    assert digest(path) == before
    assert names(tmp_path) == ["journal.sqlite3"]  # no -wal or -shm made beside it


def config_for(directory: Path, port: int) -> Path:
    config = directory / "srd.yaml"
    config.write_text(
        json.dumps(
            {"state_dir": str(directory / "state"), "server": {"listen": f"127.0.0.1:{port}"}}
        )
    )
    return config


@pytest.mark.parametrize("damage", [plain_text, truncated])
async def test_srd_run_on_a_damaged_journal_logs_one_json_line_and_exits_2(
    tmp_path: Path, damage: object
) -> None:
    """Exit 2: the systemd unit's RestartPreventExitStatus, so srd is not restarted forever
    on a file no restart can fix."""
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "journal.sqlite3"
    await real_journal(path)
    damage(path)  # type: ignore[operator]
    before = digest(path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "srd.cli", "run", "--config", str(config_for(tmp_path, 0)),
        "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    lines = [json.loads(line) for line in stderr.decode().splitlines()]  # JSON, every one
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["event"] == "cannot open the journal; srd did not start"
    assert str(path) in errors[0]["error"]
    assert digest(path) == before


async def test_a_stopped_postgresql_is_a_transient_connection_fault_until_it_is_back() -> None:
    """The shared journal down: the intake's group commit fails the waiting request (the
    webhook answers 503), health names the outage, and once the server is back the next
    request is acknowledged."""
    health = JournalHealth()
    faults: FaultLog = []
    health.listen(lambda op, kind: faults.append((op, kind)))
    with PgServer.running() as server:
        database = server.create_database()
        journal = await PostgresJournal.open(
            database.url, password=database.password, health=health
        )
        intake = Intake(100)
        commits = asyncio.create_task(intake.commit(journal))
        alert = IncomingAlert("alertmanager", "firing", "f1", "2026-01-01T00:00:00.000Z", {})
        try:
            await asyncio.to_thread(server.stop)
            with pytest.raises(JournalFault) as caught:
                await intake.submit([alert], 100)
            assert (caught.value.kind, caught.value.transient) == ("connection", True)
            assert ("record_alerts", "connection") in faults
            [reason] = health.reasons()
            assert reason.startswith("journal cannot be written (connection)")
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(20):
                while True:
                    try:
                        await intake.submit([alert], 100)
                        break
                    except JournalFault:
                        await asyncio.sleep(0.2)
            assert health.reasons() == []
            assert [s for s, _ in await journal.receipts("f1", alert.starts_at)] == ["firing"]
        finally:
            intake.close()
            await commits
            await journal.close()


async def test_a_state_directory_that_cannot_be_made_is_a_journal_fault_not_a_traceback(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("in the way")
    path = tmp_path / "file" / "state" / "journal.sqlite3"
    with pytest.raises(JournalFault) as caught:
        await SqliteJournal.open(path)
    assert (caught.value.kind, caught.value.op) == ("io", "open")
    assert str(path) in str(caught.value)
