"""``srd journal``: the table, the timeline and the JSON, from a journal a daemon wrote.

Sync tests: the CLI functions run their own event loop, as under ``srd journal``.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from srd.cli.journal import journal_list, journal_show
from srd.journal import JOURNAL_FILE, SqliteJournal
from tests.http.test_journal_api import populate


@pytest.fixture
def state_dir(tmp_path: Path) -> tuple[Path, str, str]:
    older, newer = asyncio.run(populate(tmp_path / JOURNAL_FILE))
    return tmp_path, older, newer


def test_journal_list_prints_a_table_newest_first(state_dir: tuple[Path, str, str]) -> None:
    path, older, newer = state_dir
    out = io.StringIO()
    assert journal_list(path, limit=20, out=out) == 0
    assert out.getvalue().splitlines() == [
        "ID            CREATED (UTC)            RUNBOOK     MODE     STATE      ALERT",
        f"{newer}  2024-05-01 12:01:00.000  failover    armed    succeeded  PrimaryDown",
        f"{older}  2024-05-01 12:00:00.000  blue-green  dry-run  blocked    -",
    ]


def test_journal_list_reads_a_sqlite_url_and_prints_json(
    state_dir: tuple[Path, str, str],
) -> None:
    path, _, newer = state_dir
    out = io.StringIO()
    assert journal_list(f"sqlite://{path / JOURNAL_FILE}", limit=1, as_json=True, out=out) == 0
    [execution] = json.loads(out.getvalue())
    assert (execution["id"], execution["state"]) == (newer, "succeeded")


def test_journal_show_prints_the_step_timeline(state_dir: tuple[Path, str, str]) -> None:
    path, _, newer = state_dir
    out = io.StringIO()
    assert journal_show(path, newer, out=out) == 0
    assert out.getvalue().splitlines() == [
        f"execution    {newer}",
        "runbook      failover",
        "state        succeeded (mode armed)",
        "alert        PrimaryDown alertname=PrimaryDown chain=vilokanam",
        "key          k2",
        "correlation  c2",
        "created      2024-05-01 12:01:00.000 UTC",
        "",
        "TIME (UTC)               +SECONDS  EVENT   NAME             DETAIL",
        "2024-05-01 12:01:00.000  +0.000    state   planned",
        "2024-05-01 12:01:00.500  +0.500    state   running",
        "2024-05-01 12:01:01.000  +1.000    step 0  scale-backup-up  started",
        "2024-05-01 12:01:21.000  +21.000   step 0  scale-backup-up  ended ok",
        "2024-05-01 12:01:31.000  +31.000   step 1  route53-upsert   started",
        "2024-05-01 12:01:40.500  +40.500   step 1  route53-upsert   ended ok",
        "2024-05-01 12:02:00.000  +60.000   state   succeeded",
    ]


def test_journal_show_puts_guard_blocks_on_the_timeline(
    state_dir: tuple[Path, str, str],
) -> None:
    path, older, _ = state_dir
    out = io.StringIO()
    assert journal_show(path, older, out=out) == 0
    a_guard_says_why = "blocked: would leave 0 healthy sides"
    lines = [line.split(maxsplit=5) for line in out.getvalue().splitlines()]
    assert lines[-2:] == [
        ["2024-05-01", "12:00:01.000", "+1.000", "guard", "min_healthy", a_guard_says_why],
        ["2024-05-01", "12:00:01.250", "+1.250", "state", "blocked", '{"guard":"min_healthy"}'],
    ]


def test_journal_show_json_matches_the_http_api(state_dir: tuple[Path, str, str]) -> None:
    path, _, newer = state_dir
    out = io.StringIO()
    assert journal_show(path, newer, as_json=True, out=out) == 0
    body = json.loads(out.getvalue())
    assert body["id"] == newer
    assert len(body["steps"]) == 4


def test_journal_show_of_an_unknown_id_exits_1(
    state_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = state_dir
    assert journal_show(path, "nope", out=io.StringIO()) == 1
    assert "no execution 'nope'" in capsys.readouterr().err


def test_the_cli_never_creates_a_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert journal_list(tmp_path, limit=20, out=io.StringIO()) == 1
    assert f"no journal at {tmp_path / JOURNAL_FILE}" in capsys.readouterr().err
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_journal_list_of_an_empty_journal_says_so(tmp_path: Path) -> None:
    async def create() -> None:
        await (await SqliteJournal.open(tmp_path / JOURNAL_FILE)).close()

    asyncio.run(create())
    out = io.StringIO()
    assert journal_list(tmp_path, limit=20, out=out) == 0
    assert out.getvalue() == "no executions\n"
