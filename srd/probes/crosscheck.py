"""Cross-check of a node's own metrics page (:9615) against what its JSON-RPC says.

Pure: the caller keeps the returned state and passes it back with the next pair of views.
Two different faults are told apart: the page *disagrees* with RPC (a wrong target, a
different node behind a proxy, a broken exporter), or the page is *stale* (its height stopped
while RPC kept advancing; the node refreshes the page every 5 s, REFERENCE.md §2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from srd.model import Sample

BLOCK_HEIGHT = "substrate_block_height"

DEFAULT_TOLERANCE_BLOCKS = 2
"""Allowed |RPC − page| per status: the page refreshes every 5 s and blocks come every 6 s,
so one block apart is normal, and the two reads are not at the same instant."""
DEFAULT_STALE_AFTER_BLOCKS = 3
"""The page is stale once RPC best advanced this many blocks while the page's best did not:
more than two refresh periods of normal production."""


@dataclass(frozen=True, slots=True)
class Heights:
    best: int
    finalized: int


@dataclass(frozen=True, slots=True)
class CrossCheckState:
    """Carried from one check to the next."""

    page_best: int
    """The page's best height at the last check."""
    rpc_best_when_page_moved: int
    """RPC's best height when the page's best last changed (or was first seen)."""


@dataclass(frozen=True, slots=True)
class CrossCheck:
    best_diff: int
    """RPC best − page best."""
    finalized_diff: int
    """RPC finalized − page finalized."""
    disagreement: bool
    stale: bool
    reason: str
    """Empty when the two views agree and the page moves; otherwise what is wrong."""
    state: CrossCheckState


def page_heights(samples: Iterable[Sample], chain: str | None = None) -> Heights | None:
    """best and finalized from ``substrate_block_height{status=…}`` samples (of ``chain``
    when given); None when either is missing: no-data, never zero."""
    found: dict[str, int] = {}
    for sample in samples:
        if sample.name != BLOCK_HEIGHT or (chain is not None and sample.label("chain") != chain):
            continue
        status = sample.label("status")
        if status in ("best", "finalized") and sample.value == sample.value:  # not NaN
            found[status] = int(sample.value)
    if "best" not in found or "finalized" not in found:
        return None
    return Heights(found["best"], found["finalized"])


def cross_check(
    rpc: Heights,
    page: Heights,
    previous: CrossCheckState | None,
    *,
    tolerance: int = DEFAULT_TOLERANCE_BLOCKS,
    stale_after: int = DEFAULT_STALE_AFTER_BLOCKS,
) -> CrossCheck:
    """Compare one RPC view with one page view taken at about the same time."""
    if previous is None or page.best != previous.page_best:
        state = CrossCheckState(page.best, rpc.best)
    else:
        state = previous
    best_diff = rpc.best - page.best
    finalized_diff = rpc.finalized - page.finalized
    reasons = []
    disagreement = abs(best_diff) > tolerance or abs(finalized_diff) > tolerance
    if disagreement:
        reasons.append(
            f"metrics page disagrees with RPC: best {page.best} vs {rpc.best}, "
            f"finalized {page.finalized} vs {rpc.finalized} (tolerance {tolerance})"
        )
    advanced = rpc.best - state.rpc_best_when_page_moved
    stale = advanced >= stale_after
    if stale:
        reasons.append(
            f"metrics page is stale: best stuck at {page.best} while RPC advanced {advanced} blocks"
        )
    return CrossCheck(best_diff, finalized_diff, disagreement, stale, "; ".join(reasons), state)
