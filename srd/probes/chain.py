"""Chain health signals from headers and health answers. Pure: no I/O, time is a parameter.

A ``ChainTracker`` follows one node's canonical chain (a bounded window of recent headers) and
derives head age, finality lag, reorgs and their depth. A ``ChainGroup`` holds the trackers of
the nodes of one chain and derives what needs them all: blocks produced (once per chain, forks
excluded), block times, best-height spread and finalized-hash disagreement.

Block hashes are computed, as Substrate does (blake2b-256 of the SCALE-encoded header), because
head notifications do not carry the hash and reorg detection needs it.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from srd.model import ChainSnapshot

DEFAULT_WINDOW = 512
"""Canonical headers kept per node: deeper than any reorg a finalizing chain can have
(finality lag alerts fire at 10 blocks) and small enough to stay flat in memory."""


def parse_block_number(value: object) -> int:
    """Block numbers come as hex strings, padded (``0x00000004``) or not (``0x67``), or ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:2].lower() == "0x":
        return int(value, 16)
    raise ValueError(f"not a block number: {value!r}")


def _compact(n: int) -> bytes:
    """SCALE compact encoding of a non-negative integer."""
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def decode_compact(data: bytes, offset: int = 0) -> tuple[int, int]:
    """SCALE compact integer at ``offset``: (value, offset after it). The two low bits of the
    first byte pick the mode: 0b00 one byte, 0b01 two, 0b10 four (value in the upper 6/14/30
    bits), 0b11 big-integer (upper 6 bits + 4 = length of the little-endian value that follows).
    ValueError when ``data`` is too short or the encoding is not canonical."""
    if offset >= len(data):
        raise ValueError("compact integer: no data")
    mode = data[offset] & 0b11
    if mode < 3:
        size = 1 << mode
        if offset + size > len(data):
            raise ValueError("compact integer: truncated")
        value = int.from_bytes(data[offset : offset + size], "little") >> 2
        end = offset + size
    else:
        size = (data[offset] >> 2) + 4
        end = offset + 1 + size
        if end > len(data):
            raise ValueError("compact integer: truncated")
        value = int.from_bytes(data[offset + 1 : end], "little")
    if _compact(value) != data[offset:end]:
        raise ValueError("compact integer: not canonically encoded")
    return value, end


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, str) or value[:2].lower() != "0x":
        raise ValueError(f"{what} is not a hex string: {value!r}")
    return bytes.fromhex(value[2:])


def scale_header(raw: Mapping[str, Any]) -> bytes:
    """The SCALE encoding of a JSON header: parentHash, compact number, stateRoot,
    extrinsicsRoot, digest logs (a compact count, then each log's encoded bytes)."""
    logs = raw["digest"]["logs"]
    return b"".join(
        (
            _bytes(raw["parentHash"], "parentHash"),
            _compact(parse_block_number(raw["number"])),
            _bytes(raw["stateRoot"], "stateRoot"),
            _bytes(raw["extrinsicsRoot"], "extrinsicsRoot"),
            _compact(len(logs)),
            *(_bytes(log, "digest log") for log in logs),
        )
    )


def header_hash(raw: Mapping[str, Any]) -> str:
    """blake2b-256 of the SCALE-encoded header: the block hash on Substrate chains."""
    return "0x" + hashlib.blake2b(scale_header(raw), digest_size=32).hexdigest()


@dataclass(frozen=True, slots=True)
class Header:
    number: int
    hash: str
    parent_hash: str

    @classmethod
    def from_rpc(cls, raw: object, block_hash: str | None = None) -> Header:
        """A header from an RPC answer; its hash is computed unless the caller knows it.
        ValueError for anything that is not a header."""
        if not isinstance(raw, dict):
            raise ValueError(f"not a header: {raw!r:.80}")
        try:
            number = parse_block_number(raw["number"])
            parent = raw["parentHash"]
            computed = block_hash or header_hash(raw)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a header: missing or bad {exc}") from None
        if not isinstance(parent, str):
            raise ValueError(f"parentHash is not a string: {parent!r}")
        return cls(number, computed, parent)

    @classmethod
    def from_scale(cls, encoded: object, block_hash: str) -> Header:
        """A header from its hex SCALE encoding (``chainHead_v1_header``): the parent hash
        (32 bytes) and the compact block number are all srd reads. ValueError otherwise."""
        data = _bytes(encoded, "SCALE header")
        if len(data) < 33:
            raise ValueError(f"SCALE header too short: {len(data)} bytes")
        number, _ = decode_compact(data, 32)
        return cls(number, block_hash, "0x" + data[:32].hex())


