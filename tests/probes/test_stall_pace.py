"""Stall detection at the chain's own pace: a head that has not moved for ``stall_blocks``
expected block times is stalled, with the fixed ``max_age`` as the upper bound. Driven on a
virtual clock: the sandbox's fake chain produces blocks with ±30 % jitter at virtual times, the
probe path (tracker → snapshot → metrics) runs every probe interval and the chain rules every
evaluation interval, exactly as the daemon schedules them."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

import pytest

from srd.evaluation.chainrules import ChainHealth
from srd.evaluation.engine import Engine
from srd.model import Observation
from srd.probes.chain import ChainGroup, Header, Health
from srd.runtime import DaemonMetrics
from srd.simulate.sandbox.substrate import FakeChain

BLOCK_TIME = 6.0
PROBE_INTERVAL = 5.0
START = 1_800_000_000.0


@dataclass
class Run:
    fired: list[tuple[str, float]]
    """(alertname, virtual seconds) of every alert that started firing."""
    last_block_at: float


def follow(
    blocks: int,
    *,
    jitter: float,
    evaluation_interval: float,
    configured: float | None,
    stall_for: float = 0.0,
    reset_after: int | None = None,
    seed: int = 13,
) -> Run:
    """Produce ``blocks`` blocks, then nothing for ``stall_for`` seconds; follow and judge.
    ``reset_after``: the node comes back with a fresh database after that many blocks."""
    rng = random.Random(seed)  # noqa: S311 - jitter, not a secret
    chain = FakeChain(name="paced", finality_lag=2)
    group = ChainGroup(expected_block_time=configured)
    tracker = group.tracker("n1")
    tracker.add_health(Health(peers=8, is_syncing=False, should_have_peers=True))
    metrics = DaemonMetrics()
    engine = Engine(
        [], metrics.evaluation, samples=metrics.samples, extra_groups=[ChainHealth().group()]
    )
    events: list[tuple[float, int, str]] = []
    at = 0.0
    for _ in range(blocks):
        at += BLOCK_TIME * rng.uniform(1 - jitter, 1 + jitter)
        events.append((at, 0, "block"))
    end = at + stall_for
    events += [(k * PROBE_INTERVAL, 1, "probe") for k in range(int(end / PROBE_INTERVAL) + 1)]
    ticks = int(end / evaluation_interval) + 1
    events += [(k * evaluation_interval, 2, "evaluate") for k in range(ticks)]
    heapq.heapify(events)
    fired: list[tuple[str, float]] = []
    produced = 0
    while events:
        now, _, kind = heapq.heappop(events)
        if kind == "block":
            produced += 1
            if produced == reset_after:
                chain.reset()
            block = chain.produce()
            update = tracker.add_best([Header(block.number, block.hash, block.parent_hash)], now)
            group.produced(update, block.number, now)
            final = chain.finalized
            tracker.add_finalized(Header(final.number, final.hash, final.parent_hash), now)
        elif kind == "probe":
            snapshot = group.snapshot(chain.name, "n1", now)
            if snapshot is not None:
                metrics.probes.record(
                    Observation("substrate", "n1", START + now, 0.0, True, chain=snapshot)
                )
        else:
            for alert in engine.evaluate(START + now):
                if alert.state == "firing":
                    fired.append((alert.name, now))
    return Run(fired, at)


@pytest.mark.parametrize("configured", [None, BLOCK_TIME], ids=["learned", "configured"])
def test_1000_healthy_blocks_with_30_percent_jitter_raise_no_alert(
    configured: float | None,
) -> None:
    run = follow(1000, jitter=0.3, evaluation_interval=30.0, configured=configured)
    assert run.fired == []


@pytest.mark.parametrize("evaluation_interval", [30.0, 5.0])
@pytest.mark.parametrize("configured", [None, BLOCK_TIME], ids=["learned", "configured"])
def test_a_stall_of_a_6s_chain_fires_within_3_blocks_and_one_interval(
    configured: float | None, evaluation_interval: float
) -> None:
    run = follow(
        200,
        jitter=0.3,
        evaluation_interval=evaluation_interval,
        configured=configured,
        stall_for=200.0,
    )
    [(name, at)] = run.fired
    latency = at - run.last_block_at
    assert name == "ChainHeadStalled"
    # The probe exports head age every probe interval; the rule reads it every evaluation.
    assert 3 * BLOCK_TIME < latency <= 3 * BLOCK_TIME * 1.1 + PROBE_INTERVAL + evaluation_interval


def test_a_node_reset_to_a_fresh_database_raises_no_chain_alert() -> None:
    # Finalized was at 398 when the node came back at block 1: srd follows it down.
    run = follow(800, jitter=0.3, evaluation_interval=30.0, configured=None, reset_after=400)
    assert run.fired == []


def test_without_a_known_pace_the_fixed_threshold_still_fires() -> None:
    # Too few blocks to learn from, nothing configured: 120 s is the bound.
    run = follow(5, jitter=0.0, evaluation_interval=30.0, configured=None, stall_for=300.0)
    [at] = [at for name, at in run.fired if name == "ChainHeadStalled"]
    assert 120.0 < at - run.last_block_at <= 120.0 + PROBE_INTERVAL + 30.0
