"""srd's HTTP server (aiohttp, one port), assembled from one routes module per surface:
``health`` (/metrics, /healthz, /readyz), and the failover stage's — ``alertmanager`` (the
webhook), ``failover_api`` (kill switch, approvals) and ``journal_api`` (executions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config.failover import FailoverConfig
from srd.failover.guards import Approvals, KillSwitch
from srd.failover.intake import Intake
from srd.failover.metrics import FailoverMetrics
from srd.http import alertmanager, failover_api, health, journal_api
from srd.http.auth import Authenticator
from srd.http.health import Readiness
from srd.journal import Journal


def build_app(registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    # No endpoint here takes a body yet; keep aiohttp's limit small until one does.
    app = web.Application(client_max_size=64 * 1024)
    health.add_routes(app, registry, readiness)
    return app


class FailoverRoutes:
    """The routes that feed and steer the failover stage, mounted on ``app``: Alertmanager's
    webhook into ``intake``, the ``kill_switch`` and ``approvals`` API, and ``journal``'s
    executions — all behind ``failover.auth``."""

    def __init__(
        self,
        app: web.Application,
        failover: FailoverConfig,
        metrics: FailoverMetrics,
        *,
        intake: Intake,
        kill_switch: KillSwitch,
        approvals: Approvals,
        journal: Journal,
    ) -> None:
        self.auth = Authenticator(failover.auth)
        self._webhook = alertmanager.add_routes(
            app, intake, self.auth, metrics, failover.max_body_bytes
        )
        failover_api.add_api_routes(app, kill_switch, approvals)
        journal_api.add_routes(app, journal, self.auth)

    def reload(self, failover: FailoverConfig) -> None:
        """Apply a new config's credentials and body limit to requests still to come."""
        self.auth.use(failover.auth)
        self._webhook.max_body_bytes = failover.max_body_bytes


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
