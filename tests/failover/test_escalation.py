from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
from aiohttp import web

from srd.config.failover import EscalationConfig
from srd.failover.escalation import ATTEMPTS, BACKOFF, Pager
from srd.failover.metrics import FailoverMetrics
from srd.model import Alert

FAST = replace(BACKOFF, initial=0.01)
PAGE = Alert(
    name="SrdRunbookEscalated",
    labels=(("alertname", "SrdRunbookEscalated"), ("runbook", "failover")),
    annotations=(("summary", "failover stopped (escalated)"),),
    state="firing",
    active_since=1.0,
    fired_at=1.0,
    resolved_at=None,
    fingerprint="escalation-1",
)


@asynccontextmanager
async def alertmanager(answers: list[int]) -> AsyncIterator[tuple[EscalationConfig, list[int]]]:
    """An Alertmanager API that answers each post with the next status of ``answers``."""
    seen: list[int] = []

    async def post(request: web.Request) -> web.Response:
        await request.json()
        status = answers[min(len(seen), len(answers) - 1)]
        seen.append(status)
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield EscalationConfig(alertmanager_url=f"http://127.0.0.1:{port}", timeout=5), seen
    finally:
        await runner.cleanup()


def notifications(metrics: FailoverMetrics, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        FailoverMetrics.ESCALATION_NOTIFICATIONS + "_total", {"result": result}
    )


async def test_a_page_is_posted_again_after_server_errors_until_alertmanager_takes_it(
    metrics: FailoverMetrics,
) -> None:
    async with alertmanager([503, 500, 200]) as (settings, seen), aiohttp.ClientSession() as s:
        pager = Pager(s, metrics, lambda: settings, backoff=FAST)
        assert await pager.send(PAGE, settings)
    assert seen == [503, 500, 200]
    assert notifications(metrics, "sent") == 1
    assert notifications(metrics, "failed") == 0


async def test_a_page_alertmanager_refuses_as_invalid_is_not_posted_again(
    metrics: FailoverMetrics,
) -> None:
    async with alertmanager([400]) as (settings, seen), aiohttp.ClientSession() as s:
        pager = Pager(s, metrics, lambda: settings, backoff=FAST)
        assert not await pager.send(PAGE, settings)
    assert seen == [400]
    assert notifications(metrics, "failed") == 1


async def test_a_page_is_given_up_after_its_attempts(metrics: FailoverMetrics) -> None:
    async with alertmanager([503]) as (settings, seen), aiohttp.ClientSession() as s:
        pager = Pager(s, metrics, lambda: settings, backoff=FAST)
        assert not await pager.send(PAGE, settings)
    assert len(seen) == ATTEMPTS
    assert notifications(metrics, "failed") == 1
