"""srd's HTTP server (aiohttp, one port), assembled from one routes module per surface:
``health`` (/metrics, /healthz, /readyz), and the failover stage's — ``alertmanager`` (the
webhook), ``failover_api`` (kill switch, approvals, runbooks started by hand) and
``journal_api`` (executions)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config.failover import FailoverConfig
from srd.failover.dispatch import Dispatcher
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
    webhook into ``intake``, the ``kill_switch`` and ``approvals`` API, runbooks started by
    hand through ``dispatcher``, and ``journal``'s executions — all behind ``failover.auth``."""

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
        dispatcher: Dispatcher,
    ) -> None:
        self.auth = Authenticator(failover.auth)
        self._webhook = alertmanager.add_routes(
            app, intake, self.auth, metrics, failover.max_body_bytes
        )
        failover_api.add_api_routes(app, kill_switch, approvals)
        failover_api.add_start_route(app, dispatcher)
        journal_api.add_routes(app, journal, self.auth)

    def reload(self, failover: FailoverConfig) -> None:
        """Apply a new config's credentials and body limit to requests still to come."""
        self.auth.use(failover.auth)
        self._webhook.max_body_bytes = failover.max_body_bytes


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to host:port (every address the host resolves to) and listening, so a
    busy address is known before anything else starts; OSError when one cannot be had.
    Connections that arrive before ``serving`` takes them wait in the backlog."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: an IPv6 socket must not also take the IPv4 port.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            # Listening claims the port: two sockets merely bound with SO_REUSEADDR may share it.
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, *, sockets: Sequence[socket.socket] = ()
) -> AsyncIterator[int]:
    """Serve ``app`` on host:port (0 picks a free port), or on ``sockets`` already bound
    (``listen``), and yield the port actually bound. The sockets are closed on exit."""
    # Keep-alive connections get a short close timeout, so shutdown stays within its grace.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        if sockets:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        else:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        bound = runner.addresses[0][1]
        yield int(bound)
    finally:
        await runner.cleanup()
