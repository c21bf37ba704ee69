"""Real nodes and networks misbehave: split and endless bodies, ws:// URLs, long outages, nodes
reset to a fresh database, load-balanced URLs, forks at the same height. Each is a fault of the
sandbox's fake node on a real loopback port, and none may give a false signal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from srd.config.probes import HttpTarget
from srd.http.app import serving
from srd.model import Observation
from srd.probes.http import HttpProbe
from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate import RpcClient, RpcError, SubstrateProbe
from srd.probes.substrate_watcher import SubstrateWatcher
from srd.simulate.sandbox.substrate import FakeSubstrateNode, LoadBalancer
from tests.support.eventually import eventually
from tests.support.substratekit import (
    at_head,
    grown,
    target,
    three_blocks_followed,
    value,
    watched,
)


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def faulty(height: int, **faults: Any) -> FakeSubstrateNode:
    """A node of a chain ``height`` blocks high showing ``faults`` (``NodeFaults`` fields)."""
    node = FakeSubstrateNode(grown(height, "faults"))
    node.faults = replace(node.faults, **faults)
    return node


@asynccontextmanager
async def node_watched(
    node: FakeSubstrateNode,
    session: aiohttp.ClientSession,
    metrics: ProbeMetrics,
    seen: list[Observation] | None = None,
    **settings: Any,
) -> AsyncIterator[SubstrateWatcher]:
    """``node`` served, and a watcher of it with ``settings`` (``target``'s overrides)."""
    async with (
        node.serve() as url,
        watched(target(url, **settings), session, metrics, seen) as watcher,
    ):
        yield watcher


async def rpc_error(url: str, session: aiohttp.ClientSession) -> RpcError:
    """What the node at ``url`` fails a call with."""
    with pytest.raises(RpcError) as failed:
        await RpcClient(url, session, timeout=5.0).call("system_chain")
    return failed.value


# -- 1. whole bodies ---------------------------------------------------------------------------


async def test_a_node_answering_in_two_chunks_30ms_apart_is_up(
    session: aiohttp.ClientSession,
) -> None:
    node = faulty(12, split_body=0.03)
    async with node.serve() as url:
        obs = await SubstrateProbe(target(url), session)()
    assert obs.up, obs.reason
    assert obs.chain is not None and (obs.chain.best, obs.chain.finalized) == (12, 10)


@pytest.mark.parametrize(
    ("fault", "setting"),
    [("body_padding", 2 << 20), ("endless_body", True)],
    ids=["a reply over the limit", "an endless body"],
)
async def test_a_reply_over_the_limit_or_endless_is_too_big_not_malformed_and_the_call_ends(
    session: aiohttp.ClientSession, fault: str, setting: int | bool
) -> None:
    node = faulty(1, **{fault: setting})
    async with node.serve() as url:
        error = await rpc_error(url, session)
    assert error.error_class == "too_big"


async def test_a_5000_deep_answer_gives_a_reason_and_no_traceback(
    session: aiohttp.ClientSession,
) -> None:
    node = faulty(1, nested_result=5000)
    async with node.serve() as url:
        error = await rpc_error(url, session)
        obs = await SubstrateProbe(target(url), session)()
    assert error.error_class == "too_deep"
    assert not obs.up and "deeper than" in obs.reason


async def test_a_json_path_check_on_5000_deep_json_is_down_with_a_reason(
    session: aiohttp.ClientSession,
) -> None:
    deep = "[" * 5000 + "]" * 5000

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=deep, content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", handler)
    async with serving(app, "127.0.0.1", 0) as port:
        probe = HttpProbe(
            HttpTarget.model_validate(
                {
                    "name": "deep",
                    "url": f"http://127.0.0.1:{port}/health",
                    "body": {"json_path": "$.status", "equals": "ok"},
                }
            ),
            session,
        )
        obs = await probe()
    assert not obs.up
    assert "deeper than" in obs.reason


# -- 2. ws:// and wss:// URLs ---------------------------------------------------------------------


def test_node_urls_may_be_given_as_ws_or_wss() -> None:
    for url in ("ws://127.0.0.1:9944", "wss://rpc.example.org/"):
        assert str(target(url).url).startswith(url.split(":")[0] + "://")


async def test_a_ws_url_is_probed_and_the_http_transport_derived(
    session: aiohttp.ClientSession,
) -> None:
    node = faulty(5)
    async with node.serve() as url:
        obs = await SubstrateProbe(target(url.replace("http://", "ws://")), session)()
    assert obs.up, obs.reason
    assert obs.chain is not None and obs.chain.best == 5


async def test_a_websocket_only_node_is_probed_and_followed_over_websocket(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = grown(5, "ws-only")
    node = FakeSubstrateNode(chain)
    node.faults.websocket_only = True
    seen: list[Observation] = []
    async with node.serve() as url:
        ws_url = url.replace("http://", "ws://")
        obs = await SubstrateProbe(target(ws_url), session)()
        assert obs.up, obs.reason
        async with watched(target(ws_url), session, metrics, seen) as watcher:
            await three_blocks_followed(node, chain, watcher)
            await eventually(lambda: seen and seen[-1].up, within=5.0, what="the node up")
    assert value(metrics, "vilokanam_blocks_produced_total", chain="ws-only") == 3


# -- 3. backoff that backs off ---------------------------------------------------------------------


async def test_a_node_down_for_40_backoff_units_gets_at_most_about_6_attempts(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    # 40 s at the default 1 s first delay, scaled down 20x.
    unit = 0.05
    labels = {"chain": "outage", "node": "n1"}
    chain = grown(3, "outage")
    node = FakeSubstrateNode(chain)
    async with node_watched(
        node, session, metrics, reconnect_backoff=unit, interval=0.5
    ) as watcher:
        await eventually(lambda: node.websockets == 1, within=5.0, what="a WebSocket open")
        chain.produce()
        await at_head(watcher, chain)
        subscribed = node.requests["chain_subscribeNewHeads"]
        await node.go_down()
        before = node.websocket_attempts
        counted = value(metrics, "srd_chain_subscription_attempts_total", **labels)
        await asyncio.sleep(40 * unit)
        attempts = node.websocket_attempts - before
        counted = value(metrics, "srd_chain_subscription_attempts_total", **labels) - counted
        node.faults.down = False
        await eventually(
            lambda: node.requests["chain_subscribeNewHeads"] > subscribed,
            within=5.0,
            what="subscribed again after the outage",
        )
    assert 3 <= attempts <= 7
    assert counted == attempts
    restarts = value(metrics, "srd_chain_subscription_restarts_total", **labels, reason="closed")
    assert restarts == 1  # the working subscription was lost once; attempts are not restarts


# -- 4. heights that go back ---------------------------------------------------------------------


async def test_after_a_node_reset_finalized_follows_the_node_and_never_exceeds_best(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = grown(30, "reset")
    node = FakeSubstrateNode(chain)
    seen: list[Observation] = []
    async with node_watched(node, session, metrics, seen) as watcher:
        await eventually(
            lambda: seen and seen[-1].up and watcher.tracker.best is not None,
            within=5.0,
            what="the node up and followed",
        )
        assert watcher.tracker.finalized is not None and watcher.tracker.finalized.number == 28
        await node.close_websockets()
        chain.reset()
        for _ in range(5):
            chain.produce()
        await eventually(
            lambda: (
                watcher.tracker.finalized is not None
                and watcher.tracker.finalized.number == chain.finalized.number
            ),
            within=5.0,
            what="finalized followed down to the reset node's",
        )
        seen.clear()
        await eventually(lambda: len(seen) >= 2, within=5.0, what="two more observations")
    assert all(o.chain is not None and o.chain.finalized <= o.chain.best for o in seen if o.up)
    assert value(metrics, "srd_chain_finalized_block", chain="reset", node="n1") == 3
    kinds = {
        kind: value(metrics, "srd_chain_height_regressions_total", node="n1", kind=kind)
        for kind in ("best", "finalized")
    }
    assert kinds["finalized"] >= 1 and kinds["best"] >= 1


async def test_a_load_balanced_url_follows_what_the_nodes_say_and_counts_regressions(
    metrics: ProbeMetrics,
) -> None:
    # Two nodes of one chain behind one URL, one 6 blocks behind the other; a new connection
    # per request, so requests alternate between them.
    ahead, behind = grown(20, "lb"), grown(14, "lb")
    pair = LoadBalancer(FakeSubstrateNode(ahead), FakeSubstrateNode(behind))
    seen: list[Observation] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        pair.serve() as url,
        aiohttp.ClientSession(connector=connector) as session,
        watched(target(url, subscribe=False), session, metrics, seen),
    ):
        await eventually(
            lambda: sum(o.up for o in seen) >= 6, within=5.0, what="six observations up"
        )
    assert all(o.chain.finalized <= o.chain.best for o in seen if o.chain is not None)
    assert value(metrics, "srd_chain_height_regressions_total", node="n1", kind="finalized") >= 1


# -- 5. block times within one fork ----------------------------------------------------------------


async def test_the_block_after_a_same_height_fork_is_timed_from_its_own_parent(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = grown(5, "fork", finality_lag=3)
    node = FakeSubstrateNode(chain)
    async with node_watched(node, session, metrics, interval=5.0, timeout=1.0) as watcher:
        await eventually(lambda: node.websockets == 1, within=5.0, what="a WebSocket open")
        await at_head(watcher, chain)
        chain.produce()
        await at_head(watcher, chain)
        await asyncio.sleep(1.0)  # the old fork's block is old by now
        chain.reorg(depth=1, length=1)  # a competing block at the same height
        await at_head(watcher, chain)
        before = value(metrics, "srd_chain_block_time_seconds_sum", chain="fork")
        await asyncio.sleep(0.05)
        chain.produce()
        await at_head(watcher, chain)
    block_time = value(metrics, "srd_chain_block_time_seconds_sum", chain="fork") - before
    assert 0.04 < block_time < 0.5  # not the 1 s since the old fork's block


# -- 6. bounded memory in chainhead mode ---------------------------------------------------------


async def test_chainhead_following_keeps_only_unfinalized_headers(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = grown(2, "memory")
    node = FakeSubstrateNode(chain)
    node.chainhead_only = True
    node.max_pinned = 100_000  # no stop, and so no fresh follow, in the middle
    async with node_watched(node, session, metrics, interval=5.0, timeout=1.0) as watcher:
        await eventually(lambda: node.follows == 1, within=5.0, what="a chainHead follow")
        await at_head(watcher, chain)
        for _ in range(600):
            chain.produce()
            await asyncio.sleep(0.001)
        await at_head(watcher, chain, within=20.0)
        held = len(watcher._follow_headers)
    # The unfinalized blocks (2) and the newest finalized one, with slack for events in flight.
    assert held <= 8


# -- 8. poll mode ----------------------------------------------------------------------------------


async def test_poll_mode_records_no_block_times_quantised_to_the_interval(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = grown(2, "polled")
    async with node_watched(FakeSubstrateNode(chain), session, metrics, subscribe=False) as watcher:
        await at_head(watcher, chain)
        for _ in range(6):
            chain.produce()
            await asyncio.sleep(0.15)  # about one block per poll: each poll sees one
        await at_head(watcher, chain)
    assert value(metrics, "vilokanam_blocks_produced_total", chain="polled") == 6
    assert value(metrics, "srd_chain_block_time_seconds_count", chain="polled") == 0
