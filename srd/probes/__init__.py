"""Probes observe targets and return Observations; they never raise for a target that fails.

Substrate nodes are followed by a long-running ``SubstrateWatcher``; every other kind is a
periodic probe (``make_probe``). ``runner.ProbeRunner`` runs them all under the supervisor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from srd.config.probes import (
    ExporterTarget,
    HttpTarget,
    ProbesConfig,
    ProbeTarget,
    StreamStatsTarget,
)
from srd.model import Observation
from srd.probes.exporter import ExporterProbe
from srd.probes.http import HttpProbe
from srd.probes.streams import StreamStatsProbe

Probe = Callable[[], Awaitable[Observation]]
"""A probe of one target: call it to observe once."""


def make_probe(target: ProbeTarget, session: aiohttp.ClientSession) -> tuple[str, Probe]:
    """(kind, probe) for a periodic target."""
    if isinstance(target, HttpTarget):
        return "http", HttpProbe(target, session)
    if isinstance(target, ExporterTarget):
        return "exporter", ExporterProbe(target, session)
    if isinstance(target, StreamStatsTarget):
        return "streams", StreamStatsProbe(target, session)
    raise TypeError(f"no periodic probe for {type(target).__name__}")


def periodic_targets(config: ProbesConfig) -> list[ProbeTarget]:
    return [*config.http, *config.exporter, *config.streams]
