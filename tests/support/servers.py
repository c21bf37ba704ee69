"""A real aiohttp server on a free loopback port, for the tests' fakes and the app's routes."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Server:
    port: int
    url: str
    """The base URL, without a trailing slash: ``http://127.0.0.1:<port>``."""


@asynccontextmanager
async def running(
    app: web.Application, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """Serve ``app`` on 127.0.0.1 at a port the kernel picks, until the block ends."""
    # A short shutdown timeout: a client's keep-alive connection must not hold up the test.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = int(runner.addresses[0][1])
        yield Server(port, f"{'https' if tls else 'http'}://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
