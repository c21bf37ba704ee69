"""Run the real ``srd`` command as a subprocess on free loopback ports, as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningSrd:
    process: asyncio.subprocess.Process
    base_url: str
    log_lines: list[dict[str, object]] = field(default_factory=list)

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.base_url + path) as reply:
            return reply.status, await reply.text()

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        _, text = await self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    return float(sample.value)
        return None

    async def wait_for(
        self,
        name: str,
        labels: dict[str, str],
        predicate: Callable[[float], bool],
        timeout: float = 15,
    ) -> float:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.metric(name, labels)
            if value is not None and predicate(value):
                return value
            if loop.time() > deadline:
                raise AssertionError(f"{name}{labels} never satisfied the condition; last {value}")
            await asyncio.sleep(0.2)

    def logged(self, event: str) -> list[dict[str, object]]:
        return [line for line in self.log_lines if line.get("event") == event]


@asynccontextmanager
async def running_srd(
    *args: str, port: int, env: dict[str, str] | None = None, ready_timeout: float = 20
) -> AsyncIterator[RunningSrd]:
    """Start ``srd ARGS…`` with JSON logs and wait until /healthz answers."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "srd.cli",
        *args,
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    srd = RunningSrd(process, f"http://127.0.0.1:{port}")
    reader = asyncio.create_task(_read_logs(process, srd.log_lines))
    try:
        await _wait_healthy(srd, ready_timeout)
        yield srd
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader


async def _read_logs(process: asyncio.subprocess.Process, lines: list[dict[str, object]]) -> None:
    assert process.stderr is not None
    async for raw in process.stderr:
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"event": "(not json)", "text": raw.decode(errors="replace")})


async def _wait_healthy(srd: RunningSrd, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if srd.process.returncode is not None:
            raise AssertionError(f"srd exited with {srd.process.returncode}: {srd.log_lines}")
        try:
            if (await srd.get("/healthz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"srd did not become healthy in {timeout}s: {srd.log_lines}")
