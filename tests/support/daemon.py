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
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.eventually import eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def srd_config(
    directory: Path,
    port: int,
    *,
    failover: dict[str, Any],
    actuators: dict[str, Any],
    mode: str = "armed",
) -> Path:
    """``srd.yaml`` in ``directory`` (its state below it) for an srd listening on loopback
    ``port``; written as JSON, which YAML reads."""
    settings = {
        "mode": mode,
        "state_dir": str(directory / "state"),
        "server": {"listen": f"127.0.0.1:{port}"},
        "failover": failover,
        "actuators": actuators,
    }
    path = directory / "srd.yaml"
    path.write_text(json.dumps(settings))
    return path


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
        async def satisfied() -> tuple[float] | None:
            # A tuple: a satisfying value of 0 is still an answer.
            value = await self.metric(name, labels)
            return (value,) if value is not None and predicate(value) else None

        what = f"{name}{labels} satisfies the condition"
        (value,) = await eventually(satisfied, within=timeout, what=what, every=0.2)
        return value

    def logged(self, event: str) -> list[dict[str, object]]:
        return [line for line in self.log_lines if line.get("event") == event]


@asynccontextmanager
async def reaped(
    process: asyncio.subprocess.Process,
    stop: Callable[[asyncio.subprocess.Process], None] = asyncio.subprocess.Process.kill,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``process``, stopped (killed, unless ``stop`` says otherwise) and waited for when the
    block ends, unless it has exited already."""
    try:
        yield process
    finally:
        if process.returncode is None:
            stop(process)
        await process.wait()


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
        async with reaped(process):
            await _wait_healthy(srd, ready_timeout)
            yield srd
    finally:
        await reader


async def _read_logs(process: asyncio.subprocess.Process, lines: list[dict[str, object]]) -> None:
    assert process.stderr is not None
    async for raw in process.stderr:
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"event": "(not json)", "text": raw.decode(errors="replace")})


async def _wait_healthy(srd: RunningSrd, timeout: float) -> None:
    async def healthy() -> bool:
        if srd.process.returncode is not None:
            raise AssertionError(f"srd exited with {srd.process.returncode}")
        try:
            return (await srd.get("/healthz"))[0] == 200
        except aiohttp.ClientError:
            return False

    try:
        await eventually(healthy, within=timeout, what="srd answers /healthz", every=0.1)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; its log: {srd.log_lines}") from None
