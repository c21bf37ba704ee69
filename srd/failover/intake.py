"""The one way alerts enter failover: a queue of ``IncomingAlert`` bounded by count and bytes.

Alertmanager's webhook and srd's own rules both put alerts here. An alert goes through two
stages: *pending* (admitted, its receipt not yet in the journal) and *to decide* (its receipt
committed and new). The dispatcher's committer records everything pending in one journal
transaction (group commit) and only then resolves each webhook request's ``ack``, so a 2xx is
never sent for an alert the journal does not hold. Both stages count against the budget
(``maxsize`` alerts, ``max_bytes`` bytes of webhook body), so a storm or a journal outage cannot
grow memory: a request with no room gets 503 and Alertmanager sends it again later; a group
that could never fit gets 413 saying which limit to raise.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from srd.journal import AlertReceipt, JournalError, Receipts
from srd.model import Alert

log = structlog.get_logger("srd.failover.intake")

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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IncomingAlert:
        """The alert ``to_dict`` made (as the journal holds its receipt)."""
        return cls(
            source="srd" if data.get("source") == "srd" else "alertmanager",
            status="resolved" if data.get("status") == "resolved" else "firing",
            fingerprint=str(data["fingerprint"]),
            starts_at=str(data["startsAt"]),
            labels=dict(data.get("labels") or {}),
            annotations=dict(data.get("annotations") or {}),
            ends_at=data.get("endsAt"),
            generator_url=str(data.get("generatorURL") or ""),
            group_key=str(data.get("groupKey") or ""),
        )


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


COMMIT_BATCH = 1024
"""Alerts whose receipts one group commit records, about (a webhook group is never split):
one transaction and one fsync for every request that arrived meanwhile."""
COMMIT_RETRY = (0.1, 1.0)
"""Seconds between group commit attempts while the journal refuses them, doubling to the
second: requests wait for the next attempt, so it must come well within the webhook's wait."""


def _nothing() -> None:
    pass


