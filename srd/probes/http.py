"""Service health endpoints: up when the status is expected and the answer came in time."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from srd.config import HttpTarget
from srd.model import Observation


class HttpProbe:
    def __init__(self, target: HttpTarget, session: aiohttp.ClientSession) -> None:
        self.target = target
        self._session = session

    async def __call__(self) -> Observation:
        target = self.target
        headers = {}
        if target.bearer_token is not None:
            headers["Authorization"] = f"Bearer {target.bearer_token.value}"
        loop = asyncio.get_running_loop()
        started, at = loop.time(), time.time()
        status: int | None = None
        try:
            async with (
                asyncio.timeout(target.timeout),
                self._session.get(
                    str(target.url),
                    headers=headers,
                    ssl=target.tls_verify,
                    allow_redirects=False,
                ) as response,
            ):
                status = response.status
                await response.content.read(64 * 1024)
        except TimeoutError:
            reason = f"timeout after {target.timeout:g}s"
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = "" if status in target.expect_status else f"unexpected status {status}"
        return Observation(
            "http",
            target.name,
            at,
            loop.time() - started,
            up=not reason,
            reason=reason,
            http_status=status,
        )
