"""What the HTTP-based probes share: a timed observation, and one way of turning a failure
into the reason an operator reads (bodies are read by ``srd.probes.body``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from srd import clock
from srd.config.probes import ProbeTarget
from srd.model import Observation, Sample
from srd.probes.body import BodyError


class ScrapeError(Exception):
    """The answer cannot be used; ``str()`` is the reason the observation gives."""


@dataclass
class Payload:
    """What a probe learned, filled in as it goes (the status is known before a body fails)."""

    samples: tuple[Sample, ...] | None = None
    http_status: int | None = None


async def observe(
    kind: str, target: ProbeTarget, work: Callable[[Payload], Awaitable[None]]
) -> Observation:
    """Run ``work`` within the target's timeout; up when it returns, down with the reason
    when it raises ScrapeError, times out or fails to connect."""
    loop = asyncio.get_running_loop()
    started, at = loop.time(), clock.now()
    payload = Payload()
    reason = ""
    try:
        async with asyncio.timeout(target.timeout):
            await work(payload)
    except TimeoutError:
        reason = f"timeout after {target.timeout:g}s"
    except (ScrapeError, BodyError) as exc:
        reason = str(exc)
    except aiohttp.ClientError as exc:
        reason = describe_client_error(exc)
    return Observation(
        kind,
        target.name,
        at,
        loop.time() - started,
        up=not reason,
        reason=reason,
        samples=None if reason else payload.samples,
        http_status=payload.http_status,
    )


def describe_client_error(exc: aiohttp.ClientError) -> str:
    """A short reason for a failed request, naming the cause an operator acts on."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        detail = getattr(cause, "verify_message", None) or str(cause)
        return f"TLS certificate verification failed for {exc.host}:{exc.port}: {detail}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake with {exc.host}:{exc.port} failed: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connection refused by {exc.host}:{exc.port}"
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.TooManyRedirects):
        # history holds the redirects followed plus the one that went over the limit.
        return f"more than {len(exc.history) - 1} redirects (last from {exc.history[-1].url})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return f"{type(exc).__name__}: {exc}"
