from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config import Config, ConfigError, Mode, parse_config
from srd.config.failover import WebhookAuth
from srd.evaluation.metrics import EvaluationMetrics
from srd.failover.dispatch import Dispatcher
from srd.failover.intake import Intake, from_rule_alert
from srd.failover.leader import SingleInstance
from srd.failover.metrics import FailoverMetrics
from srd.failover.stage import FailoverStage
from srd.http.alertmanager import add_routes
from srd.http.auth import Authenticator
from srd.http.failover_api import add_api_routes
from srd.journal import JournalError, SqliteJournal
from srd.journal.sql import SqlJournal
from srd.model import Alert
from tests.support.clock import Clock
from tests.support.eventually import eventually
from tests.support.failoverkit import ONE_STEP, Kit, kit, on_down, set_step
from tests.support.servers import running

TOKEN = "s3cret-token"


def payload(status: str = "firing", fingerprint: str = "abc", n: int = 1) -> dict[str, Any]:
    alert = {
        "status": status,
        "labels": {"alertname": "Down", "service": "web"},
        "annotations": {"summary": "web is down"},
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T10:05:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="Down"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "srd",
        "groupLabels": {"alertname": "Down"},
        "commonLabels": {"alertname": "Down"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{**alert, "fingerprint": f"{fingerprint}{i}" if n > 1 else fingerprint}
                   for i in range(n)],
    }  # fmt: skip


@asynccontextmanager
async def committing(intake: Intake, directory: Path) -> AsyncIterator[SqliteJournal]:
    """The intake's group commit running on a journal in ``directory``."""
    journal = await SqliteJournal.open(directory / "journal.sqlite3")
    task = asyncio.create_task(intake.commit(journal))
    try:
        yield journal
    finally:
        intake.close()
        await task
        await journal.close()


@asynccontextmanager
async def server(
    intake: Intake, metrics: FailoverMetrics, auth: WebhookAuth | None, limit: int = 64 * 1024
) -> AsyncIterator[str]:
    app = web.Application()
    add_routes(app, intake, Authenticator(auth), metrics, limit)
    async with running(app) as server:
        yield f"{server.url}/alertmanager"


def bearer_auth(monkeypatch: pytest.MonkeyPatch) -> WebhookAuth:
    monkeypatch.setenv("SRD_TEST_TOKEN", TOKEN)
    return WebhookAuth.model_validate({"bearer_token": {"env": "SRD_TEST_TOKEN"}})


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=data, headers=BEARER if headers is None else headers) as response,
    ):
        return (
            response.status,
            await response.json(content_type=None),
        )


async def test_a_valid_post_is_journaled_queued_and_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    intake, metrics = Intake(10), FailoverMetrics(CollectorRegistry())
    async with (
        committing(intake, tmp_path) as journal,
        server(intake, metrics, bearer_auth(monkeypatch)) as url,
    ):
        status, body = await post(url, payload(n=2))
        assert (status, body) == (200, {"accepted": 2})
        assert [
            status for status, _ in await journal.receipts("abc0", "2024-05-01T10:00:00.123Z")
        ] == ["firing"]
    alert, _ = await intake.get_batch(10)
    assert (alert.fingerprint, alert.starts_at) == ("abc0", "2024-05-01T10:00:00.123Z")
    value = metrics.registry.get_sample_value("srd_webhook_alerts_total", {"status": "firing"})
    assert value == 2


