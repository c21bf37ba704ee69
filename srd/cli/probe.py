"""``srd probe KIND URL``: one probe, printed as one JSON object, for a shell or a CI step.

The same probe classes the daemon runs, so what this prints is what srd sees.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from srd import __version__
from srd.config.probes import ExporterTarget, HttpTarget, ProbeTarget, SubstrateTarget
from srd.model import ChainSnapshot, Observation
from srd.probes import make_probe
from srd.probes.substrate import SubstrateProbe

NAME = "cli"


async def probe_once(
    kind: str, url: str, *, timeout_seconds: float, keep: list[str], expect_status: list[int]
) -> tuple[dict[str, Any], bool]:
    """Probe ``url`` once as ``kind``; return (the JSON object to print, whether it is up).
    Raises pydantic's ValidationError for a URL or option srd would refuse in a config."""
    common = {"name": NAME, "url": url, "timeout": timeout_seconds, "interval": timeout_seconds}
    headers = {"User-Agent": f"srd/{__version__}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        if kind == "substrate":
            node = SubstrateProbe(SubstrateTarget.model_validate(common), session)
            obs = await node()
            report = _report(obs)
            if obs.chain is not None:
                report |= _chain(obs.chain)
            report["methods"] = sorted(node.methods) if node.methods is not None else None
            return report, obs.up
        target: ProbeTarget
        if kind == "exporter":
            target = ExporterTarget.model_validate(common | {"keep": keep})
        else:
            target = HttpTarget.model_validate(common | {"expect_status": expect_status})
        _, probe = make_probe(target, session)
        obs = await probe()
    report = _report(obs)
    if obs.http_status is not None:
        report["status"] = obs.http_status
    if obs.samples is not None:
        report["samples"] = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value} for s in obs.samples
        ]
    return report, obs.up


def _report(obs: Observation) -> dict[str, Any]:
    return {
        "probe": obs.probe,
        "up": obs.up,
        "reason": obs.reason or None,
        "duration_seconds": round(obs.duration, 6),
    }


def _chain(chain: ChainSnapshot) -> dict[str, Any]:
    return {
        "chain": chain.chain,
        "best": chain.best,
        "finalized": chain.finalized,
        "finality_lag": chain.finality_lag,
        "peers": chain.peers,
        "is_syncing": chain.is_syncing,
        "should_have_peers": chain.should_have_peers,
        "sync_gap": chain.sync_gap,
    }