@dataclass(frozen=True, slots=True)
class Health:
    peers: int
    is_syncing: bool
    should_have_peers: bool

    @classmethod
    def from_rpc(cls, raw: object) -> Health:
        if not isinstance(raw, dict):
            raise ValueError(f"not a system_health answer: {raw!r:.80}")
        return cls(
            peers=int(raw["peers"]),
            is_syncing=bool(raw["isSyncing"]),
            should_have_peers=bool(raw.get("shouldHavePeers", True)),
        )


@dataclass(frozen=True, slots=True)
class Reorg:
    depth: int
    """Blocks of the previous best chain that are no longer canonical."""
    ancestor: int
    """Number of the common ancestor of the old and new best."""


@dataclass(frozen=True, slots=True)
class Regression:
    """A height that went back without a reorg: the node was reset to a fresh database or an
    old snapshot, or its URL is load-balanced across nodes that are not in step."""

    kind: str
    """``best`` or ``finalized``."""
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class HeadUpdate:
    """What one new best head (with the headers that link it to the known chain) did."""

    added: int
    """Headers that became canonical."""
    reorg: Reorg | None = None
    live: bool = False
    """The head came alone, linked to the known chain, as the node notified it: its arrival
    time is when it came (on its own fork). False for polled and backfilled heads and for the
    first head."""
    regression: Regression | None = None
    head: Header | None = field(default=None, compare=False)
    """The new best head; None when nothing changed."""


NO_CHANGE = HeadUpdate(added=0)


@dataclass(frozen=True, slots=True)
class ChainSignals:
    """One node's chain health at one instant. None means not known yet (no-data)."""

    best: int | None
    finalized: int | None
    head_age: float | None
    """Seconds since the best block number last rose."""
    finalized_age: float | None
    """Seconds since the finalized block number last rose."""
    peers: int | None
    should_have_peers: bool | None
    is_syncing: bool | None
    sync_gap: int | None
    """highestBlock − currentBlock from system_syncState; None when the node lacks it."""
    reorgs: int

    @property
    def finality_lag(self) -> int | None:
        if self.best is None or self.finalized is None:
            return None
        return max(0, self.best - self.finalized)


