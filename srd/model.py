"""Plain data passed between stages (probes → evaluation → failover → journal). No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

LabelSet = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name: hashable, comparable."""


def label_set(labels: Mapping[str, str]) -> LabelSet:
    return tuple(sorted(labels.items()))


def unquote(text: str) -> str:
    """A matcher's double-quoted label value as written (``label="a \\"b\\""``), quotes
    removed already: its escaped quotes and backslashes undone."""
    return text.replace('\\"', '"').replace("\\\\", "\\")


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """What one Substrate node says about its chain at one instant."""

    chain: str
    best: int
    finalized: int
    peers: int
    is_syncing: bool
    should_have_peers: bool
    head_age: float | None = None
    """Seconds since the best block number last rose (None: not known yet)."""
    finalized_age: float | None = None
    """Seconds since the finalized block number last rose."""
    sync_gap: int | None = None
    """highestBlock − currentBlock (None when the node does not say)."""
    expected_block_time: float | None = None
    """Seconds per block of the chain: configured or learned (None: not known yet)."""
    head_age_blocks: float | None = None
    """``head_age`` in expected block times (None while either is unknown)."""

    @property
    def finality_lag(self) -> int:
        return max(0, self.best - self.finalized)


@dataclass(frozen=True, slots=True)
class Sample:
    """One series value from a Prometheus text-format page (or a stats endpoint).

    ``labels`` are (name, value) pairs in page order; ``timestamp`` is Unix seconds when the
    page gave one."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: float | None = None

    def label(self, key: str) -> str | None:
        return next((value for name, value in self.labels if name == key), None)


@dataclass(frozen=True, slots=True)
class Observation:
    """One probe of one target.

    ``up`` False is the explicit no-data state: ``reason`` says why (timeout, refused, bad
    status, RPC error …) and the payload fields are None — never a silent zero.
    """

    probe: str
    target: str
    at: float
    duration: float
    up: bool
    reason: str = ""
    chain: ChainSnapshot | None = None
    http_status: int | None = None
    samples: tuple[Sample, ...] | None = None
    """Series kept from an exporter page (only the names asked for)."""


@dataclass(frozen=True, slots=True)
class RecoveryRecord:
    """One recovery from a real incident or a drill: ``detected_at`` → ``recovered_at`` (Unix
    seconds) is the measured RTO of ``scenario``. The failover journal supplies these."""

    scenario: str
    detected_at: float
    recovered_at: float
    kind: Literal["real", "drill"]

    def __post_init__(self) -> None:
        if self.recovered_at < self.detected_at:
            raise ValueError(
                f"recovery of {self.scenario!r} ends ({self.recovered_at}) before it was "
                f"detected ({self.detected_at})"
            )

    @property
    def seconds(self) -> float:
        return self.recovered_at - self.detected_at


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert instance as an evaluation left it; a transition when it changed state.

    ``state`` is ``pending``, ``firing`` or ``resolved`` (kept and reported for 15 m after the
    condition cleared, as Prometheus sends it). ``fingerprint`` identifies the instance (rule
    name and labels) across evaluations and restarts. Times are Unix seconds."""

    name: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    state: str
    active_since: float
    fired_at: float | None
    resolved_at: float | None
    fingerprint: str