class Refused(Exception):
    """The intake cannot take a webhook group: ``reason`` is the metric label, ``status`` the
    HTTP answer (503: later; 413: never as it is), the message says what to do."""

    def __init__(self, reason: str, status: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(eq=False)
class Submission:
    """Alerts admitted together: one webhook request's (``ack`` resolves once their receipts
    are committed), or one alert of srd's own rules, or a request already answered 503 and
    kept for the journal's return (``ack`` None: nobody waits)."""

    alerts: list[IncomingAlert]
    sizes: list[int]
    ack: asyncio.Future[None] | None


class Intake:
    """The alerts admitted and not yet decided on, bounded by count and by bytes."""

    def __init__(self, maxsize: int, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._pending: deque[Submission] = deque()
        self._to_decide: deque[tuple[IncomingAlert, int]] = deque()
        self._deciding: deque[int] = deque()
        """Sizes of the alerts ``get_batch`` handed out, until ``done``."""
        self.alerts = 0
        self.bytes = 0
        """Held now: pending, to decide and being decided."""
        self._pending_ready = asyncio.Event()
        self._decisions_ready = asyncio.Event()
        self._room_waiters: list[asyncio.Future[None]] = []
        self.closed = False
        """Set on shutdown: nothing more is admitted."""

    # -- admission

    def submit(self, alerts: Sequence[IncomingAlert], size: int) -> asyncio.Future[None]:
        """Admit a webhook group of ``size`` body bytes, all or none: the returned future
        resolves once its receipts are committed (or fails with the journal's error). A
        caller that stops waiting cancels it; if the committer has not taken it, it is
        dropped. Raises Refused."""
        if self.closed:
            raise Refused("shutting_down", 503, "srd is shutting down; retry later")
        if len(alerts) > self.maxsize:
            raise Refused(
                "too_large",
                413,
                f"a group of {len(alerts)} alerts is more than failover.queue_size"
                f" ({self.maxsize}) holds: raise queue_size to at least {len(alerts)}, or"
                " split the group (Alertmanager's group_by)",
            )
        if size > self.max_bytes:
            raise Refused(
                "too_large",
                413,
                f"a body of {size} bytes is more than failover.queue_bytes ({self.max_bytes})"
                " holds: raise queue_bytes, or lower failover.max_body_bytes below it",
            )
        if not self._room(len(alerts), size):
            raise Refused("queue_full", 503, "intake queue full; retry later")
        share, rest = divmod(size, max(len(alerts), 1))
        sizes = [share + (1 if i < rest else 0) for i in range(len(alerts))]
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._admit(Submission(list(alerts), sizes, ack))
        return ack

    async def put(self, alert: IncomingAlert) -> None:
        """Queue ``alert``, waiting for room: for srd's own rules, whose transitions are not
        re-sent, so back-pressure on the evaluation beats a lost alert. Once closed the alert
        is dropped: the next start derives it again."""
        size = len(json.dumps(alert.to_dict()))
        while not self.closed and not self._room(1, size):
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._room_waiters:
                    self._room_waiters.remove(waiter)
        if not self.closed:
            self._admit(Submission([alert], [size], None))

    def _room(self, alerts: int, size: int) -> bool:
        return self.alerts + alerts <= self.maxsize and self.bytes + size <= self.max_bytes

    def _admit(self, submission: Submission) -> None:
        self.alerts += len(submission.alerts)
        self.bytes += sum(submission.sizes)
        self._pending.append(submission)
        self._pending_ready.set()

    def _release(self, sizes: Sequence[int]) -> None:
        self.alerts -= len(sizes)
        self.bytes -= sum(sizes)
        for waiter in self._room_waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the committer

    async def pending(self, most: int) -> list[Submission] | None:
        """Submissions to commit (at least one, about ``most`` alerts at most; a group is
        never split), waiting for one; None once closed and nothing is pending."""
        while True:
            batch: list[Submission] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0].alerts) <= most):
                submission = self._pending.popleft()
                if submission.ack is not None and submission.ack.done():
                    self._release(submission.sizes)  # its caller gave up (answered 503)
                    continue
                batch.append(submission)
                count += len(submission.alerts)
            if batch:
                return batch
            if self.closed:
                return None
            self._pending_ready.clear()
            await self._pending_ready.wait()

    def committed(self, batch: Sequence[Submission], fresh: Sequence[bool]) -> None:
        """The receipts of ``batch`` are in the journal (``fresh``: whether each was new, in
        order): acknowledge, and queue the new alerts for a decision."""
        flags = iter(fresh)
        for submission in batch:
            if submission.ack is not None and not submission.ack.done():
                submission.ack.set_result(None)
            dropped = []
            for alert, size in zip(submission.alerts, submission.sizes, strict=True):
                if next(flags):
                    self._to_decide.append((alert, size))
                else:
                    dropped.append(size)  # a resend or an HA duplicate: nothing to decide
            self._release(dropped)
        if self._to_decide:
            self._decisions_ready.set()

    def failed(self, batch: Sequence[Submission], error: BaseException) -> None:
        """The journal refused ``batch``: its webhook requests fail (503: Alertmanager
        retries). Its alerts stay pending (within the budget) for the next attempt, so the
        journal is tried again without waiting for traffic — ``/readyz`` recovers with it —
        and what it then takes is decided; Alertmanager's resend is a duplicate. Once
        closed, they are dropped: Alertmanager resends, srd's own rules derive them again."""
        for submission in reversed(batch):
            if submission.ack is not None and not submission.ack.done():
                submission.ack.set_exception(error)
            if self.closed:
                self._release(submission.sizes)
                continue
            submission.ack = None
            self._pending.appendleft(submission)
        if self._pending:
            self._pending_ready.set()

    async def commit(self, journal: Receipts, recovered: Callable[[], None] = _nothing) -> None:
        """Group commit, until closed and nothing is pending: record every pending
        submission's receipts in one transaction, then acknowledge them. While the journal
        refuses, each batch's requests fail (503), its alerts stay pending and the next
        attempt waits (backoff). ``recovered`` is called when the journal takes receipts
        again after refusing: a failed call may have committed (PostgreSQL), so what it
        recorded waits for a decision."""
        failures = 0
        while (batch := await self.pending(COMMIT_BATCH)) is not None:
            alerts = [a for submission in batch for a in submission.alerts]
            receipts = [
                AlertReceipt(a.fingerprint, a.starts_at, a.status, a.to_dict()) for a in alerts
            ]
            try:
                fresh = await journal.record_alerts(receipts)
            except JournalError as exc:
                self.failed(batch, exc)
                failures += 1
                delay = min(COMMIT_RETRY[0] * 2 ** (failures - 1), COMMIT_RETRY[1])
                log.error(
                    "journal cannot take alert receipts; answering 503 until it can",
                    error=str(exc),
                    alerts=len(alerts),
                    attempt=failures,
                    retry_in=delay,
                )
                if self.closed:
                    return
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("journal takes alert receipts again", after_failures=failures)
                failures = 0
                recovered()
            self.committed(batch, fresh)

    # -- the dispatcher

    async def get_batch(self, most: int) -> list[IncomingAlert]:
        """New alerts whose receipts are committed: the next one, waiting for it, and up to
        ``most - 1`` more. Call ``done`` with their count once decided."""
        while not self._to_decide:
            self._decisions_ready.clear()
            await self._decisions_ready.wait()
        batch: list[IncomingAlert] = []
        while self._to_decide and len(batch) < most:
            alert, size = self._to_decide.popleft()
            batch.append(alert)
            self._deciding.append(size)
        return batch

    def done(self, count: int) -> None:
        """The ``count`` alerts ``get_batch`` handed out first are decided on."""
        self._release([self._deciding.popleft() for _ in range(count)])

    def close(self) -> None:
        """Admit nothing more: the webhook answers 503 from now on, srd's own alerts wait no
        longer. What is pending is still committed (``pending`` hands it out)."""
        self.closed = True
        self._pending_ready.set()
        for waiter in self._room_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def drain(self) -> list[IncomingAlert]:
        """Every alert still to decide, without waiting; call ``done`` with their count."""
        left = [alert for alert, _ in self._to_decide]
        self._deciding.extend(size for _, size in self._to_decide)
        self._to_decide.clear()
        return left

    @property
    def size(self) -> int:
        """Alerts held: pending, to decide and being decided."""
        return self.alerts