class ChainTracker:
    """One node's view of its chain, fed with headers and health as they come."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._canonical: dict[int, Header] = {}
        self._numbers: dict[str, int] = {}
        self._finalized_hashes: dict[int, str] = {}
        self.best: Header | None = None
        self.finalized: Header | None = None
        self.health: Health | None = None
        self.sync_gap: int | None = None
        self.reorgs = 0
        self._best_rose_at: float | None = None
        self._finalized_rose_at: float | None = None

    def hash_at(self, number: int) -> str | None:
        header = self._canonical.get(number)
        return header.hash if header else self._finalized_hashes.get(number)

    def knows(self, block_hash: str) -> bool:
        return block_hash in self._numbers

    def missing_parent(self, segment: Sequence[Header]) -> str | None:
        """The hash to fetch (``chain_getHeader``) and put before ``segment`` to link it to
        the known chain, or None when it links already or cannot be linked in the window."""
        oldest = self._unlinked_oldest(segment)
        if oldest is None or segment[0].number <= oldest.number:
            return None
        return segment[0].parent_hash

    def missing_history(self, segment: Sequence[Header]) -> str | None:
        """The hash of the block before the oldest known one, to fetch and ``add_history``
        when ``segment`` reaches below what this tracker knows (a reorg deeper than srd's
        view), so the common ancestor and the depth are found."""
        oldest = self._unlinked_oldest(segment)
        if oldest is None or segment[0].number > oldest.number or oldest.number == 0:
            return None
        if len(self._canonical) >= self.window:
            return None
        return oldest.parent_hash

    def add_history(self, header: Header) -> None:
        oldest = self._canonical[min(self._canonical)] if self._canonical else None
        if oldest is not None and header.hash == oldest.parent_hash:
            self._remember(header)

    def _unlinked_oldest(self, segment: Sequence[Header]) -> Header | None:
        """The oldest known header when ``segment`` does not link yet and may still."""
        if self.best is None or not self._canonical or len(segment) > self.window:
            return None
        if self.knows(segment[0].parent_hash) or self.knows(segment[-1].hash):
            return None
        return self._canonical[min(self._canonical)]

    def add_best(
        self, segment: Sequence[Header], now: float, *, notified: bool = True
    ) -> HeadUpdate:
        """A new best head, preceded by the headers that link it to the known chain
        (oldest first). A segment that does not link is taken as a fresh start (a regression
        when it is lower). ``notified``: the head came as the node announced it, not polled."""
        if not segment:
            return NO_CHANGE
        head = segment[-1]
        if self.best is not None and self.knows(head.hash):
            # A re-sent or stale head (a poll racing a notification): best never moves back
            # along its own branch.
            return NO_CHANGE
        previous = self.best
        ancestor = self._numbers.get(segment[0].parent_hash)
        reorg = regression = None
        if previous is not None and ancestor is None:
            self._forget_after(-1)
            if head.number < previous.number:
                regression = Regression("best", previous.number, head.number)
        elif previous is not None and ancestor is not None and ancestor != previous.number:
            reorg = Reorg(depth=previous.number - ancestor, ancestor=ancestor)
            self.reorgs += 1
            self._forget_after(ancestor)
        for header in segment:
            self._remember(header)
        self.best = head
        if previous is None or head.number > previous.number or regression is not None:
            self._best_rose_at = now
        live = notified and previous is not None and ancestor is not None and len(segment) == 1
        return HeadUpdate(len(segment), reorg, live, regression, head)

    def add_finalized(self, header: Header, now: float) -> Regression | None:
        """The node's finalized head, followed as it says, also when it goes back."""
        previous, regression = self.finalized, None
        if previous is not None and header.number < previous.number:
            regression = Regression("finalized", previous.number, header.number)
            # What was finalized above belongs to the chain the node no longer has.
            for number in [n for n in self._finalized_hashes if n > header.number]:
                del self._finalized_hashes[number]
        if previous is None or header.number != previous.number:
            self._finalized_rose_at = now
        self.finalized = header
        # Kept apart from the best chain, which stays contiguous, so nodes can be compared at
        # a finalized height a tracker's window does not hold.
        self._finalized_hashes[header.number] = header.hash
        if len(self._finalized_hashes) > self.window:
            del self._finalized_hashes[min(self._finalized_hashes)]
        return regression

    def add_health(self, health: Health) -> None:
        self.health = health

    def add_sync_state(self, raw: object) -> None:
        """system_syncState; ``highestBlock`` may be absent (then the gap is unknown)."""
        if not isinstance(raw, dict):
            raise ValueError(f"not a system_syncState answer: {raw!r:.80}")
        current, highest = raw.get("currentBlock"), raw.get("highestBlock")
        if current is None or highest is None:
            self.sync_gap = None
        else:
            self.sync_gap = max(0, parse_block_number(highest) - parse_block_number(current))

    def signals(self, now: float) -> ChainSignals:
        health = self.health
        best = self.best.number if self.best else None
        finalized = self.finalized.number if self.finalized else None
        if best is not None and finalized is not None:
            # Between a reset node's new best and its new finalized head, or across a
            # load-balanced pair: a finalized block above the best one is never real.
            finalized = min(finalized, best)
        return ChainSignals(
            best=best,
            finalized=finalized,
            head_age=_age(self._best_rose_at, now),
            finalized_age=_age(self._finalized_rose_at, now),
            peers=health.peers if health else None,
            should_have_peers=health.should_have_peers if health else None,
            is_syncing=health.is_syncing if health else None,
            sync_gap=self.sync_gap,
            reorgs=self.reorgs,
        )

    def _remember(self, header: Header) -> None:
        old = self._canonical.get(header.number)
        if old is not None:
            self._numbers.pop(old.hash, None)
        self._canonical[header.number] = header
        self._numbers[header.hash] = header.number
        # Insertion order is height order except after a fork; trimming by the lowest number
        # keeps the window exact either way.
        while len(self._canonical) > self.window:
            lowest = min(self._canonical)
            self._numbers.pop(self._canonical.pop(lowest).hash, None)

    def _forget_after(self, number: int) -> None:
        for stale in [n for n in self._canonical if n > number]:
            self._numbers.pop(self._canonical.pop(stale).hash, None)


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else max(0.0, now - since)


