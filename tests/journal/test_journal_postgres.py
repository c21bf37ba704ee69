"""What only the PostgreSQL journal has to show: replicas racing on one database, migrations
under concurrent start, a server restart, and a password that never leaks. Against a real
server (tests/support/pgserver.py)."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest

from srd.cli.journal import journal_list, journal_show
from srd.config import ConfigError, parse_config
from srd.journal import (
    JournalError,
    PostgresJournal,
    StepRecord,
    check_journal_url,
    open_journal,
)
from srd.journal.postgres import MIGRATIONS
from tests.support.daemon import free_port
from tests.support.pgserver import PASSWORD, PgDatabase, PgServer


async def opened(database: PgDatabase, count: int) -> list[PostgresJournal]:
    return list(
        await asyncio.gather(
            *(PostgresJournal.open(database.url, password=database.password) for _ in range(count))
        )
    )


async def close_all(journals: list[PostgresJournal]) -> None:
    for journal in journals:
        await journal.close()


async def test_replicas_racing_on_one_alert_start_exactly_one_execution(
    pg_database: PgDatabase,
) -> None:
    replicas = await opened(pg_database, 3)
    try:
        for attempt in range(5):  # several races: one lucky interleaving proves little
            key = f"failover/fp1/2024-05-01T12:00:0{attempt}Z"
            receipts = await asyncio.gather(
                *(r.record_alert("fp1", key, "firing", {"n": i}) for i, r in enumerate(replicas))
            )
            executions = await asyncio.gather(
                *(r.start_execution("failover", key, "armed", f"c{i}", {}) for i, r in
                  enumerate(replicas))
            )  # fmt: skip
            assert sorted(receipts) == [False, False, True]
            assert sum(e is not None for e in executions) == 1
        assert len(await replicas[0].executions()) == 5
    finally:
        await close_all(replicas)


async def test_replicas_starting_at_once_migrate_the_schema_once(
    pg_server: PgServer, pg_database: PgDatabase
) -> None:
    replicas = await opened(pg_database, 4)
    await close_all(replicas)
    with pg_server.connect(pg_database) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(version,) for version in range(1, len(MIGRATIONS) + 1)]


async def test_after_a_server_restart_the_next_call_reconnects() -> None:
    with PgServer.running() as server:
        database = server.create_database()
        journal = await PostgresJournal.open(database.url, password=database.password)
        try:
            execution = await journal.start_execution("failover", "k1", "armed", "c1", {})
            assert execution is not None
            await asyncio.to_thread(server.restart)
            # Pooled connections died with the server; each call checks its connection first.
            await journal.step(
                StepRecord(execution.id, 0, "scale", "started", f"{execution.id}:0", 0.0)
            )
            assert [s.name for s in await journal.steps(execution.id)] == ["scale"]
        finally:
            await journal.close()


async def test_a_server_that_is_down_is_a_clear_error_and_the_call_after_it_works() -> None:
    with PgServer.running() as server:
        database = server.create_database()
        journal = await PostgresJournal.open(database.url, password=database.password)
        try:
            await asyncio.to_thread(server.stop)
            with pytest.raises(JournalError) as caught:
                await journal.executions()
            message = str(caught.value)
            assert message.startswith(f"journal postgresql://srd@127.0.0.1:{server.port}/")
            assert "read failed" in message and "check that PostgreSQL is up" in message
            await asyncio.to_thread(server.start)
            assert await journal.executions() == []
        finally:
            await journal.close()


async def test_an_unreachable_server_is_named_without_the_password() -> None:
    url = f"postgresql://srd@127.0.0.1:{free_port()}/srd"
    with pytest.raises(JournalError) as caught:
        await open_journal(url, password=PASSWORD)
    message = str(caught.value)
    assert message.startswith(f"journal {url}: connect failed: ")
    assert "refused" in message
    assert PASSWORD not in message


async def test_a_wrong_password_says_so_and_shows_neither_password(
    pg_database: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-" + PASSWORD
    with pytest.raises(JournalError, match="password authentication failed") as caught:
        await open_journal(pg_database.url, password=wrong)
    assert wrong not in str(caught.value) and PASSWORD not in str(caught.value)
    journal = await open_journal(pg_database.url, password=pg_database.password)
    await journal.close()
    assert PASSWORD not in caplog.text and wrong not in caplog.text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://srd:hunter2@db/srd", "remove the password from the URL"),
        ("postgresql://srd@db/srd?password=hunter2", "remove password= from the URL"),
        ("postgresql://srd@db:port/srd", "the port is not a number"),
        ("postgresql://srd@db/srd?bogus=1", 'invalid URI query parameter: "bogus"'),
        ("postgresql://srd@db", "name the database"),
        ("ftp://db/srd", "unsupported journal URL scheme 'ftp'"),
    ],
)
def test_malformed_journal_urls_are_refused_without_echoing_a_password(
    url: str, message: str
) -> None:
    with pytest.raises(JournalError, match=message) as caught:
        check_journal_url(url)
    assert "hunter2" not in str(caught.value)


def test_srd_check_validates_the_journal_url_and_keeps_the_password_out_of_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("failover:\n  journal: postgresql://srd:hunter2@db/srd\n", "srd.yaml")
    [issue] = caught.value.issues
    assert str(issue).startswith("srd.yaml:2: failover.journal: journal URL postgresql://srd@db")
    assert "hunter2" not in str(issue)
    with pytest.raises(ConfigError, match="journal_password is only used by a postgresql"):
        parse_config("failover:\n  journal_password: {env: HOME}\n", "srd.yaml")


def test_the_config_takes_the_password_from_a_secret_ref(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNAL_PASSWORD", "hunter2")
    text = (
        "failover:\n  journal: postgresql://srd@db:5432/srd\n"
        "  journal_password: {env: JOURNAL_PASSWORD}\n"
    )
    failover = parse_config(text, "srd.yaml").failover
    assert failover.journal_password is not None
    assert failover.journal_password.value == "hunter2"
    assert "hunter2" not in repr(failover)


async def test_srd_journal_lists_and_shows_a_postgres_journal(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with await PostgresJournal.open(pg_database.url, password=PASSWORD) as journal:
        execution = await journal.start_execution(
            "failover", "k1", "armed", "c1", {"labels": {"alertname": "PrimaryDown"}}
        )
    assert execution is not None
    out = io.StringIO()
    # The CLI runs its own event loop; as a user would, it takes the password from libpq's env.
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    code = await asyncio.to_thread(journal_list, pg_database.url, out=out)
    assert code == 0
    assert execution.id in out.getvalue() and "PrimaryDown" in out.getvalue()
    out = io.StringIO()
    assert await asyncio.to_thread(journal_show, pg_database.url, execution.id, out=out) == 0
    assert "planned" in out.getvalue()


async def test_srd_journal_refuses_a_database_without_a_journal(
    pg_database: PgDatabase, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = await asyncio.to_thread(
        journal_list, pg_database.url, out=io.StringIO(), password=PASSWORD
    )
    assert code == 1
    assert "no journal at" in capsys.readouterr().err
