"""Chain health signals from headers, with fake time (srd.probes.chain is pure)."""

from __future__ import annotations

import pytest

from srd.probes.chain import (
    ChainGroup,
    ChainTracker,
    Header,
    HeadUpdate,
    Health,
    header_hash,
    parse_block_number,
)

ZERO = "0x" + "00" * 32


def branch(first: int, last: int, parent: str, fork: str = "a") -> list[Header]:
    """Headers first..last on one branch; hashes name their fork and number."""
    headers = []
    for number in range(first, last + 1):
        header = Header(number, f"0x{fork}{number:04d}", parent)
        headers.append(header)
        parent = header.hash
    return headers


def fed(
    tracker: ChainTracker, headers: list[Header], start: float = 0.0, step: float = 6.0
) -> None:
    """Each header as a live head, ``step`` seconds apart."""
    for i, header in enumerate(headers):
        tracker.add_best([header], start + i * step)


def test_block_hash_is_blake2b_of_the_scale_header_as_on_polkadot() -> None:
    genesis = {
        "parentHash": ZERO,
        "number": "0x0",
        "stateRoot": "0x29d0d972cd27cbc511e9589fcb7a4506d5eb6a9e8df205f00472e5ab354a4e17",
        "extrinsicsRoot": "0x03170a2e7597b7b7e3d84c05391d139a62b157e78786d8c082f29dcf4c111314",
        "digest": {"logs": []},
    }
    assert header_hash(genesis) == (
        "0x91b171bb158e2d3848fa23a9f1c25182fb8e20313b2c1eb49219da7a70ce90c3"
    )


def test_block_hash_covers_digest_logs_and_compact_numbers() -> None:
    # Polkadot block 29798941 (public RPC answer), three BABE/BEEFY digest items.
    header = {
        "parentHash": "0x79c7d10ea92a424b84eaf6832d24be8ad38edca873178df8d6a2b2e3fcdd0aca",
        "number": "0x1c6b21d",
        "stateRoot": "0x68b4ff8641f943cd3c8632d91dafdeb8115b20046ef709bbc63d85e80c9fb213",
        "extrinsicsRoot": "0x3cb6c9334c203622604044dc2b155017853cfdaddd47f9310cab7e215878e251",
        "digest": {
            "logs": [
                "0x0642414245b501030801000062b49511000000001c776d503c6ce4fb778bf254bcbd3303983c"
                "8f8c4064b25835e632e327d2f57ac5c357846630e5a8f59f54610ba9e7bc7fca66f61dc9555ce3"
                "8acc3ac9074c0597df44a2b3e06420b9d4392395f00a909135e16d41ec48761555ef27206fb603",
                "0x04424545468403d951e74bb9e6060d8983a20e36fb21e98b81a667ea6f679415af26f2ae789fa6",
                "0x0542414245010116e669292188cdd97f665e5e51cd208fed42e79e26688e07dba017971b33b47"
                "6605322ee32c03141371ecd47b3ad9aa3f294e5c211ee30155c8fc69b0113a683",
            ]
        },
    }
    assert Header.from_rpc(header).hash == (
        "0xb54e12ebd0843d187f19d39fb8e9472a217cfa38ad063210e912f1ec98b070f9"
    )


@pytest.mark.parametrize(("value", "number"), [("0x00000004", 4), ("0x67", 103), (7, 7)])
def test_padded_and_minimal_hex_block_numbers_both_parse(value: object, number: int) -> None:
    assert parse_block_number(value) == number


@pytest.mark.parametrize("value", ["67", None, True, {"n": 1}])
def test_anything_else_is_not_a_block_number(value: object) -> None:
    with pytest.raises(ValueError, match="not a block number"):
        parse_block_number(value)


def test_a_header_without_number_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="not a header"):
        Header.from_rpc({"parentHash": ZERO})


def test_head_age_rises_while_production_stalls_and_resets_on_the_next_block() -> None:
    tracker = ChainTracker()
    fed(tracker, branch(1, 3, ZERO))  # last block at t=12
    assert tracker.signals(now=13.0).head_age == pytest.approx(1.0)
    assert tracker.signals(now=140.0).head_age == pytest.approx(128.0)
    tracker.add_best(branch(4, 4, tracker.best.hash if tracker.best else ZERO), now=141.0)
    assert tracker.signals(now=142.0).head_age == pytest.approx(1.0)


def test_finality_lag_and_finalized_age_follow_the_finalized_head() -> None:
    tracker = ChainTracker()
    headers = branch(1, 10, ZERO)
    fed(tracker, headers)
    tracker.add_finalized(headers[7], now=50.0)  # block 8
    signals = tracker.signals(now=80.0)
    assert (signals.best, signals.finalized, signals.finality_lag) == (10, 8, 2)
    assert signals.finalized_age == pytest.approx(30.0)
    tracker.add_finalized(headers[7], now=90.0)  # the same block again: no progress
    assert tracker.signals(now=100.0).finalized_age == pytest.approx(50.0)


