"""What the tests of the Substrate probe and watcher share: a running watcher, its observations,
its metrics' values, and the fake chain's head as the watcher tracks it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from srd.config.probes import SubstrateTarget
from srd.model import Observation
from srd.probes.chain import Header
from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate_watcher import SubstrateWatcher
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode
from tests.support.eventually import eventually


def value(metrics: ProbeMetrics, name: str, **labels: str) -> float:
    """A sample of the probe metrics; 0 where it was never recorded."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def watching(watcher: SubstrateWatcher) -> AsyncIterator[SubstrateWatcher]:
    """``watcher`` running for the block, stopped and awaited after it."""
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop), name="test-watcher")
    try:
        yield watcher
    finally:
        stop.set()
        await task


def recording(metrics: ProbeMetrics, seen: list[Observation]) -> Callable[[Observation], None]:
    """An ``on_observation`` that records into ``metrics``, as the runner does, and keeps each
    observation in ``seen`` for the test to read."""

    def record(obs: Observation) -> None:
        seen.append(obs)
        metrics.record(obs)

    return record


def head_of(chain: FakeChain) -> Header:
    """The fake chain's best block as a watcher's tracker holds it."""
    return Header(chain.best.number, chain.best.hash, chain.best.parent_hash)


async def produce(chain: FakeChain, blocks: int, *, every: float = 0.05) -> None:
    """``blocks`` new blocks on ``chain``, ``every`` seconds apart, as a live node makes them."""
    for _ in range(blocks):
        chain.produce()
        await asyncio.sleep(every)


def grown(blocks: int, name: str, *, finality_lag: int = 2) -> FakeChain:
    """A fake chain ``name`` that has produced ``blocks`` blocks past genesis."""
    chain = FakeChain(name=name, finality_lag=finality_lag)
    for _ in range(blocks):
        chain.produce()
    return chain


@asynccontextmanager
async def watched(
    target: SubstrateTarget,
    session: aiohttp.ClientSession,
    metrics: ProbeMetrics,
    seen: list[Observation] | None = None,
) -> AsyncIterator[SubstrateWatcher]:
    """A watcher of ``target`` running for the block; given ``seen``, its observations are
    recorded as the runner does and kept there."""
    on_observation = None if seen is None else recording(metrics, seen)
    watcher = SubstrateWatcher(target, session, metrics, on_observation=on_observation)
    async with watching(watcher):
        yield watcher


def target(url: str, name: str = "n1", **overrides: Any) -> SubstrateTarget:
    """A node target with the tests' short intervals, timeouts and backoff."""
    settings = {"interval": 0.2, "timeout": 0.2, "silence_timeout": 5.0}
    settings |= {"reconnect_backoff": 0.05, **overrides}
    return SubstrateTarget(name=name, url=url, **settings)


async def at_head(watcher: SubstrateWatcher, chain: FakeChain, within: float = 5.0) -> None:
    """Wait until ``watcher`` has followed ``chain`` to its head."""
    await eventually(
        lambda: watcher.tracker.best == head_of(chain),
        within=within,
        what=f"{watcher.target.name} at block {chain.best.number}",
    )


async def three_blocks_followed(
    node: FakeSubstrateNode, chain: FakeChain, watcher: SubstrateWatcher
) -> None:
    """Once ``watcher`` has subscribed to ``node``'s new heads, ``chain`` grows by three
    blocks and the watcher follows it to the head."""
    await eventually(
        lambda: node.requests.get("chain_subscribeNewHeads", 0) >= 1,
        within=5.0,
        what=f"{watcher.target.name} subscribed to new heads",
    )
    await produce(chain, 3)
    await at_head(watcher, chain)
