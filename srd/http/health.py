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
_routes = web.RouteTableDef()


def add_routes(app: web.Application, registry: CollectorRegistry, readiness: Readiness) -> None:
    app[REGISTRY_KEY] = registry
    app[READINESS_KEY] = readiness
    app.add_routes(_routes)


@_routes.get("/metrics")
async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@_routes.get("/healthz")
async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@_routes.get("/readyz")
async def _readyz(request: web.Request) -> web.Response:
    reasons = request.app[READINESS_KEY]()
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})
