"""The one way alerts enter failover: a bounded queue of ``IncomingAlert``.

Alertmanager's webhook and srd's own rules both put alerts here. The queue is bounded so a
storm cannot grow memory: ``offer`` refuses a whole batch it has no room for, and the webhook
answers 503 so Alertmanager sends it again later (never accept-and-drop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from srd.model import Alert

AlertStatus = Literal["firing", "resolved"]


@dataclass(frozen=True)
class IncomingAlert:
    """One alert instance as failover sees it, whatever its source.

    ``starts_at`` is an ISO 8601 UTC timestamp; with ``fingerprint`` it identifies one firing
    of one alert (Alertmanager re-sends both unchanged), so it keys idempotency."""

    source: Literal["alertmanager", "srd"]
    status: AlertStatus
    fingerprint: str
    starts_at: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    ends_at: str | None = None
    generator_url: str = ""
    group_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as the journal stores it."""
        return {
            "source": self.source,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "generatorURL": self.generator_url,
            "groupKey": self.group_key,
        }


def iso_utc(at: datetime | float) -> str:
    """One spelling per instant, so the same startsAt always makes the same key."""
    if isinstance(at, int | float):
        at = datetime.fromtimestamp(at, UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_rule_alert(alert: Alert) -> IncomingAlert | None:
    """An alert transition of srd's own rules as an IncomingAlert; None while pending (only
    firing and resolved alerts reach failover, as only those reach Alertmanager)."""
    if alert.state not in ("firing", "resolved"):
        return None
    labels = dict(alert.labels)
    labels.setdefault("alertname", alert.name)
    return IncomingAlert(
        source="srd",
        status="firing" if alert.state == "firing" else "resolved",
        fingerprint=alert.fingerprint,
        starts_at=iso_utc(alert.active_since),
        ends_at=iso_utc(alert.resolved_at) if alert.resolved_at is not None else None,
        labels=labels,
        annotations=dict(alert.annotations),
    )


class Intake:
    """A bounded queue of alerts waiting to be decided on."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[IncomingAlert] = asyncio.Queue(maxsize)
        self.closed = False
        """Set on shutdown, once nothing will take alerts off the queue any more."""

    def offer(self, alerts: Sequence[IncomingAlert]) -> bool:
        """Queue all of ``alerts`` or none; False when there is no room for all of them or
        the intake is closed."""
        if self.closed or self._queue.maxsize - self._queue.qsize() < len(alerts):
            return False
        for alert in alerts:
            self._queue.put_nowait(alert)
        return True

    async def put(self, alert: IncomingAlert) -> None:
        """Queue ``alert``, waiting for room: for srd's own rules, whose transitions are not
        re-sent, so back-pressure on the evaluation beats a lost alert."""
        await self._queue.put(alert)

    async def get(self) -> IncomingAlert:
        return await self._queue.get()

    async def get_batch(self, most: int) -> list[IncomingAlert]:
        """The next alert, waiting for one, and up to ``most - 1`` more already queued: the
        dispatcher records a batch in one journal transaction."""
        batch = [await self._queue.get()]
        while len(batch) < most and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def close(self) -> list[IncomingAlert]:
        """Take no more alerts; return those still queued, for the caller to journal."""
        self.closed = True
        left = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        return left

    def done(self, count: int = 1) -> None:
        """Mark the ``count`` alerts last taken as handled."""
        for _ in range(count):
            self._queue.task_done()

    @property
    def size(self) -> int:
        return self._queue.qsize()
