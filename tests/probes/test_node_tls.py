"""Nodes given as ``wss://``, as public endpoints are: TLS is verified by default, a target's
``ca_file`` trusts a private CA, and heads are followed over the same secure socket."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest_asyncio
from aiohttp import web

from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate import SubstrateProbe
from srd.simulate.sandbox.substrate import FakeSubstrateNode
from tests.cli.test_probe_cli import srd
from tests.probes.test_http_probe import self_signed
from tests.support.substratekit import grown, target, three_blocks_followed, value, watched


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@asynccontextmanager
async def serving_tls(node: FakeSubstrateNode, directory: Path) -> AsyncIterator[tuple[str, Path]]:
    """The node on a free loopback port behind TLS: (its wss:// URL, the certificate file)."""
    cert_file, key_file = self_signed(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    runner = web.AppRunner(node.app(), shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        yield f"wss://localhost:{runner.addresses[0][1]}", cert_file
    finally:
        await node.close_websockets()
        await runner.cleanup()


async def test_a_wss_node_with_an_untrusted_certificate_is_down_and_says_why(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving_tls(FakeSubstrateNode(grown(3, "tls")), tmp_path) as (url, _):
        obs = await SubstrateProbe(target(url), session)()
    assert not obs.up
    assert "certificate verify failed" in obs.reason


async def test_a_wss_node_is_probed_with_the_targets_ca_file(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving_tls(FakeSubstrateNode(grown(3, "tls")), tmp_path) as (url, cert):
        obs = await SubstrateProbe(target(url, ca_file=cert), session)()
    assert obs.up, obs.reason
    assert obs.chain is not None and obs.chain.best == 3


async def test_a_wss_only_node_is_followed_over_tls(
    session: aiohttp.ClientSession, metrics: ProbeMetrics, tmp_path: Path
) -> None:
    chain = grown(3, "wss-only")
    node = FakeSubstrateNode(chain)
    node.faults.websocket_only = True
    async with (
        serving_tls(node, tmp_path) as (url, cert),
        watched(target(url, ca_file=cert), session, metrics) as watcher,
    ):
        await three_blocks_followed(node, chain, watcher)
    assert value(metrics, "vilokanam_blocks_produced_total", chain="wss-only") == 3


async def test_srd_probe_substrate_takes_a_wss_url_and_a_ca_file(tmp_path: Path) -> None:
    async with serving_tls(FakeSubstrateNode(grown(4, "wss-probe")), tmp_path) as (url, cert):
        refused, _, _ = await srd("substrate", url)
        code, report, err = await srd("substrate", url, "--ca-file", str(cert))
    assert refused == 1
    assert code == 0, err
    assert report is not None and (report["chain"], report["best"]) == ("wss-probe", 4)
