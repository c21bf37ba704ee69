from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from srd.cli.journal import journal_show
from srd.config.failover import WebhookAuth
from srd.http.auth import Authenticator
from srd.http.journal_api import add_routes
from srd.journal import JOURNAL_FILE, SqliteJournal, StepRecord
from tests.support.clock import Clock
from tests.support.servers import running

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
ALERT = {"labels": {"alertname": "PrimaryDown", "chain": "vilokanam"}, "fingerprint": "f1"}


async def populate(path: Path) -> tuple[str, str]:
    """Two executions: an older dry-run that a guard blocked, a newer armed failover that
    succeeded in two steps. Returns their ids (older, newer)."""
    clock = Clock(T0)
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
    journal = await SqliteJournal.open(tmp_path / JOURNAL_FILE)
    async with journal:
        yield journal


@pytest_asyncio.fixture
async def api(journal: SqliteJournal) -> AsyncIterator[str]:
    app = web.Application()
    add_routes(app, journal, Authenticator(None))
    async with running(app) as server:
        yield server.url


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


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
    route = path.replace("{id}", newest)
    async with running(app) as server:
        for headers in (None, {"Authorization": "Bearer wrong"}):
            status, body = await get(server.url + route, headers)
            assert (status, body) == (401, {"error": "authentication required"})
        status, _ = await get(server.url + route, {"Authorization": "Bearer s3cret"})
        assert status == 200


async def test_the_resolved_notification_of_an_executions_alert_is_shown(tmp_path: Path) -> None:
    clock = Clock(T0)
    alert: dict[str, Any] = {
        "fingerprint": "f9",
        "startsAt": "2024-05-01T11:59:00.000Z",
        "labels": {},
    }
    async with await SqliteJournal.open(tmp_path / JOURNAL_FILE, clock=clock) as journal:
        assert await journal.record_alert("f9", alert["startsAt"], "firing", alert)
        execution = await journal.start_execution("failover", "k", "armed", "c", alert)
        assert execution is not None
        clock.now = T0 + 300
        assert await journal.record_alert("f9", alert["startsAt"], "resolved", alert)
        app = web.Application()
        add_routes(app, journal, Authenticator(None))
        async with running(app) as server:
            status, body = await get(f"{server.url}/api/executions/{execution.id}")
    assert status == 200
    assert body["alert_receipts"] == [
        {"status": "firing", "at": T0},
        {"status": "resolved", "at": T0 + 300},
    ]
    out = io.StringIO()
    code = await asyncio.to_thread(journal_show, tmp_path, execution.id, out=out)
    assert code == 0
    assert "+300.000  alert  resolved  received" in out.getvalue()
