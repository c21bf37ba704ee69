"""``POST /api/executions``: a runbook started by hand, through the same guards and journal as
one an alert starts."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from srd.config.failover import WebhookAuth
from srd.failover.dispatch import Dispatcher
from srd.failover.intake import Intake
from srd.http.alertmanager import add_routes
from srd.http.auth import Authenticator
from srd.http.failover_api import add_api_routes, add_start_route
from srd.journal import ExecutionRecord
from tests.support.eventually import eventually
from tests.support.failoverkit import Kit, kit
from tests.support.servers import running

RUNBOOK = """
runbooks:
  - name: failover-web
    match: [alertname="ServiceDown", service="web", severity=~"page|ticket"]
    settle: 1h
    steps:
      - {name: a, action: {actuator: fake, action: set, params: {key: a, value: 1}}, timeout: 1s}
"""


@asynccontextmanager
async def api(k: Kit, auth: WebhookAuth | None = None) -> AsyncIterator[tuple[str, Dispatcher]]:
    """The kit's dispatcher running, behind the webhook's routes and the failover API."""
    dispatcher = Dispatcher(
        intake=Intake(10),
        journal=k.journal,
        executor=k.executor,
        runbooks=[k.runbook(RUNBOOK)],
        mode=lambda: k.mode[0],
        metrics=k.metrics,
        leadership=k.leader,
        poll=1.0,
        clock=k.clock,
    )
    app = web.Application()
    add_routes(app, Intake(10), Authenticator(auth), k.metrics, 64 * 1024)
    add_api_routes(app, k.guards.kill_switch, k.guards.approvals)
    add_start_route(app, dispatcher)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with running(app) as server:
            yield server.url, dispatcher
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def start(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/executions", json=body, headers=headers or {}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def ended(k: Kit, execution_id: str) -> ExecutionRecord:
    async def done() -> ExecutionRecord | None:
        record = await k.journal.execution(execution_id)
        return record if record is not None and record.state not in ("planned", "running") else None

    return await eventually(done, within=5, what=f"execution {execution_id} ended")


async def test_a_runbook_started_by_hand_runs_at_once_and_the_journal_says_who_started_it(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k, api(k) as (url, _):
        status, body = await start(
            url,
            {"runbook": "failover-web", "labels": {"reason": "drill"}},
            {"X-Srd-User": "ann"},  # a name the client asserts: never recorded
        )
        assert status == 201, body
        # No settle wait (1 h here): a person decided, there is no alert to resolve.
        record = await ended(k, body["id"])
        assert (record.state, record.mode) == ("succeeded", "armed")
        assert k.actuator.state == {"a": 1}
        assert record.alert["source"] == "manual"
        assert record.alert["started_by"] == "anonymous"  # this srd has no failover.auth
        # The runbook's = matchers are filled in; the given labels are kept.
        assert record.alert["labels"] == {
            "alertname": "ServiceDown",
            "service": "web",
            "reason": "drill",
        }


async def test_the_user_basic_auth_names_is_recorded_whatever_the_client_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRD_TEST_PASSWORD", "pw")
    auth = WebhookAuth.model_validate(
        {"basic": {"username": "oncall", "password": {"env": "SRD_TEST_PASSWORD"}}}
    )
    credentials = {"Authorization": "Basic " + base64.b64encode(b"oncall:pw").decode()}
    async with kit(tmp_path) as k, api(k, auth) as (url, _):
        assert (await start(url, {"runbook": "failover-web"}))[0] == 401
        status, body = await start(
            url, {"runbook": "failover-web"}, {**credentials, "X-Srd-User": "mallory"}
        )
        assert status == 201, body
        assert (await ended(k, body["id"])).alert["started_by"] == "oncall"


async def test_a_dry_run_by_hand_on_an_armed_srd_plans_every_step_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k, api(k) as (url, _):
        status, body = await start(url, {"runbook": "failover-web", "dry_run": True})
        assert (status, body["mode"]) == (201, "dry-run")
        assert (await ended(k, body["id"])).state == "dry_run"
        assert k.actuator.calls == []


async def test_every_guard_applies_to_a_start_by_hand(tmp_path: Path) -> None:
    async with kit(tmp_path) as k, api(k) as (url, _):
        await k.guards.kill_switch.engage(True, "ann", "maintenance")
        status, body = await start(url, {"runbook": "failover-web"})
        assert status == 201
        record = await ended(k, body["id"])
        assert record.state == "blocked"
        assert await k.guards_blocked(body["id"]) == ["kill_switch"]
        assert k.actuator.calls == []


async def test_the_same_request_again_returns_the_same_execution(tmp_path: Path) -> None:
    async with kit(tmp_path) as k, api(k) as (url, _):
        request = {"runbook": "failover-web", "request": "retry-1"}
        first_status, first = await start(url, request)
        again_status, again = await start(url, request)
        assert (first_status, again_status) == (201, 200)
        assert again["id"] == first["id"]
        assert len(await k.journal.executions()) == 1


async def test_unknown_runbooks_labels_the_match_refuses_and_bad_bodies_are_refused(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k, api(k) as (url, _):
        status, body = await start(url, {"runbook": "nope"})
        assert status == 404
        assert "no runbook named 'nope'; loaded: ['failover-web']" in body["error"]
        status, body = await start(url, {"runbook": "failover-web", "labels": {"service": "db"}})
        assert status == 400
        assert 'service="web"' in body["error"]
        status, body = await start(url, {"runbook": "failover-web", "labels": {"severity": "info"}})
        assert status == 400
        for bad in (
            {},
            {"runbook": 1},
            {"runbook": "failover-web", "labels": {"a": 1}},
            {"runbook": "failover-web", "request": "../x"},
        ):
            assert (await start(url, bad))[0] == 400, bad
        assert await k.journal.executions() == []


async def test_a_start_on_a_follower_is_planned_and_run_by_the_leader_without_settling(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k, api(k) as (url, dispatcher):
        k.leader.leader = False
        status, body = await start(url, {"runbook": "failover-web"})
        assert (status, body["state"]) == (201, "planned")
        await asyncio.sleep(0.2)
        assert await k.state(body["id"]) == "planned" and k.actuator.calls == []

        k.leader.leader = True
        dispatcher.acquired()  # as on gaining the lead: take up what the journal holds
        assert (await ended(k, body["id"])).state == "succeeded"  # no 1 h settle
        assert k.actuator.state == {"a": 1}
