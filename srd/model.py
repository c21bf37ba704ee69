"""Plain data passed between stages (probes → evaluation → failover → journal). No I/O here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """What one Substrate node says about its chain at one instant."""

    chain: str
    best: int
    finalized: int
    peers: int
    is_syncing: bool
    should_have_peers: bool


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
