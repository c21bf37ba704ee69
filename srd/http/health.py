"""``GET /metrics``, ``/healthz`` and ``/readyz``: what Prometheus scrapes and what a
supervisor (systemd, Kubernetes) asks."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], list[str]]
"""Returns the reasons srd is not ready; an empty list means ready."""

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
READINESS_KEY: web.AppKey[Readiness] = web.AppKey("readiness")


def add_routes(app: web.Application, registry: CollectorRegistry, readiness: Readiness) -> None:
    app[REGISTRY_KEY] = registry
    app[READINESS_KEY] = readiness
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    reasons = request.app[READINESS_KEY]()
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})
