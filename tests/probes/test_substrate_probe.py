"""srd follows fake Substrate nodes on real loopback ports and derives the right signals from
every fault the fake can show."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from srd.config.probes import SubstrateTarget
from srd.model import Observation
from srd.probes.chain import ChainGroup, Header
from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate import RpcClient, RpcError, SubstrateProbe
from srd.probes.substrate_watcher import SubstrateWatcher
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode, producing
from tests.support.eventually import eventually
from tests.support.substratekit import (
    at_head,
    head_of,
    produce,
    recording,
    value,
    watched,
    watching,
)
from tests.support.substratekit import target as node_target

WITHIN = 5.0
"""Seconds a watcher gets to see what the fake node did: many block intervals here."""


def target(url: str, name: str = "n1", **overrides: Any) -> SubstrateTarget:
    """A node target polled and declared silent faster than the fault tests' ones."""
    return node_target(
        url, name, **{"interval": 0.1, "timeout": 0.1, "silence_timeout": 0.3, **overrides}
    )


async def produced_one_by_one(watcher: SubstrateWatcher, chain: FakeChain, blocks: int) -> None:
    """``chain`` grows by ``blocks``, the next only once ``watcher`` has seen the last."""
    for _ in range(blocks):
        chain.produce()
        await at_head(watcher, chain)


def finalized_of(chain: FakeChain) -> Header:
    return Header(chain.finalized.number, chain.finalized.hash, chain.finalized.parent_hash)


async def finalized_at_head(watcher: SubstrateWatcher, chain: FakeChain) -> None:
    await eventually(
        lambda: watcher.tracker.finalized == finalized_of(chain),
        within=WITHIN,
        what=f"{watcher.target.name} at finalized block {chain.finalized.number}",
    )


def subscribed(node: FakeSubstrateNode) -> Callable[[], bool]:
    return lambda: node.requests.get("chain_subscribeNewHeads", 0) >= 1 and node.websockets == 1


def new_spec_node(chain: FakeChain, *, legacy_http: bool = True) -> FakeSubstrateNode:
    node = FakeSubstrateNode(chain)
    node.chainhead_only = True
    if not legacy_http:  # a light-client-style endpoint: chain data only through chainHead
        node.missing_methods = {"chain_getHeader", "chain_getFinalizedHead", "chain_getBlockHash"}
    return node


def following(node: FakeSubstrateNode) -> Callable[[], bool]:
    return lambda: node.follows == 1 and node.websockets == 1


HEAD_TRACKINGS = ["legacy", "chainhead", "poll"]
FOLLOW = {"legacy": "chain_subscribeNewHeads", "chainhead": "chainHead_v1_follow"}
UNFOLLOW = {"legacy": "chain_unsubscribeNewHeads", "chainhead": "chainHead_v1_unfollow"}


def node_for(head_tracking: str, chain: FakeChain) -> FakeSubstrateNode:
    """A node that serves heads only the way ``head_tracking`` follows them (polls: legacy)."""
    return new_spec_node(chain) if head_tracking == "chainhead" else FakeSubstrateNode(chain)


async def heads_followed(node: FakeSubstrateNode, head_tracking: str) -> None:
    """Until the watcher follows heads over its WebSocket; at once for polls."""
    if head_tracking != "poll":
        follows = subscribed(node) if head_tracking == "legacy" else following(node)
        await eventually(follows, within=WITHIN, what=f"heads followed with {head_tracking}")


@asynccontextmanager
async def followed(
    node: FakeSubstrateNode,
    url: str,
    session: aiohttp.ClientSession,
    metrics: ProbeMetrics,
    head_tracking: str,
    seen: list[Observation] | None = None,
    **settings: Any,
) -> AsyncIterator[SubstrateWatcher]:
    """A watcher of ``node`` at ``url``, once it follows heads the ``head_tracking`` way; its
    observations also go to ``seen``."""
    watcher = SubstrateWatcher(
        target(url, head_tracking=head_tracking, **settings),
        session,
        metrics,
        on_observation=None if seen is None else recording(metrics, seen),
    )
    async with watching(watcher):
        await heads_followed(node, head_tracking)
        yield watcher


