from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from srd.cli.journal import journal_list, journal_show
from srd.config.failover import WebhookAuth
from srd.http.alertmanager import Authenticator
from srd.http.app import serving
from srd.http.journal_api import add_routes
from srd.journal import JOURNAL_FILE, SqliteJournal, StepRecord

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
ALERT = {"labels": {"alertname": "PrimaryDown", "chain": "vilokanam"}, "fingerprint": "f1"}


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def populate(path: Path) -> tuple[str, str]:
    """Two executions: an older dry-run that a guard blocked, a newer armed failover that
    succeeded in two steps. Returns their ids (older, newer)."""
    clock = FakeClock()
    async with await SqliteJournal.open(path, clock=clock) as journal:
        older = await journal.start_execution("blue-green", "k1", "dry-run", "c1", {})
        assert older is not None
        clock.now = T0 + 1
        await journal.guard_blocked(older.id, "min_healthy", "would leave 0 healthy sides")
        clock.now = T0 + 1.25
        await journal.set_state(older.id, "blocked", {"guard": "min_healthy"})

        clock.now = T0 + 60
        newer = await journal.start_execution("failover", "k2", "armed", "c2", ALERT)
        assert newer is not None
        clock.now = T0 + 60.5
        await journal.set_state(newer.id, "running")
        for index, (name, took) in enumerate((("scale-backup-up", 20.0), ("route53-upsert", 9.5))):
            at = T0 + 61 + 30 * index
            key = f"{newer.id}:{index}"
            prior = {"replicas": 0}
            await journal.step(StepRecord(newer.id, index, name, "started", key, at, prior=prior))
            await journal.step(StepRecord(newer.id, index, name, "ended", key, at + took, "ok"))
        clock.now = T0 + 120
        await journal.set_state(newer.id, "succeeded")
    return older.id, newer.id


@pytest_asyncio.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    await populate(tmp_path / JOURNAL_FILE)
    async with await SqliteJournal.open(tmp_path / JOURNAL_FILE) as journal:
        yield journal


@pytest_asyncio.fixture
async def api(journal: SqliteJournal) -> AsyncIterator[str]:
    app = web.Application()
    add_routes(app, journal, Authenticator(None))
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}"


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


# --- HTTP


async def test_executions_are_listed_newest_first(api: str) -> None:
    status, body = await get(f"{api}/api/executions")
    assert status == 200
    assert [(e["runbook"], e["state"], e["mode"]) for e in body] == [
        ("failover", "succeeded", "armed"),
        ("blue-green", "blocked", "dry-run"),
    ]
    assert body[0]["alert"] == ALERT
    assert (body[0]["created_at"], body[0]["updated_at"]) == (T0 + 60, T0 + 120)


async def test_the_list_is_cut_at_the_limit_asked_for(api: str) -> None:
    status, body = await get(f"{api}/api/executions?limit=1")
    assert status == 200
    assert [e["runbook"] for e in body] == ["failover"]


@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1001", "²"])
async def test_a_bad_limit_is_refused_with_the_reason(api: str, limit: str) -> None:
    status, body = await get(f"{api}/api/executions?limit={limit}")
    assert status == 400
    assert "limit must be an integer from 1 to 1000" in body["error"]


async def test_one_execution_comes_with_its_states_steps_and_guard_blocks(
    api: str, journal: SqliteJournal
) -> None:
    older, newer = [e.id for e in reversed(await journal.executions())]
    status, body = await get(f"{api}/api/executions/{newer}")
    assert status == 200
    assert body["id"] == newer
    assert [s["state"] for s in body["states"]] == ["planned", "running", "succeeded"]
    assert [(s["index"], s["name"], s["phase"], s["result"]) for s in body["steps"]] == [
        (0, "scale-backup-up", "started", None),
        (0, "scale-backup-up", "ended", "ok"),
        (1, "route53-upsert", "started", None),
        (1, "route53-upsert", "ended", "ok"),
    ]
    assert body["steps"][0]["prior"] == {"replicas": 0}
    assert body["guard_blocks"] == []

    status, body = await get(f"{api}/api/executions/{older}")
    assert [(g["guard"], g["reason"]) for g in body["guard_blocks"]] == [
        ("min_healthy", "would leave 0 healthy sides")
    ]
    assert body["states"][-1]["detail"] == {"guard": "min_healthy"}


async def test_an_unknown_execution_is_a_json_404(api: str) -> None:
    status, body = await get(f"{api}/api/executions/nope")
    assert status == 404
    assert body == {"error": "no execution 'nope'"}


@pytest.mark.parametrize("path", ["/api/executions", "/api/executions/{id}"])
async def test_with_credentials_configured_the_read_routes_demand_them(
    journal: SqliteJournal, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("SRD_API_TOKEN", "s3cret")
    auth = Authenticator(WebhookAuth.model_validate({"bearer_token": {"env": "SRD_API_TOKEN"}}))
    app = web.Application()
    add_routes(app, journal, auth)
    newest = (await journal.executions(1))[0].id
    url = "http://127.0.0.1:{port}" + path.replace("{id}", newest)
    async with serving(app, "127.0.0.1", 0) as port:
        for headers in (None, {"Authorization": "Bearer wrong"}):
            status, body = await get(url.format(port=port), headers)
            assert (status, body) == (401, {"error": "authentication required"})
        status, _ = await get(url.format(port=port), {"Authorization": "Bearer s3cret"})
        assert status == 200


# --- CLI (sync: the CLI functions run their own event loop, as under `srd journal`)


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


async def test_the_resolved_notification_of_an_executions_alert_is_shown(tmp_path: Path) -> None:
    clock = FakeClock()
    alert = {"fingerprint": "f9", "startsAt": "2024-05-01T11:59:00.000Z", "labels": {}}
    async with await SqliteJournal.open(tmp_path / JOURNAL_FILE, clock=clock) as journal:
        assert await journal.record_alert("f9", alert["startsAt"], "firing", alert)
        execution = await journal.start_execution("failover", "k", "armed", "c", alert)
        assert execution is not None
        clock.now = T0 + 300
        assert await journal.record_alert("f9", alert["startsAt"], "resolved", alert)
        app = web.Application()
        add_routes(app, journal, Authenticator(None))
        async with serving(app, "127.0.0.1", 0) as port:
            status, body = await get(f"http://127.0.0.1:{port}/api/executions/{execution.id}")
    assert status == 200
    assert body["alert_receipts"] == [
        {"status": "firing", "at": T0},
        {"status": "resolved", "at": T0 + 300},
    ]
    out = io.StringIO()
    code = await asyncio.to_thread(journal_show, tmp_path, execution.id, out=out)
    assert code == 0
    assert "+300.000  alert  resolved  received" in out.getvalue()
