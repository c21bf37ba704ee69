"""Paging a human: a runbook that stops and needs one (remedies exhausted, a failed rollback,
a block half-way) raises ``SrdRunbookEscalated``, and srd posts it to Alertmanager's API
(``POST /api/v2/alerts``) so it is routed, grouped and silenced like any other page.

The post runs off the executor's path, retried with backoff on connection errors, timeouts
and 5xx (a 4xx is permanent: the payload would be refused again). Every escalation is counted
(``srd_escalations_total{runbook,reason}``) and logged whether or not it could be delivered;
each delivery's fate is counted in ``srd_escalation_notifications_total{result}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from srd import clock
from srd.config.failover import EscalationConfig
from srd.failover.intake import iso_utc
from srd.failover.metrics import FailoverMetrics
from srd.model import Alert
from srd.retry import Backoff

log = structlog.get_logger("srd.failover.escalation")

ATTEMPTS = 5
"""Posts per escalation: with the 1-2-4-8 s backoff, about 15 s plus timeouts of trying —
long enough to ride out an Alertmanager restart, short enough to end within shutdown."""
BACKOFF = Backoff(initial=1.0, maximum=8.0)


def alertmanager_alert(alert: Alert, hold: float) -> dict[str, Any]:
    """``alert`` as one element of Alertmanager's ``POST /api/v2/alerts`` body."""
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": iso_utc(alert.active_since),
        "endsAt": iso_utc(clock.now() + hold),
        "generatorURL": "",
    }


class Pager:
    """Sends escalation alerts; ``settings`` is read at each escalation, so a reload applies."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: FailoverMetrics,
        settings: Callable[[], EscalationConfig],
        *,
        backoff: Backoff = BACKOFF,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self._settings = settings
        self._backoff = backoff
        self._sending: set[asyncio.Task[bool]] = set()
        for result in ("sent", "failed"):
            metrics.escalation_notifications.labels(result)

    def page(self, alert: Alert) -> None:
        """Count and log ``alert``, and post it to Alertmanager in the background."""
        labels = dict(alert.labels)
        self._metrics.escalations.labels(labels.get("runbook", ""), labels.get("reason", "")).inc()
        settings = self._settings()
        log.error(
            "runbook escalated: a human is needed",
            alertname=alert.name,
            labels=labels,
            annotations=dict(alert.annotations),
            alertmanager=str(settings.alertmanager_url or "") or None,
        )
        if settings.alertmanager_url is None:
            return
        task = asyncio.create_task(self.send(alert, settings), name=f"page-{alert.fingerprint}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def send(self, alert: Alert, settings: EscalationConfig) -> bool:
        """Post ``alert``; True once Alertmanager took it. Never raises."""
        url = str(settings.alertmanager_url).rstrip("/") + "/api/v2/alerts"
        body = [alertmanager_alert(alert, settings.hold)]
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        delays = self._backoff.delays()
        problem = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._session.post(url, json=body, timeout=timeout) as reply:
                    if reply.status < 300:
                        self._metrics.escalation_notifications.labels("sent").inc()
                        log.info("escalation sent to Alertmanager", url=url, attempt=attempt)
                        return True
                    problem = f"HTTP {reply.status}: {(await reply.text())[:200]}"
                    if reply.status < 500:
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt < ATTEMPTS:
                delay = next(delays)
                log.warning("escalation not sent; retrying", url=url, error=problem, retry_in=delay)
                await asyncio.sleep(delay)
        self._metrics.escalation_notifications.labels("failed").inc()
        log.error("escalation could not be sent to Alertmanager", url=url, error=problem)
        return False

    async def close(self, grace: float) -> None:
        """Give posts in flight ``grace`` seconds to finish, then cancel them."""
        if not self._sending:
            return
        _, late = await asyncio.wait(set(self._sending), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
