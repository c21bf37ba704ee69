"""Health checks runbook steps wait on: an HTTP request, or a probe srd already runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from srd.failover.runbooks import Check
from srd.model import Observation
from srd.probes.http import HttpProbe

ProbeStatus = Callable[[str], Observation | None]
"""The last observation of the probe target with this name (None: none yet)."""


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = ""


class CheckRunner(Protocol):
    async def __call__(self, check: Check) -> CheckResult: ...


class Checks:
    """Runs checks: ``http`` with srd's HTTP probe, ``probe`` from the probe's last result."""

    def __init__(self, session: aiohttp.ClientSession, probe_status: ProbeStatus) -> None:
        self._session = session
        self._probe_status = probe_status

    async def __call__(self, check: Check) -> CheckResult:
        if check.http is not None:
            obs = await HttpProbe(check.http, self._session)()
        else:
            found = self._probe_status(check.probe or "")
            if found is None:
                return CheckResult(False, f"no observation of probe {check.probe!r} yet")
            obs = found
        return CheckResult(obs.up, obs.reason)


async def wait_for(
    checks: CheckRunner, check: Check, seconds: float, interval: float
) -> CheckResult:
    """Run ``check`` until it passes or ``seconds`` have passed; the last result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                result = await checks(check)
        except TimeoutError:
            return CheckResult(False, f"no answer within {seconds:g}s")
        if result.ok or loop.time() + interval > deadline:
            return result
        await asyncio.sleep(interval)
