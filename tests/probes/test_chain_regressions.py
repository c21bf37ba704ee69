"""The chain signals follow what the node says: heights that go back are regressions, a block
is timed from its own parent's arrival, polled heads give no block time, and the expected block
time is configured or learned. Pure: time is a parameter."""

from __future__ import annotations

import pytest

from srd.probes.chain import ChainGroup, ChainTracker, Health, Regression
from tests.probes.test_chain_signals import ZERO, branch, fed


def healthy(tracker: ChainTracker) -> ChainTracker:
    tracker.add_health(Health(peers=5, is_syncing=False, should_have_peers=True))
    return tracker


def test_a_finalized_height_that_goes_back_is_followed_and_reported() -> None:
    tracker = ChainTracker()
    main = branch(1, 120, ZERO)
    fed(tracker, main)
    assert tracker.add_finalized(main[111], now=700.0) is None  # block 112
    fresh = branch(1, 95, ZERO, fork="reset")
    assert tracker.add_best([fresh[-1]], now=800.0).regression == Regression("best", 120, 95)
    regression = tracker.add_finalized(fresh[90], now=801.0)  # block 91
    assert regression == Regression("finalized", 112, 91)
    signals = tracker.signals(now=802.0)
    assert (signals.best, signals.finalized) == (95, 91)
    assert signals.head_age == pytest.approx(2.0)  # the head changed: not a stall
    assert tracker.hash_at(112) is None  # the old chain's finalized blocks are forgotten


def test_finalized_is_never_above_best() -> None:
    tracker = ChainTracker()
    main = branch(1, 120, ZERO)
    fed(tracker, main)
    tracker.add_finalized(main[111], now=700.0)
    tracker.add_best([branch(1, 5, ZERO, fork="reset")[-1]], now=800.0)
    signals = tracker.signals(now=800.0)
    assert (signals.best, signals.finalized, signals.finality_lag) == (5, 5, 0)


def test_a_block_after_a_fork_at_the_same_height_is_timed_from_its_own_parent() -> None:
    group = ChainGroup()
    tracker = group.tracker("a")
    main = branch(1, 10, ZERO)
    for i, header in enumerate(main):
        group.produced(tracker.add_best([header], i * 6.0), header.number, i * 6.0)
    sibling = branch(10, 11, main[8].hash, fork="b")  # 10b at the same height, then 11b
    at_same_height = group.produced(tracker.add_best([sibling[0]], 77.0), 10, 77.0)
    child = group.produced(tracker.add_best([sibling[1]], 78.1), 11, 78.1)
    assert at_same_height.blocks == 0
    assert child.blocks == 1 and child.block_time == pytest.approx(1.1)


def test_polled_heads_count_blocks_but_give_no_block_time() -> None:
    group = ChainGroup()
    tracker = group.tracker("a")
    seen = [
        group.produced(tracker.add_best([h], i * 6.0, notified=False), h.number, i * 6.0)
        for i, h in enumerate(branch(1, 10, ZERO))
    ]
    assert sum(p.blocks for p in seen) == 9
    assert all(p.block_time is None for p in seen)


def test_the_expected_block_time_is_configured_or_the_median_of_the_last_hour() -> None:
    configured = ChainGroup(expected_block_time=6.0)
    assert configured.expected(now=0.0) == 6.0
    group = ChainGroup()
    tracker = healthy(group.tracker("a"))
    gaps = [6.0, 6.0, 5.0, 12.0] * 10  # one slow block in four: the median ignores it
    at = 0.0
    headers = branch(1, 41, ZERO)
    for header, gap in zip(headers, [0.0, *gaps], strict=True):
        at += gap
        group.produced(tracker.add_best([header], at), header.number, at)
        if header.number == 20:
            assert group.expected(at) is None  # too few block times yet
    assert group.expected(at) == 6.0
    tracker.add_finalized(headers[-3], at)
    snapshot = group.snapshot("c", "a", at + 18.0)
    assert snapshot is not None and snapshot.head_age_blocks == pytest.approx(3.0)
    assert group.expected(at + 7200.0) is None  # an hour later they are too old