async def test_unauthenticated_posts_get_401_with_a_challenge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake, metrics = Intake(10), FailoverMetrics(CollectorRegistry())
    async with (
        server(intake, metrics, bearer_auth(monkeypatch)) as url,
        aiohttp.ClientSession() as http,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.post(url, json=payload(), headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="srd"'
    assert intake.size == 0
    labels = {"reason": "unauthorized"}
    assert metrics.registry.get_sample_value("srd_webhook_rejected_total", labels) == 2


async def test_basic_auth_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SRD_TEST_PASSWORD", "pw")
    auth = WebhookAuth.model_validate(
        {"basic": {"username": "am", "password": {"env": "SRD_TEST_PASSWORD"}}}
    )
    intake = Intake(10)
    async with (
        committing(intake, tmp_path),
        server(intake, FailoverMetrics(CollectorRegistry()), auth) as url,
    ):
        good = {"Authorization": "Basic " + base64.b64encode(b"am:pw").decode()}
        bad = {"Authorization": "Basic " + base64.b64encode(b"am:no").decode()}
        assert (await post(url, payload(), good))[0] == 200
        assert (await post(url, payload(), bad))[0] == 401


async def test_an_oversized_body_gets_413(monkeypatch: pytest.MonkeyPatch) -> None:
    intake = Intake(10)
    async with server(
        intake, FailoverMetrics(CollectorRegistry()), bearer_auth(monkeypatch), limit=2048
    ) as url:
        status, _ = await post(url, payload(n=20))
    assert status == 413
    assert intake.size == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda p: p["alerts"][0].update(status="firin"), "alerts.0.status"),
    ],
)
async def test_a_malformed_payload_gets_400_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, change: Any, field: str
) -> None:
    body = payload()
    change(body)
    async with server(
        Intake(10), FailoverMetrics(CollectorRegistry()), bearer_auth(monkeypatch)
    ) as url:
        status, answer = await post(url, body)
    assert status == 400
    assert [p["field"] for p in answer["problems"]] == [field]


async def test_non_json_gets_400(monkeypatch: pytest.MonkeyPatch) -> None:
    async with server(
        Intake(10), FailoverMetrics(CollectorRegistry()), bearer_auth(monkeypatch)
    ) as url:
        status, answer = await post(url, b"{not json")
    assert status == 400
    assert answer["error"].startswith("body is not JSON")


async def test_a_full_queue_answers_503_and_takes_none_of_the_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    intake = Intake(3)
    async with (
        committing(intake, tmp_path),
        server(intake, FailoverMetrics(CollectorRegistry()), bearer_auth(monkeypatch)) as url,
    ):
        assert (await post(url, payload(n=2)))[0] == 200
        assert (await post(url, payload(fingerprint="x", n=2)))[0] == 503
    assert intake.size == 2


def test_armed_mode_without_webhook_auth_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"mode armed needs failover\.auth"):
        parse_config("mode: armed\n", "srd.yaml")


def test_alerts_of_srds_own_rules_enter_as_incoming_alerts() -> None:
    labels = (("alertname", "Down"), ("service", "web"))
    firing = Alert("Down", labels, (), "firing", 1_714_557_600.0, 1_714_557_660.0, None, "f1")
    incoming = from_rule_alert(firing)
    assert incoming is not None
    assert (incoming.source, incoming.status, incoming.fingerprint) == ("srd", "firing", "f1")
    assert incoming.starts_at == "2024-05-01T10:00:00.000Z"
    pending = Alert("Down", labels, (), "pending", 1.0, None, None, "f1")
    assert from_rule_alert(pending) is None


async def test_srds_own_alerts_wait_for_room_instead_of_being_dropped(tmp_path: Path) -> None:
    labels = (("alertname", "Down"),)
    incoming = from_rule_alert(Alert("Down", labels, (), "firing", 1.0, 1.0, None, "f1"))
    assert incoming is not None
    intake = Intake(1)
    async with committing(intake, tmp_path):
        await intake.put(incoming)
        second = asyncio.create_task(intake.put(incoming))
        await asyncio.sleep(0.01)
        assert not second.done()
        assert await intake.get_batch(10) == [incoming]
        intake.done(1)
        await second
        assert intake.size == 1


def test_the_authorization_header_srd_approve_sends_is_the_one_the_api_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = Authenticator(bearer_auth(monkeypatch))
    assert auth.header == f"Bearer {TOKEN}"
    assert auth.allows({"Authorization": auth.header})
    assert Authenticator(None).header is None


RUNBOOK = """
runbooks:
  - name: failover
    match: [alertname="Down", service=~"web|api"]
    settle: SETTLE
    steps:
      - {name: ask, approval: "go?", timeout: 5s}
      - {name: a, action: {actuator: fake, action: set, params: {key: a, value: 1}}, timeout: 1s}
"""


