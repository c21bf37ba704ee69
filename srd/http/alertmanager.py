"""``POST /alertmanager``: Alertmanager's webhook (payload version 4), validated and queued.

The handler only checks and queues, so it answers in well under a millisecond; deciding and
acting happen off the request path (``srd.failover.dispatch``). Answers follow Alertmanager's
retry rules: 5xx is retried, other 4xx are not — so a full queue is 503, never a 2xx that drops.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from srd.failover.intake import IncomingAlert, Intake, Refused, iso_utc
from srd.failover.metrics import FailoverMetrics
from srd.http.auth import AUTH_KEY, Authenticator
from srd.journal import JournalError
from srd.probes.body import BodyError, parse_json, read_stream

log = structlog.get_logger("srd.http.alertmanager")


class _Payload(BaseModel):
    # Unknown fields are ignored, not refused: a newer Alertmanager may add some, and a 400
    # would make it drop notifications for good.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AlertmanagerAlert(_Payload):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: AwareDatetime
    endsAt: datetime
    generatorURL: str
    fingerprint: str = Field(min_length=1)


class AlertmanagerPayload(_Payload):
    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = Field(ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    alerts: list[AlertmanagerAlert]
    notification_reason: str | None = None

    def incoming(self) -> list[IncomingAlert]:
        return [
            IncomingAlert(
                source="alertmanager",
                status=alert.status,
                fingerprint=alert.fingerprint,
                starts_at=iso_utc(alert.startsAt),
                ends_at=iso_utc(alert.endsAt) if alert.status == "resolved" else None,
                labels=alert.labels,
                annotations=alert.annotations,
                generator_url=alert.generatorURL,
                group_key=self.groupKey,
            )
            for alert in self.alerts
        ]


ACK_WAIT = 2.0
"""Seconds a request waits for its alerts' receipts to be committed before it gets 503: a
healthy group commit takes milliseconds, so longer means the journal is locked or down —
and Alertmanager should retry rather than hold a connection."""
RETRY_AFTER = "10"


class Webhook:
    def __init__(self, intake: Intake, max_body_bytes: int, metrics: FailoverMetrics) -> None:
        self._intake = intake
        self.max_body_bytes = max_body_bytes
        """Set anew on reload; the next request reads it."""
        self._metrics = metrics

    def _reject(self, reason: str, response: web.Response) -> web.Response:
        self._metrics.webhook_rejected.labels(reason).inc()
        log.warning("webhook post refused", reason=reason, status=response.status)
        return response

    async def handle(self, request: web.Request) -> web.Response:
        auth = request.app[AUTH_KEY]
        if not auth.allows(request.headers):
            return self._reject("unauthorized", auth.refusal())
        limit = self.max_body_bytes
        try:
            body = await read_stream(request.content, limit, request.content_length)
            data = parse_json(body)
        except BodyError as exc:
            if exc.reason == "too_big":
                error = f"body larger than {limit} bytes (failover.max_body_bytes)"
                return self._reject("too_large", web.json_response({"error": error}, status=413))
            problem = {"error": f"body {exc}"}
            return self._reject("malformed", web.json_response(problem, status=400))
        try:
            alerts = AlertmanagerPayload.model_validate(data).incoming()
        except OverflowError as exc:
            problem = {"error": f"a time is out of range once converted to UTC: {exc}"}
            return self._reject("malformed", web.json_response(problem, status=400))
        except ValidationError as exc:
            return self._reject("malformed", web.json_response(_problems(exc), status=400))
        try:
            ack = self._intake.submit(alerts, len(body))
        except Refused as refused:
            headers = {"Retry-After": RETRY_AFTER} if refused.status == 503 else None
            response = web.json_response(
                {"error": str(refused)}, status=refused.status, headers=headers
            )
            return self._reject(refused.reason, response)
        try:
            # The ack is cancelled on timeout: if the committer has not taken it, it is
            # dropped; if it has, the receipts are committed anyway, which a resend dedups.
            await asyncio.wait_for(ack, ACK_WAIT)
        except (TimeoutError, JournalError) as exc:
            reason = "journal_unavailable"
            error = (
                f"the journal did not take the alerts within {ACK_WAIT:g}s"
                if isinstance(exc, TimeoutError)
                else f"the journal cannot take the alerts: {exc}"
            )
            response = web.json_response(
                {"error": f"{error}; retry later"},
                status=503,
                headers={"Retry-After": RETRY_AFTER},
            )
            return self._reject(reason, response)
        for alert in alerts:
            self._metrics.webhook_alerts.labels(alert.status).inc()
        return web.json_response({"accepted": len(alerts)})


def _problems(exc: ValidationError) -> dict[str, object]:
    problems = [
        {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "reason": error["msg"]}
        for error in exc.errors()
    ]
    return {"error": "invalid Alertmanager payload (version 4)", "problems": problems}


def add_routes(
    app: web.Application,
    intake: Intake,
    auth: Authenticator,
    metrics: FailoverMetrics,
    max_body_bytes: int,
) -> Webhook:
    """Mount ``POST /alertmanager`` on ``app``. ``auth`` also guards the failover API and
    the journal's read routes (``srd.http.journal_api``). Returns the handler, whose
    ``max_body_bytes`` a reload sets anew."""
    app[AUTH_KEY] = auth
    for reason in (
        "unauthorized",
        "too_large",
        "malformed",
        "queue_full",
        "shutting_down",
        "journal_unavailable",
    ):
        metrics.webhook_rejected.labels(reason)
    for status in ("firing", "resolved"):
        metrics.webhook_alerts.labels(status)
    webhook = Webhook(intake, max_body_bytes, metrics)
    app.router.add_post("/alertmanager", webhook.handle)
    return webhook
