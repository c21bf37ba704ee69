"""Follow one Substrate node for as long as srd runs, and export its chain health.

Heads come from ``chain_subscribeNewHeads`` / ``chain_subscribeFinalizedHeads`` over a WebSocket
on the node's URL. What real nodes do to a subscription is survived here: a subscription that
goes silent while the socket stays open is noticed after ``silence_timeout`` and told apart from
a stalled chain by one HTTP poll (the chain advanced: resubscribe; it did not: the chain stalled,
head age says so); a closed socket is reopened with jittered exponential backoff while heads are
polled over HTTP; gaps are backfilled with ``chain_getBlockHash(n)`` + ``chain_getHeader``;
reorgs are walked back through parent hashes to the common ancestor.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from srd.config import SubstrateTarget
from srd.metrics import Metrics
from srd.model import ChainSnapshot, Observation
from srd.probes.chain import (
    ChainGroup,
    Header,
    HeadUpdate,
    Health,
    header_hash,
)
from srd.probes.substrate import (
    ConnectionClosed,
    RpcClient,
    RpcError,
    WsRpc,
    connect_ws,
    learn_methods,
)
from srd.supervisor import Backoff

log = structlog.get_logger("srd.probes.substrate")

RECONNECT_BACKOFF_MAX = 60.0
BACKFILL_CONCURRENCY = 16
"""Headers fetched at once while backfilling a gap, so a long gap does not flood the node."""
_FAILURES = (RpcError, ConnectionClosed, TimeoutError, ValueError, KeyError, TypeError)
"""What a node can do to one exchange; anything else is a bug and crashes the task."""


class SubstrateWatcher:
    """One node, followed by one long-running task: ``await watcher.run(stop)``.

    Nodes of one chain share ``groups`` (chain name → ChainGroup) so blocks produced, block
    times, best-height spread and finalized-hash disagreement are derived across them. Every
    interval an Observation goes to ``on_observation`` (default: ``metrics.record``)."""

    def __init__(
        self,
        target: SubstrateTarget,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        groups: dict[str, ChainGroup] | None = None,
        on_observation: Callable[[Observation], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.url = str(target.url)
        self.metrics = metrics
        self.rpc = RpcClient(self.url, session, timeout=target.timeout, metrics=metrics)
        self._session = session
        self._groups = groups if groups is not None else {}
        self._emit = on_observation or metrics.record
        self._clock = clock
        self._backoff = Backoff(target.reconnect_backoff, RECONNECT_BACKOFF_MAX)
        self.methods: frozenset[str] = frozenset()
        self.chain = ""
        self.group = ChainGroup()
        self.tracker = self.group.tracker(target.name)
        self._local_hashes = True
        self._healthy_run = False
        """The last subscription delivered heads: the next reconnect starts from the first delay."""

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the node until ``stop`` is set."""
        async with asyncio.TaskGroup() as tasks:
            loop = tasks.create_task(self._follow(), name=f"substrate:{self.target.name}")
            await stop.wait()
            loop.cancel()

    async def _follow(self) -> None:
        await self._learn()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._health_loop(), name=f"substrate-health:{self.target.name}")
            tasks.create_task(self._heads_loop(), name=f"substrate-heads:{self.target.name}")

    async def _learn(self) -> None:
        """Chain name, supported methods and the first heads; retried every interval."""
        while True:
            started = self._clock()
            try:
                self.methods = await learn_methods(self.rpc)
                self.chain = str(await self.rpc.call("system_chain"))
                self.group = self._groups.setdefault(self.chain, self.group)
                self.tracker = self.group.tracker(self.target.name)
                await self._check_hashing()
                await self._poll_heads()
                return
            except _FAILURES as exc:
                self._down(started, exc)
            await asyncio.sleep(self.target.interval)

    async def _check_hashing(self) -> None:
        """Block hashes are computed locally (blake2b-256 of the SCALE header); a chain that
        hashes otherwise gets them from the node instead, one call per head."""
        finalized_hash = await self.rpc.call("chain_getFinalizedHead")
        raw = await self.rpc.call("chain_getHeader", [finalized_hash])
        self._local_hashes = header_hash(raw) == finalized_hash
        if not self._local_hashes:
            log.warning("node hashes headers differently; asking it for hashes", node=self.url)

    def _supports(self, method: str) -> bool:
        # A node that does not list its methods gets the basics tried.
        return not self.methods or method in self.methods

    # -- health -------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            started = self._clock()
            try:
                async with asyncio.timeout(self.target.timeout):
                    await self._poll_health()
            except _FAILURES as exc:
                self._down(started, exc)
            else:
                self._up(started)
            await asyncio.sleep(self.target.interval)

    async def _poll_health(self) -> None:
        self.tracker.add_health(Health.from_rpc(await self.rpc.call("system_health")))
        if self._supports("system_syncState"):
            try:
                self.tracker.add_sync_state(await self.rpc.call("system_syncState"))
            except RpcError as exc:
                if exc.error_class != "method_not_found":
                    raise
                # Seen: some servers list nothing and lack it; stop asking.
                self.methods = (self.methods or frozenset({"system_health"})) - {"system_syncState"}

    def _up(self, started: float) -> None:
        signals = self.tracker.signals(self._clock())
        if signals.best is None or signals.finalized is None or signals.peers is None:
            self._down(started, ValueError("no head seen yet"))
            return
        snapshot = ChainSnapshot(
            chain=self.chain,
            best=signals.best,
            finalized=signals.finalized,
            peers=signals.peers,
            is_syncing=bool(signals.is_syncing),
            should_have_peers=bool(signals.should_have_peers),
            head_age=signals.head_age,
            finalized_age=signals.finalized_age,
            sync_gap=signals.sync_gap,
        )
        self._observe(started, up=True, chain=snapshot)
        spread = self.group.best_spread()
        if spread is not None:
            self.metrics.chain_best_spread.labels(self.chain).set(spread)
        disagree = self.group.finalized_disagreement()
        self.metrics.chain_finalized_disagreement.labels(self.chain).set(int(disagree))

    def _down(self, started: float, exc: BaseException) -> None:
        reason = f"timeout after {self.target.timeout:g}s" if isinstance(exc, TimeoutError) else ""
        self._observe(started, up=False, reason=reason or str(exc) or type(exc).__name__)

    def _observe(self, started: float, *, up: bool, reason: str = "", **payload: Any) -> None:
        duration = self._clock() - started
        obs = Observation(
            "substrate", self.target.name, time.time(), duration, up, reason, **payload
        )
        self._emit(obs)

    # -- heads --------------------------------------------------------------------------------

    async def _heads_loop(self) -> None:
        attempt = 0
        while self.target.subscribe and self._supports("chain_subscribeNewHeads"):
            try:
                async with connect_ws(
                    self.url, self._session, call_timeout=self.target.timeout, metrics=self.metrics
                ) as ws:
                    await self._subscribed(ws)
            except _FAILURES as exc:
                log.warning("head subscription lost", node=self.target.name, reason=str(exc))
                self._restarts("closed").inc()
            # Heads are polled over HTTP while the socket is down, so signals stay fresh.
            await self._poll_heads_for(self._backoff.delay(attempt))
            attempt = 0 if self._healthy_run else attempt + 1
        await self._poll_heads_for(math.inf)

    async def _subscribed(self, ws: WsRpc) -> None:
        self._healthy_run = False
        heads = await ws.subscribe("chain_subscribeNewHeads")
        finalized = None
        if self._supports("chain_subscribeFinalizedHeads"):
            finalized = await ws.subscribe("chain_subscribeFinalizedHeads")
        last_head = self._clock()
        while True:
            remaining = self.target.silence_timeout - (self._clock() - last_head)
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    subscription, result = await ws.notification()
            except TimeoutError:
                last_head = self._clock()
                if await self._chain_advanced():
                    log.warning("head subscription went silent; resubscribing", node=self.url)
                    self._restarts("silent").inc()
                    heads = await self._resubscribe(ws, heads)
                continue
            if subscription == heads:
                last_head = self._clock()
                self._healthy_run = True
                await self._new_best(await self._identify(result))
            elif subscription == finalized:
                self.tracker.add_finalized(await self._identify(result), self._clock())

    async def _resubscribe(self, ws: WsRpc, old: object) -> object:
        try:
            await ws.call("chain_unsubscribeNewHeads", [old])
        except RpcError as exc:
            log.info("unsubscribe failed", node=self.url, reason=str(exc))
        return await ws.subscribe("chain_subscribeNewHeads")

    async def _chain_advanced(self) -> bool:
        """Poll over HTTP: True when the best head moved while the subscription was silent."""
        before = self.tracker.best
        try:
            await self._poll_heads()
        except _FAILURES as exc:
            log.warning("poll after a silent subscription failed", node=self.url, reason=str(exc))
            return False
        return self.tracker.best != before

    def _restarts(self, reason: str) -> Any:
        return self.metrics.chain_subscription_restarts.labels(self.chain, self.target.name, reason)

    async def _poll_heads_for(self, duration: float) -> None:
        deadline = self._clock() + duration
        while (remaining := deadline - self._clock()) > 0:
            try:
                await self._poll_heads()
            except _FAILURES as exc:
                log.info("head poll failed", node=self.target.name, reason=str(exc))
            await asyncio.sleep(min(self.target.interval, remaining))

    async def _poll_heads(self) -> None:
        async with asyncio.timeout(self.target.timeout):
            best_raw, finalized_hash = await asyncio.gather(
                self.rpc.call("chain_getHeader"), self.rpc.call("chain_getFinalizedHead")
            )
            finalized_raw = await self.rpc.call("chain_getHeader", [finalized_hash])
            best = await self._identify(best_raw)
            await self._new_best(best)
        self.tracker.add_finalized(Header.from_rpc(finalized_raw, finalized_hash), self._clock())

    async def _identify(self, raw: object) -> Header:
        header = Header.from_rpc(raw)
        if self._local_hashes:
            return header
        block_hash = await self.rpc.call("chain_getBlockHash", [header.number])
        return Header(header.number, str(block_hash), header.parent_hash)

    async def _new_best(self, head: Header) -> None:
        tracker, segment = self.tracker, [head]
        best = tracker.best
        if best is not None and best.number + 1 < head.number <= best.number + tracker.window:
            segment = [*await self._backfill(best.number + 1, head.number - 1), head]
            if any(a.hash != b.parent_hash for a, b in itertools.pairwise(segment)):
                segment = [head]  # the chain moved under the backfill; walk back instead
        while True:
            if (older := tracker.missing_history(segment)) is not None:
                tracker.add_history(await self._header(older))
            elif (missing := tracker.missing_parent(segment)) is not None:
                segment.insert(0, await self._header(missing))
            else:
                break
        self._account(tracker.add_best(segment, self._clock()))

    async def _backfill(self, first: int, last: int) -> list[Header]:
        hashes = await self.rpc.call("chain_getBlockHash", [list(range(first, last + 1))])
        if not isinstance(hashes, list) or None in hashes:
            raise ValueError(f"no hashes for blocks {first}..{last}")
        headers: list[Header] = []
        for start in range(0, len(hashes), BACKFILL_CONCURRENCY):
            chunk = hashes[start : start + BACKFILL_CONCURRENCY]
            headers += await asyncio.gather(*(self._header(h) for h in chunk))
        return headers

    async def _header(self, block_hash: str) -> Header:
        raw = await self.rpc.call("chain_getHeader", [block_hash])
        if raw is None:
            raise ValueError(f"node does not know block {block_hash}")
        return Header.from_rpc(raw, block_hash)

    def _account(self, update: HeadUpdate) -> None:
        best = self.tracker.best
        if best is None or update.added == 0:
            return
        production = self.group.produced(update, best.number, self._clock())
        if production.blocks:
            self.metrics.blocks_produced.labels(self.chain).inc(production.blocks)
        if production.block_time is not None:
            self.metrics.chain_block_time.labels(self.chain).observe(production.block_time)
        if update.reorg is not None:
            node = (self.chain, self.target.name)
            self.metrics.chain_reorgs.labels(*node).inc()
            self.metrics.chain_reorg_depth.labels(*node).observe(update.reorg.depth)
            log.warning(
                "reorg",
                node=self.target.name,
                depth=update.reorg.depth,
                ancestor=update.reorg.ancestor,
                best=best.number,
            )