def test_a_depth_3_reorg_counts_one_reorg_of_depth_3() -> None:
    tracker = ChainTracker()
    main = branch(1, 10, ZERO)
    fed(tracker, main)
    fork = branch(8, 11, main[6].hash, fork="b")  # from block 7: 8, 9, 10 are retracted
    segment = [fork[-1]]
    while (missing := tracker.missing_parent(segment)) is not None:
        segment.insert(0, next(h for h in fork if h.hash == missing))
    update = tracker.add_best(segment, now=100.0)
    assert update.reorg is not None
    assert (update.reorg.depth, update.reorg.ancestor) == (3, 7)
    assert tracker.reorgs == 1
    assert not update.live
    assert [tracker.hash_at(n) for n in (7, 8, 11)] == [main[6].hash, fork[0].hash, fork[3].hash]


def test_a_sibling_at_the_same_height_is_a_reorg_of_depth_1() -> None:
    tracker = ChainTracker()
    main = branch(1, 5, ZERO)
    fed(tracker, main)
    update = tracker.add_best(branch(5, 5, main[3].hash, fork="b"), now=40.0)
    assert update.reorg is not None and update.reorg.depth == 1


def test_a_resent_or_stale_head_changes_nothing() -> None:
    tracker = ChainTracker()
    main = branch(1, 5, ZERO)
    fed(tracker, main)
    assert tracker.add_best([main[4]], now=99.0) == HeadUpdate(added=0)
    assert tracker.add_best([main[2]], now=99.0) == HeadUpdate(added=0)
    assert tracker.best == main[4]
    assert tracker.signals(now=30.0).head_age == pytest.approx(6.0)


def test_a_backfilled_gap_leaves_no_missing_heights_and_is_not_a_live_block() -> None:
    tracker = ChainTracker()
    main = branch(1, 8, ZERO)
    fed(tracker, main[:4])
    update = tracker.add_best(main[4:], now=60.0)
    assert update == HeadUpdate(added=4, reorg=None, live=False)
    assert [tracker.hash_at(n) for n in range(1, 9)] == [h.hash for h in main]


def test_a_head_that_cannot_be_linked_within_the_window_starts_afresh() -> None:
    tracker = ChainTracker(window=8)
    fed(tracker, branch(1, 8, ZERO))
    far = branch(100, 100, "0xunknown")
    assert tracker.missing_parent(far) == "0xunknown"
    assert tracker.missing_parent(branch(1, 1, "0xunknown", fork="c")) is None
    update = tracker.add_best(far, now=99.0)
    assert update.reorg is None and tracker.best == far[0]
    assert tracker.hash_at(8) is None


def test_the_window_bounds_what_a_tracker_keeps() -> None:
    tracker = ChainTracker(window=16)
    fed(tracker, branch(1, 100, ZERO))
    assert tracker.hash_at(84) is None
    assert tracker.hash_at(85) is not None


def test_health_and_sync_state_become_signals_and_absent_highest_block_is_unknown() -> None:
    tracker = ChainTracker()
    tracker.add_health(Health.from_rpc({"peers": 0, "isSyncing": True, "shouldHavePeers": True}))
    tracker.add_sync_state({"startingBlock": 12, "currentBlock": 50, "highestBlock": 128})
    signals = tracker.signals(now=0.0)
    assert (signals.peers, signals.is_syncing, signals.should_have_peers) == (0, True, True)
    assert signals.sync_gap == 78
    tracker.add_sync_state({"startingBlock": 12, "currentBlock": 50})
    assert tracker.signals(now=0.0).sync_gap is None
    assert signals.best is None and signals.head_age is None  # no-data, never zero


def test_blocks_produced_count_once_per_chain_and_block_times_exclude_gaps_and_forks() -> None:
    group = ChainGroup()
    a, b = group.tracker("a"), group.tracker("b")
    main = branch(1, 10, ZERO)
    seen = []
    for i, header in enumerate(main[:5]):
        for tracker, delay in ((a, 0.0), (b, 0.5)):  # b sees every block half a second later
            now = i * 6.0 + delay
            update = tracker.add_best([header], now)
            seen.append(group.produced(update, header.number, now))
    assert sum(p.blocks for p in seen) == 4  # block 1 was the start, not seen produced
    # Block 2 follows a start, whose arrival time srd did not see.
    assert [p.block_time for p in seen if p.block_time is not None] == [6.0, 6.0, 6.0]
    gap = group.produced(a.add_best(main[5:8], 40.0), 8, 40.0)
    assert (gap.blocks, gap.block_time) == (3, None)
    fork = branch(8, 9, main[6].hash, fork="b")
    reorged = group.produced(a.add_best(fork, 46.0), 9, 46.0)
    assert (reorged.blocks, reorged.block_time) == (1, None)


def test_best_spread_and_finalized_disagreement_across_nodes() -> None:
    group = ChainGroup()
    main = branch(1, 10, ZERO)
    fed(group.tracker("a"), main)
    fed(group.tracker("b"), main[:7])
    assert group.best_spread() == 3
    assert not group.finalized_disagreement()
    group.tracker("a").add_finalized(main[5], 60.0)
    group.tracker("b").add_finalized(main[4], 60.0)
    assert not group.finalized_disagreement()
    c = group.tracker("c")
    other = branch(1, 6, ZERO, fork="x")
    fed(c, other)
    c.add_finalized(other[4], 60.0)
    assert group.finalized_disagreement()