@asynccontextmanager
async def pipeline(
    k: Kit, text: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Dispatcher]]:
    """Webhook, failover API and an armed dispatcher for the runbook of ``text``."""
    intake = Intake(100)
    dispatcher = k.dispatcher(intake, [k.runbook(text)], Mode.ARMED)
    stop = asyncio.Event()
    app = web.Application()
    add_routes(app, intake, Authenticator(bearer_auth(monkeypatch)), k.metrics, 64 * 1024)
    add_api_routes(app, k.guards.kill_switch, k.guards.approvals)
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with running(app) as server:
            yield f"{server.url}/alertmanager", dispatcher
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def asking(k: Kit, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A pipeline (no settle) that took the alert and whose runbook now waits for its approval:
    the webhook's URL."""
    async with pipeline(k, RUNBOOK.replace("SETTLE", "0s"), monkeypatch) as (url, _):
        assert (await post(url, payload()))[0] == 200

        async def waiting() -> bool:
            return bool(k.guards.approvals.pending())

        await eventually(waiting, within=5, what="waiting")
        yield url


async def approved(k: Kit, execution_id: str) -> None:
    """Give the one pending approval; the execution then runs to success."""
    [approval_id] = k.guards.approvals.pending()
    k.guards.approvals.approve(approval_id, "ann")
    await k.reaches(execution_id, "succeeded", within=5)


async def test_refused_posts_do_not_disturb_a_runbook_in_progress_and_resends_do_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        async with asking(k, monkeypatch) as url:
            assert (await post(url, payload(), {}))[0] == 401
            assert (await post(url, b"x" * 100_000))[0] == 413
            assert (await post(url, {"version": "4"}))[0] == 400
            assert (await post(url, payload()))[0] == 200  # Alertmanager's resend
            [execution] = await k.journal.executions()
            await approved(k, execution.id)
            assert (await post(url, payload()))[0] == 200  # and once more after it ended
            await asyncio.sleep(0.05)
        assert len(await k.journal.executions()) == 1
        assert k.actuator.calls == [("apply", "a", 1)]


async def test_resolved_cancels_a_planned_execution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        async with pipeline(k, RUNBOOK.replace("SETTLE", "10s"), monkeypatch) as (url, _):
            assert (await post(url, payload()))[0] == 200

            async def planned() -> bool:
                return len(await k.journal.executions()) == 1

            await eventually(planned, within=5, what="planned")
            assert (await post(url, payload("resolved")))[0] == 200
            [execution] = await k.journal.executions()
            await k.reaches(execution.id, "cancelled", within=5)
        assert k.actuator.calls == []


async def test_a_resolve_a_follower_received_cancels_what_the_leader_takes_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alertmanager posts to any replica: the firing and its resolve may both land on a
    follower, which only records them; the leader must not run the resolved alert."""
    async with kit(tmp_path) as k:
        k.leader.leader = False
        async with pipeline(k, RUNBOOK.replace("SETTLE", "0s"), monkeypatch) as (url, dispatcher):
            assert (await post(url, payload()))[0] == 200
            assert (await post(url, payload("resolved")))[0] == 200

            async def recorded() -> bool:
                receipts = await k.journal.receipts("abc", "2024-05-01T10:00:00.123Z")
                return [status for status, _ in receipts] == ["firing", "resolved"]

            await eventually(recorded, within=5, what="recorded")
            [execution] = await k.journal.executions()
            assert execution.state == "planned"
            k.leader.leader = True
            dispatcher.acquired()
            await k.reaches(execution.id, "cancelled", within=5)
            await asyncio.sleep(0.05)
        assert not k.guards.approvals.pending()
        assert k.actuator.calls == []
        [state] = [s for s in await k.journal.states(execution.id) if s.state == "cancelled"]
        assert state.detail == {"reason": "alert resolved before it started"}


async def test_settle_counts_from_the_decision_not_from_the_leaders_pickup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        k.leader.leader = False
        async with pipeline(k, RUNBOOK.replace("SETTLE", "1h"), monkeypatch) as (url, dispatcher):
            assert (await post(url, payload()))[0] == 200

            async def planned() -> bool:
                return len(await k.journal.executions()) == 1

            await eventually(planned, within=5, what="planned")
            k.clock.now += 3600  # the follower decided an hour ago; the leader takes over now
            k.leader.leader = True
            dispatcher.acquired()

            async def asking() -> bool:
                return bool(k.guards.approvals.pending())

            await eventually(
                asking, within=5, what="asking"
            )  # its first step, at once: the settle has passed


async def test_resolved_while_running_is_recorded_and_not_acted_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        async with asking(k, monkeypatch) as url:
            assert (await post(url, payload("resolved")))[0] == 200
            await asyncio.sleep(0.05)
            [execution] = await k.journal.executions()
            assert execution.state == "running"
            await approved(k, execution.id)
        # The resolved alert is in the journal: a second record of it is refused.
        assert not await k.journal.record_alert("abc", "2024-05-01T10:00:00.123Z", "resolved", {})


async def test_an_alert_blocked_before_anything_acted_runs_once_when_resent_after_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        async with pipeline(k, ONE_STEP, monkeypatch) as (url, _):
            k.guards.kill_switch.set(True, "test")
            assert (await post(url, payload()))[0] == 200

            async def released() -> bool:
                found = await k.journal.executions()
                return bool(found) and (await k.journal.states(found[0].id))[-1].detail == {
                    "released": True,
                    "reason": "blocked before anything acted: a resend of the alert may run it",
                }

            await eventually(released, within=5, what="released")
            [blocked] = await k.journal.executions()
            assert await k.guards_blocked(blocked.id) == ["kill_switch"]
            k.guards.kill_switch.set(False, "test")
            assert (await post(url, payload()))[0] == 200  # Alertmanager's repeat_interval

            async def succeeded() -> bool:
                found = await k.journal.executions()
                return len(found) == 2 and found[0].state == "succeeded"

            await eventually(succeeded, within=5, what="succeeded")
            for _ in range(2):  # further resends: it ran, nothing more happens
                assert (await post(url, payload()))[0] == 200
            await asyncio.sleep(0.05)
        assert [e.state for e in await k.journal.executions()] == ["succeeded", "blocked"]
        assert k.actuator.calls == [("apply", "a", 1)]


ACT_THEN_ASK = on_down(
    "half", set_step("z", 1), '{name: ask, approval: "go on?", timeout: 0.1s}', set_step("a", 1)
)


async def test_an_alert_blocked_after_a_step_acted_is_not_run_again_on_resend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        async with pipeline(k, ACT_THEN_ASK, monkeypatch) as (url, _):
            assert (await post(url, payload()))[0] == 200

            async def blocked() -> bool:
                found = await k.journal.executions()
                return bool(found) and found[0].state == "blocked"

            await eventually(blocked, within=5, what="blocked")
            assert (await post(url, payload()))[0] == 200
            await asyncio.sleep(0.1)
        [execution] = await k.journal.executions()
        assert (await k.journal.states(execution.id))[-1].detail == {
            "reason": "approval: step ask not approved in 0.1s",
            "paged": True,
        }
        assert k.actuator.calls == [("apply", "z", 1)]


async def test_journal_retention_prunes_old_receipts_and_never_an_execution(
    tmp_path: Path,
) -> None:
    clock = Clock()
    config = Config.model_validate(
        {"state_dir": str(tmp_path), "failover": {"journal_retention": "90d"}}
    )
    assert config.failover.journal_retention == 90 * 86400
    journal = await SqliteJournal.open(tmp_path / "journal.sqlite3", clock=clock)
    async with aiohttp.ClientSession() as session:
        stage = FailoverStage(
            config,
            journal,
            session,
            FailoverMetrics(CollectorRegistry()),
            actuators={},
            runbooks=[],
            probe_status=lambda _: None,
            leadership=SingleInstance(),
            budget=EvaluationMetrics(CollectorRegistry()),
        )
        try:
            assert await journal.record_alert("old", "t0", "firing", {})
            unfinished = await journal.start_execution("rb", "k1", "armed", "c", {})
            done = await journal.start_execution("rb", "k2", "armed", "c", {})
            assert unfinished is not None and done is not None
            await journal.set_state(done.id, "succeeded")
            clock.now += 89 * 86400
            assert await journal.record_alert("recent", "t1", "firing", {})
            clock.now += 2 * 86400  # "old" is 91 days old, "recent" 2
            await stage.prune()
            assert await journal.record_alert("old", "t0", "firing", {})  # pruned: new again
            assert not await journal.record_alert("recent", "t1", "firing", {})  # kept
            assert {e.id for e in await journal.executions()} == {unfinished.id, done.id}
            assert [e.id for e in await journal.unfinished()] == [unfinished.id]
        finally:
            await stage.close()


async def test_alerts_queued_at_shutdown_are_journaled_and_run_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit(tmp_path) as k:
        runbook = k.runbook(ONE_STEP)
        intake = Intake(10)
        app = web.Application()
        add_routes(app, intake, Authenticator(bearer_auth(monkeypatch)), k.metrics, 64 * 1024)

        def dispatcher() -> Dispatcher:
            return k.dispatcher(intake, [runbook], Mode.ARMED)

        async with running(app) as server:
            url = f"{server.url}/alertmanager"
            # Acknowledged (200: their receipts are committed) while nothing decides on them
            # yet; then srd stops.
            commits = asyncio.create_task(intake.commit(k.journal))
            for fingerprint in ("one", "two"):
                assert (await post(url, payload(fingerprint=fingerprint)))[0] == 200
            commits.cancel()
            await asyncio.gather(commits, return_exceptions=True)
            stop = asyncio.Event()
            stop.set()
            await dispatcher().run(stop)
            assert k.actuator.calls == []
            executions = await k.journal.executions()
            assert sorted(e.alert["fingerprint"] for e in executions) == ["one", "two"]
            assert {e.state for e in executions} == {"planned"}
            # Until the server stops, what comes in is refused so Alertmanager retries.
            status, body = await post(url, payload(fingerprint="three"))
            assert (status, body) == (503, {"error": "srd is shutting down; retry later"})

        restarted = dispatcher()  # the next start, on the same journal
        stop = asyncio.Event()
        task = asyncio.create_task(restarted.run(stop))

        async def both_ran() -> bool:
            return {e.state for e in await k.journal.executions()} == {"succeeded"}

        try:
            await eventually(both_ran, within=5, what="both ran")
        finally:
            stop.set()
            await task
        assert len(await k.journal.executions()) == 2


class Outage:
    """The kit's journal, whose receipt writes fail ``failures`` times first (a PostgreSQL
    journal whose server restarts, a full disk)."""

    def __init__(self, journal: SqlJournal, failures: int) -> None:
        self._journal = journal
        self.failures = failures

    async def record_alerts(self, receipts: Any) -> list[bool]:
        if self.failures > 0:
            self.failures -= 1
            raise JournalError("journal postgresql://db/srd: server closed the connection")
        return await self._journal.record_alerts(receipts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


async def test_a_journal_outage_gets_503_until_the_journal_takes_the_receipts_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is acknowledged that the journal does not hold: while receipt writes fail the
    webhook answers 503 with Retry-After (Alertmanager retries), and each alert retried
    until its 200 runs once."""
    async with kit(tmp_path) as k:
        runbook = k.runbook(ONE_STEP)
        intake = Intake(100)
        outage = Outage(k.journal, failures=3)
        dispatcher = k.dispatcher(intake, [runbook], Mode.ARMED, outage)
        app = web.Application()
        add_routes(app, intake, Authenticator(bearer_auth(monkeypatch)), k.metrics, 64 * 1024)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        refused = 0
        try:
            async with running(app) as server, aiohttp.ClientSession() as http:
                url = f"{server.url}/alertmanager"
                for fingerprint in ("one", "two", "three"):
                    while True:  # as Alertmanager does with a 5xx
                        body = payload(fingerprint=fingerprint)
                        async with http.post(url, json=body, headers=BEARER) as response:
                            if response.status == 200:
                                break
                            assert response.status == 503
                            assert response.headers["Retry-After"] == "10"
                            refused += 1

                async def all_ran() -> bool:
                    executions = await k.journal.executions()
                    return len(executions) == 3 and {e.state for e in executions} == {"succeeded"}

                await eventually(all_ran, within=5, what="all ran")
        finally:
            stop.set()
            await task
        assert (refused, outage.failures) == (3, 0)
        fingerprints = sorted(e.alert["fingerprint"] for e in await k.journal.executions())
        assert fingerprints == ["one", "three", "two"]
        labels = {"reason": "journal_unavailable"}
        assert k.metrics.registry.get_sample_value("srd_webhook_rejected_total", labels) == 3
