"""``srd probe KIND URL``: one probe, printed as one JSON object, for a shell or a CI step.

The same probe classes the daemon runs, so what this prints is what srd sees. An exporter
without ``--keep`` is summarised instead: families, samples, bytes and parse time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from srd import __version__
from srd.cli.exitcodes import FAILED, OK, USAGE
from srd.config.probes import ExporterTarget, HttpTarget, ProbeTarget, SubstrateTarget
from srd.model import ChainSnapshot, Observation
from srd.probes import make_probe
from srd.probes.body import read_body
from srd.probes.exporter import ACCEPT
from srd.probes.fetch import Payload, ScrapeError, observe
from srd.probes.substrate import SubstrateProbe

NAME = "cli"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = commands.add_parser(
        "probe", help="probe one target once and print what srd sees as JSON (exit 1 if down)"
    )
    probe.add_argument("kind", choices=["substrate", "exporter", "http"])
    probe.add_argument("url", help="JSON-RPC URL, metrics page URL or health URL")
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    probe.add_argument(
        "--keep",
        action="append",
        default=[],
        help="exporter: a metric name to extract (repeat); without it, a summary of the page",
    )
    probe.add_argument(
        "--expect-status", type=int, action="append", help="http: an accepted status (repeat)"
    )
    probe.add_argument(
        "--ca-file",
        help="substrate, http: PEM file of the CA(s) to trust for https:// and wss:// "
        "(certificates are always verified)",
    )
    probe.set_defaults(handler=_probe)


def _probe(args: argparse.Namespace) -> int:
    try:
        report, up = asyncio.run(
            probe_once(
                args.kind,
                args.url,
                timeout_seconds=args.timeout,
                keep=args.keep,
                expect_status=args.expect_status or [200],
                ca_file=args.ca_file,
            )
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            print(f"srd probe {args.kind}: {where}: {error['msg']}", file=sys.stderr)
        return USAGE
    print(json.dumps(report, indent=2))
    return OK if up else FAILED


async def probe_once(
    kind: str,
    url: str,
    *,
    timeout_seconds: float,
    keep: list[str],
    expect_status: list[int],
    ca_file: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Probe ``url`` once as ``kind``; return (the JSON object to print, whether it is up).
    Raises pydantic's ValidationError for a URL or option srd would refuse in a config."""
    common: dict[str, Any] = {
        "name": NAME,
        "url": url,
        "timeout": timeout_seconds,
        "interval": timeout_seconds,
    }
    tls = {} if ca_file is None else {"ca_file": ca_file}
    headers = {"User-Agent": f"srd/{__version__}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        if kind == "substrate":
            node = SubstrateProbe(SubstrateTarget.model_validate(common | tls), session)
            obs = await node()
            report = _report(obs)
            if obs.chain is not None:
                report |= _chain(obs.chain)
            report["methods"] = sorted(node.methods) if node.methods is not None else None
            return report, obs.up
        target: ProbeTarget
        if kind == "exporter" and not keep:
            return await _page_summary(session, common)
        if kind == "exporter":
            target = ExporterTarget.model_validate(common | {"keep": keep})
        else:
            target = HttpTarget.model_validate(common | tls | {"expect_status": expect_status})
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


async def _page_summary(
    session: aiohttp.ClientSession, common: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """An exporter page fully parsed (prometheus-client's parser): what an operator checks
    before choosing what to ``--keep``."""
    target = ExporterTarget.model_validate(common | {"keep": ["up"]})  # keep is not used
    summary: dict[str, Any] = {}

    async def scrape(payload: Payload) -> None:
        async with session.get(
            str(target.url), headers={"Accept": ACCEPT}, allow_redirects=False
        ) as response:
            payload.http_status = response.status
            if response.status != 200:
                raise ScrapeError(f"unexpected status {response.status}")
            body = await read_body(response, target.max_body_bytes)
        started = time.perf_counter()
        try:
            families = list(text_string_to_metric_families(body.decode("utf-8", "replace")))
        except ValueError as exc:
            raise ScrapeError(f"not a text-format page: {exc}") from None
        summary["families"] = len(families)
        summary["samples"] = sum(len(family.samples) for family in families)
        summary["bytes"] = len(body)
        summary["parse_seconds"] = round(time.perf_counter() - started, 6)

    obs = await observe("exporter", target, scrape)
    report = _report(obs) | {"status": obs.http_status} | summary
    return report, obs.up


def _report(obs: Observation) -> dict[str, Any]:
    return {
        "probe": obs.probe,
        "up": obs.up,
        "reason": obs.reason or None,
        "duration_seconds": round(obs.duration, 6),
    }


_CHAIN_REPORTED = "chain best finalized finality_lag peers is_syncing should_have_peers sync_gap"
"""What ``srd probe substrate`` reports of a node's chain, in this order."""


def _chain(chain: ChainSnapshot) -> dict[str, Any]:
    return {name: getattr(chain, name) for name in _CHAIN_REPORTED.split()}