@asynccontextmanager
async def live(
    chain: FakeChain,
    head_tracking: str,
    session: aiohttp.ClientSession,
    metrics: ProbeMetrics,
    seen: list[Observation],
) -> AsyncIterator[tuple[FakeSubstrateNode, SubstrateWatcher]]:
    """A node serving heads the ``head_tracking`` way while ``chain`` produces a block every
    50 ms, and a watcher of it once it follows them (its observations also go to ``seen``)."""
    node = node_for(head_tracking, chain)
    async with (
        node.serve() as url,
        producing(chain, 0.05),
        followed(node, url, session, metrics, head_tracking, seen) as watcher,
    ):
        yield node, watcher


@asynccontextmanager
async def subscribed_only(
    node: FakeSubstrateNode,
    session: aiohttp.ClientSession,
    metrics: ProbeMetrics,
    head_tracking: str,
) -> AsyncIterator[SubstrateWatcher]:
    """``node`` served and a watcher following it whose polls are too rare to matter: every
    head it sees came over the subscription."""
    async with (
        node.serve() as url,
        followed(node, url, session, metrics, head_tracking, interval=5.0, timeout=1.0) as watcher,
    ):
        yield watcher


async def test_heads_followed_over_websocket_count_blocks_and_block_times(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = FakeChain(name="live")
    node = FakeSubstrateNode(chain, pad_numbers=False)
    async with subscribed_only(node, session, metrics, "legacy") as watcher:
        await produce(chain, 4)
        await at_head(watcher, chain)
    assert value(metrics, "vilokanam_blocks_produced_total", chain="live") == 4
    assert value(metrics, "srd_chain_block_time_seconds_count", chain="live") == 3
    assert node.requests.get("chain_getHeader", 0) <= 3  # heads came from the subscription


@pytest.mark.parametrize("head_tracking", HEAD_TRACKINGS)
async def test_a_stall_raises_head_age_and_is_not_mistaken_for_a_silent_subscription(
    session: aiohttp.ClientSession, metrics: ProbeMetrics, head_tracking: str
) -> None:
    chain = FakeChain(name="stall")
    seen: list[Observation] = []
    async with live(chain, head_tracking, session, metrics, seen) as (node, watcher):
        assert watcher.head_mode() == head_tracking
        await eventually(
            lambda: (watcher.tracker.best or head_of(chain)).number >= 3,
            within=WITHIN,
            what="block 3",
        )
        chain.production_stalled = True
        await asyncio.sleep(0.8)
    up = [obs.chain for obs in seen if obs.chain is not None]
    assert up[-1].head_age is not None and up[-1].head_age > 0.6
    assert value(metrics, "srd_chain_head_age_seconds", chain="stall", node="n1") > 0.6
    labels = {"chain": "stall", "node": "n1", "reason": "silent"}
    assert value(metrics, "srd_chain_subscription_restarts_total", **labels) == 0
    if head_tracking == "poll":
        assert node.websockets == 0
    else:
        assert node.requests[FOLLOW[head_tracking]] == 1, "followed once, never again"


@pytest.mark.parametrize("head_tracking", ["legacy", "chainhead"])
async def test_a_depth_3_reorg_counts_exactly_one_reorg_of_depth_3(
    session: aiohttp.ClientSession, metrics: ProbeMetrics, head_tracking: str
) -> None:
    chain = FakeChain(name="reorg", finality_lag=5)
    node = node_for(head_tracking, chain)
    for _ in range(8):
        chain.produce()
    async with subscribed_only(node, session, metrics, head_tracking) as watcher:
        await at_head(watcher, chain)
        chain.reorg(depth=3)
        await at_head(watcher, chain)
        produced = value(metrics, "vilokanam_blocks_produced_total", chain="reorg")
        for _ in range(2):  # finalizes past the fork: the old branch is pruned
            chain.produce()
        await at_head(watcher, chain)
        if head_tracking == "chainhead":
            await eventually(
                lambda: node.pinned() == chain.finality_lag,
                within=WITHIN,
                what="the pruned branch unpinned",
            )
    labels = {"chain": "reorg", "node": "n1"}
    assert value(metrics, "srd_chain_reorgs_total", **labels) == 1
    assert value(metrics, "srd_chain_reorg_depth_blocks_count", **labels) == 1
    assert value(metrics, "srd_chain_reorg_depth_blocks_sum", **labels) == 3
    # srd started at block 8; the walk back reached the ancestor (5) through the old branch.
    assert [watcher.tracker.hash_at(n) for n in range(5, 12)] == [
        block.hash for block in chain.blocks[5:12]
    ]
    assert produced == 1
    if head_tracking == "chainhead":
        assert "chain_getBlockHash" not in node.requests  # linked through followed blocks


async def test_a_gap_is_backfilled_without_polluting_block_times(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = FakeChain(name="gap")
    node = FakeSubstrateNode(chain)
    async with subscribed_only(node, session, metrics, "legacy") as watcher:
        await produced_one_by_one(watcher, chain, 2)
        node.faults.skip_heads = 3
        for _ in range(4):
            chain.produce()
        await at_head(watcher, chain)
    assert [watcher.tracker.hash_at(n) for n in range(7)] == [b.hash for b in chain.blocks]
    assert node.requests["chain_getBlockHash"] == 1  # one list call for the whole gap
    assert value(metrics, "vilokanam_blocks_produced_total", chain="gap") == 6
    # Only block 2 came live after a live block 1; the gap adds no block time.
    assert value(metrics, "srd_chain_block_time_seconds_count", chain="gap") == 1


@pytest.mark.parametrize("head_tracking", ["legacy", "chainhead"])
async def test_a_silent_subscription_is_detected_and_recovered_without_a_stall(
    session: aiohttp.ClientSession, metrics: ProbeMetrics, head_tracking: str
) -> None:
    chain = FakeChain(name="silent")
    seen: list[Observation] = []
    labels = {"chain": "silent", "node": "n1", "reason": "silent"}
    async with live(chain, head_tracking, session, metrics, seen) as (node, watcher):
        node.silence_subscriptions()
        await eventually(
            lambda: value(metrics, "srd_chain_subscription_restarts_total", **labels) == 1,
            within=WITHIN,
            what="a restart",
        )
        resubscribed_at = len(seen)
        best = chain.best.number
        await eventually(
            lambda: (watcher.tracker.best or head_of(chain)).number > best + 3,
            within=WITHIN,
            what="3 blocks on",
        )
        await asyncio.sleep(0.2)
    assert node.requests[FOLLOW[head_tracking]] == 2
    assert node.requests[UNFOLLOW[head_tracking]] == 1
    ages = [obs.chain.head_age for obs in seen[resubscribed_at:] if obs.chain is not None]
    assert ages and max(a for a in ages if a is not None) < 0.3  # never looked stalled
    assert value(metrics, "srd_chain_subscription_restarts_total", **labels) == 1


@pytest.mark.parametrize("head_tracking", ["legacy", "chainhead"])
async def test_a_websocket_closed_mid_stream_is_reconnected(
    session: aiohttp.ClientSession, metrics: ProbeMetrics, head_tracking: str
) -> None:
    chain = FakeChain(name="closed")
    node = node_for(head_tracking, chain)
    labels = {"chain": "closed", "node": "n1", "reason": "closed"}
    async with subscribed_only(node, session, metrics, head_tracking) as watcher:
        await node.close_websockets()
        await eventually(
            lambda: node.requests[FOLLOW[head_tracking]] == 2,
            within=WITHIN,
            what="followed again",
        )
        await eventually(lambda: node.websockets == 1, within=WITHIN, what="one websocket")
        chain.produce()
        await at_head(watcher, chain)
    assert value(metrics, "srd_chain_subscription_restarts_total", **labels) == 1


async def test_without_subscriptions_heads_are_polled_over_http(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = FakeChain(name="poll")
    node = FakeSubstrateNode(chain)
    async with (
        node.serve() as url,
        watched(target(url, subscribe=False), session, metrics) as watcher,
    ):
        await produce(chain, 3, every=0.15)
        await at_head(watcher, chain)
    assert node.websockets == 0 and "chain_subscribeNewHeads" not in node.requests


async def test_methods_a_node_lacks_are_not_called(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    node = FakeSubstrateNode(FakeChain(name="lacks"))
    node.missing_methods = {"system_syncState", "chain_subscribeFinalizedHeads"}
    seen: list[Observation] = []
    async with node.serve() as url, watched(target(url), session, metrics, seen):
        await eventually(
            lambda: sum(obs.up for obs in seen) >= 3, within=WITHIN, what="3 up observations"
        )
    assert "system_syncState" not in node.requests
    assert "chain_subscribeFinalizedHeads" not in node.requests
    assert seen[-1].chain is not None and seen[-1].chain.sync_gap is None


async def test_http_429_counts_as_rate_limited_and_the_node_as_down(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    node = FakeSubstrateNode(FakeChain(name="busy"))
    node.faults.too_many_connections = True
    seen: list[Observation] = []
    async with node.serve() as url, watched(target(url), session, metrics, seen):
        await eventually(lambda: len(seen) >= 2, within=WITHIN, what="2 observations")
    assert not seen[-1].up and "429" in seen[-1].reason
    assert value(metrics, "srd_rpc_errors_total", method="rpc_methods", **{"class": "rate_limited"})


async def test_malformed_json_and_errors_without_code_are_classified(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    node = FakeSubstrateNode(FakeChain())
    async with node.serve() as url:
        rpc = RpcClient(url, session, timeout=1.0, metrics=metrics)
        node.faults.malformed_json = True
        with pytest.raises(RpcError) as malformed:
            await rpc.call("system_health")
        node.faults.malformed_json = False
        node.faults.omit_error_codes = True
        with pytest.raises(RpcError) as missing:
            await rpc.call("system_peers")
    assert malformed.value.error_class == "malformed"
    assert missing.value.error_class == "method_not_found"
    assert value(metrics, "srd_rpc_errors_total", method="system_health", **{"class": "malformed"})
    assert value(metrics, "srd_rpc_request_duration_seconds_count", method="system_health") == 1


async def test_slow_answers_time_out_and_are_counted(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    node = FakeSubstrateNode(FakeChain())
    node.faults.latency = 0.5
    async with node.serve() as url:
        rpc = RpcClient(url, session, timeout=0.1, metrics=metrics)
        with pytest.raises(TimeoutError):
            await rpc.call("system_health")
    assert value(metrics, "srd_rpc_errors_total", method="system_health", **{"class": "timeout"})


@pytest.mark.parametrize("pad", [True, False])
async def test_one_shot_probe_reads_padded_and_minimal_numbers(
    session: aiohttp.ClientSession, pad: bool
) -> None:
    chain = FakeChain(name="oneshot", finality_lag=2)
    for _ in range(0x67):
        chain.produce()
    async with FakeSubstrateNode(chain, pad_numbers=pad).serve() as url:
        probe = SubstrateProbe(target(url, timeout=1.0, interval=1.0), session)
        obs = await probe()
    assert obs.up and obs.chain is not None
    assert (obs.chain.best, obs.chain.finalized, obs.chain.finality_lag) == (0x67, 0x65, 2)
    assert probe.methods is not None and "chain_getHeader" in probe.methods


async def test_nodes_of_one_chain_count_blocks_once_and_report_spread(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = FakeChain(name="shared")
    nodes = [FakeSubstrateNode(chain, name=f"v{i}") for i in (1, 2)]
    groups: dict[str, ChainGroup] = {}
    async with nodes[0].serve() as url1, nodes[1].serve() as url2:
        watchers = [
            SubstrateWatcher(target(url, name), session, metrics, groups=groups)
            for url, name in ((url1, "v1"), (url2, "v2"))
        ]
        async with watching(watchers[0]), watching(watchers[1]):
            await eventually(
                lambda: all(subscribed(node)() for node in nodes),
                within=WITHIN,
                what="both subscribed",
            )
            for _ in range(3):
                chain.produce()
            await eventually(
                lambda: all(w.tracker.best == head_of(chain) for w in watchers),
                within=WITHIN,
                what="both at the best block",
            )
            await asyncio.sleep(0.15)
    assert value(metrics, "vilokanam_blocks_produced_total", chain="shared") == 3
    assert value(metrics, "srd_chain_best_block_spread_blocks", chain="shared") == 0
    assert value(metrics, "srd_chain_finalized_hash_disagreement", chain="shared") == 0


# -- chainHead_v1_follow (the new JSON-RPC spec) ----------------------------------------------


@pytest.mark.parametrize("legacy_http", [True, False])
async def test_a_new_spec_only_node_is_followed_with_chainhead(
    session: aiohttp.ClientSession, metrics: ProbeMetrics, legacy_http: bool
) -> None:
    chain = FakeChain(name="v2")
    node = new_spec_node(chain, legacy_http=legacy_http)
    for _ in range(4):
        chain.produce()
    seen: list[Observation] = []
    async with (
        node.serve() as url,
        watched(target(url, interval=0.1), session, metrics, seen) as watcher,
    ):
        await eventually(following(node), within=WITHIN, what="following")
        assert watcher.head_mode() == "chainhead"
        await produced_one_by_one(watcher, chain, 5)
        await finalized_at_head(watcher, chain)
        await eventually(
            lambda: any(o.chain and o.chain.best == 9 for o in seen),
            within=WITHIN,
            what="block 9 observed",
        )
        pinned = node.pinned()
    assert "chain_subscribeNewHeads" not in node.requests
    assert node.requests["chainHead_v1_follow"] == 1
    # One header for the first finalized block; the rest numbered from parent links.
    assert node.requests["chainHead_v1_header"] == 1
    assert pinned <= chain.finality_lag + 1  # finalized blocks were unpinned
    last = [o.chain for o in seen if o.chain is not None][-1]
    assert (last.best, last.finalized) == (9, 7)
    assert last.head_age is not None and last.head_age < 1.0
    assert value(metrics, "vilokanam_blocks_produced_total", chain="v2") >= 5
    assert value(metrics, "srd_chain_block_time_seconds_count", chain="v2") >= 3


async def test_legacy_is_kept_when_both_specs_are_served_unless_configured(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = FakeChain(name="both")
    node = FakeSubstrateNode(chain)
    async with node.serve() as url:
        legacy = SubstrateWatcher(target(url), session, metrics)
        chainhead = SubstrateWatcher(target(url, "n2", head_tracking="chainhead"), session, metrics)
        async with watching(legacy), watching(chainhead):
            await eventually(
                lambda: node.follows == 1 and node.websockets == 2,
                within=WITHIN,
                what="one follow, two websockets",
            )
            chain.produce()
            await eventually(
                lambda: legacy.tracker.best == chainhead.tracker.best is not None,
                within=WITHIN,
                what="both at one best block",
            )
    assert (legacy.head_mode(), chainhead.head_mode()) == ("legacy", "chainhead")
    assert node.requests["chain_subscribeNewHeads"] == 1


async def test_stop_is_followed_again_and_tracking_goes_on(
    session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    chain = FakeChain(name="v2stop")
    node = new_spec_node(chain)
    node.max_pinned = 4
    labels = {"chain": "v2stop", "node": "n1", "reason": "stop"}
    async with (
        node.serve() as url,
        watched(target(url, interval=0.1), session, metrics) as watcher,
    ):
        await eventually(following(node), within=WITHIN, what="following")
        chain.finality_stalled = True  # unfinalized blocks pile up, pinned
        for _ in range(5):
            chain.produce()
        await eventually(
            lambda: value(metrics, "srd_chain_subscription_restarts_total", **labels) >= 1,
            within=WITHIN,
            what="a restart",
        )
        await at_head(watcher, chain)  # polled
        chain.finality_stalled = False
        await produced_one_by_one(watcher, chain, 3)
        await eventually(following(node), within=WITHIN, what="following")
        chain.produce()
        await at_head(watcher, chain)
        await finalized_at_head(watcher, chain)
    assert node.requests["chainHead_v1_follow"] >= 2
    assert watcher.tracker.reorgs == 0
