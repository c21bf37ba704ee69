"""``POST /alertmanager``: Alertmanager's webhook (payload version 4), validated and queued.

The handler only checks and queues, so it answers in well under a millisecond; deciding and
acting happen off the request path (``srd.failover.dispatch``). Answers follow Alertmanager's
retry rules: 5xx is retried, other 4xx are not — so a full queue is 503, never a 2xx that drops.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from srd.failover.intake import IncomingAlert, Intake, iso_utc
from srd.failover.metrics import FailoverMetrics
from srd.http.auth import AUTH_KEY, Authenticator

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
        too_large = web.json_response({"error": f"body larger than {limit} bytes"}, status=413)
        if request.content_length is not None and request.content_length > limit:
            return self._reject("too_large", too_large)
        body = await _read_limited(request, limit)
        if body is None:
            return self._reject("too_large", too_large)
        try:
            payload = AlertmanagerPayload.model_validate(json.loads(body))
        except ValueError as exc:  # ValidationError and JSONDecodeError are ValueErrors
            return self._reject("malformed", web.json_response(_problems(exc), status=400))
        alerts = payload.incoming()
        if self._intake.closed:
            response = web.json_response(
                {"error": "srd is shutting down; retry later"},
                status=503,
                headers={"Retry-After": "10"},
            )
            return self._reject("shutting_down", response)
        if not self._intake.offer(alerts):
            response = web.json_response(
                {"error": "intake queue full; retry later"},
                status=503,
                headers={"Retry-After": "10"},
            )
            return self._reject("queue_full", response)
        for alert in alerts:
            self._metrics.webhook_alerts.labels(alert.status).inc()
        return web.json_response({"accepted": len(alerts)})


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` (the rest is never buffered)."""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _problems(exc: ValueError) -> dict[str, object]:
    if not isinstance(exc, ValidationError):
        return {"error": f"body is not JSON: {exc}"}
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
    for reason in ("unauthorized", "too_large", "malformed", "queue_full", "shutting_down"):
        metrics.webhook_rejected.labels(reason)
    for status in ("firing", "resolved"):
        metrics.webhook_alerts.labels(status)
    webhook = Webhook(intake, max_body_bytes, metrics)
    app.router.add_post("/alertmanager", webhook.handle)
    return webhook
