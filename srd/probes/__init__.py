"""Probes observe targets and return Observations; they never raise for a target that fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from srd.config import ProbesConfig, ProbeTarget
from srd.model import Observation
from srd.probes.http import HttpProbe
from srd.probes.substrate import SubstrateProbe

Probe = Callable[[], Awaitable[Observation]]
"""A probe of one target: call it to observe once."""


def build_probes(
    config: ProbesConfig, session: aiohttp.ClientSession
) -> list[tuple[ProbeTarget, str, Probe]]:
    """Every configured probe as (target, kind, probe)."""
    probes: list[tuple[ProbeTarget, str, Probe]] = []
    for node in config.substrate:
        probes.append((node, "substrate", SubstrateProbe(node, session)))
    for service in config.http:
        probes.append((service, "http", HttpProbe(service, session)))
    return probes
