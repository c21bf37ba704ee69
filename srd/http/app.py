"""srd's HTTP server (aiohttp, one port): /metrics, /healthz, /readyz."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], list[str]]
"""Returns the reasons srd is not ready; an empty list means ready."""

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
READINESS_KEY: web.AppKey[Readiness] = web.AppKey("readiness")


def build_app(registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    # No endpoint here takes a body yet; keep aiohttp's limit small until one does.
    app = web.Application(client_max_size=64 * 1024)
    app[REGISTRY_KEY] = registry
    app[READINESS_KEY] = readiness
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


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


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on host:port (0 picks a free port) and yield the port actually bound."""
    # Keep-alive connections get a short close timeout, so shutdown stays within its grace.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        yield int(bound)
    finally:
        await runner.cleanup()