@dataclass(frozen=True, slots=True)
class Production:
    blocks: int
    """New heights the chain reached (counted once per chain, forks excluded)."""
    block_time: float | None
    """Seconds since the block's parent arrived, when both came live (same fork)."""


LEARN_BLOCK_TIME = 3600.0
"""Seconds of block times the expected block time is learned from (their median)."""
MIN_LEARNED = 20
"""Block times needed before a learned median is trusted."""
MAX_LEARNED = 3600
"""Block times kept to learn from: an hour of 1 s blocks."""


class ChainGroup:
    """The nodes of one chain. ``expected_block_time``: configured seconds per block, else
    learned as the median of the last hour's block times."""

    def __init__(
        self, window: int = DEFAULT_WINDOW, expected_block_time: float | None = None
    ) -> None:
        self.window = window
        self.expected_block_time = expected_block_time
        self.trackers: dict[str, ChainTracker] = {}
        self._height: int | None = None
        self._arrivals: dict[str, float] = {}
        """Block hash → when a node was first notified of it; the newest ``window`` blocks."""
        self._block_times: deque[tuple[float, float]] = deque(maxlen=MAX_LEARNED)

    def tracker(self, node: str) -> ChainTracker:
        if node not in self.trackers:
            self.trackers[node] = ChainTracker(self.window)
        return self.trackers[node]

    def produced(self, update: HeadUpdate, best: int, now: float) -> Production:
        """Account a node's head update: new heights count once, whichever node saw them
        first; the first height seen counts nothing (srd did not see it produced). A block
        time is measured from the arrival of the block's own parent, so a fork at the same
        height restarts the clock; a polled or backfilled end says when srd looked, not when
        the block came, and gives none."""
        head, parent_at = update.head, None
        if update.live and head is not None and head.hash not in self._arrivals:
            parent_at = self._arrivals.get(head.parent_hash)
            self._arrivals[head.hash] = now
            if len(self._arrivals) > self.window:
                del self._arrivals[next(iter(self._arrivals))]
        previous = self._height
        # A node that went back (update.regression) counts nothing until it passes the
        # highest height the chain reached: the chain did not produce those blocks again.
        if previous is not None and best <= previous:
            return Production(0, None)
        self._height = best
        if previous is None:
            return Production(0, None)
        block_time = None if parent_at is None else now - parent_at
        if block_time is not None:
            self._block_times.append((now, block_time))
        return Production(best - previous, block_time)

    def expected(self, now: float) -> float | None:
        """Seconds per block: configured, else the median block time of the last hour (None
        until enough were seen; a polled chain has none)."""
        if self.expected_block_time is not None:
            return self.expected_block_time
        while self._block_times and self._block_times[0][0] < now - LEARN_BLOCK_TIME:
            self._block_times.popleft()
        if len(self._block_times) < MIN_LEARNED:
            return None
        return statistics.median(seconds for _, seconds in self._block_times)

    def snapshot(self, chain: str, node: str, now: float) -> ChainSnapshot | None:
        """What ``node`` says about the chain at ``now``, with its head age in expected block
        times; None until it has a best and a finalized head and a health answer."""
        signals = self.tracker(node).signals(now)
        if signals.best is None or signals.finalized is None or signals.peers is None:
            return None
        expected = self.expected(now)
        age = signals.head_age
        return ChainSnapshot(
            chain=chain,
            best=signals.best,
            finalized=signals.finalized,
            peers=signals.peers,
            is_syncing=bool(signals.is_syncing),
            should_have_peers=bool(signals.should_have_peers),
            head_age=age,
            finalized_age=signals.finalized_age,
            sync_gap=signals.sync_gap,
            expected_block_time=expected,
            head_age_blocks=None if expected is None or age is None else age / expected,
        )

    def best_spread(self) -> int | None:
        bests = [t.best.number for t in self.trackers.values() if t.best is not None]
        return max(bests) - min(bests) if bests else None

    def finalized_disagreement(self) -> bool:
        """True when two nodes finalized different blocks at the same height."""
        finalized = [t for t in self.trackers.values() if t.finalized is not None]
        if len(finalized) < 2:
            return False
        height = min(t.finalized.number for t in finalized if t.finalized is not None)
        hashes = {t.hash_at(height) for t in finalized} - {None}
        return len(hashes) > 1
