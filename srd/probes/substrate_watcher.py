"""Follow one Substrate node for as long as srd runs, and export its chain health.

Heads come from ``chain_subscribeNewHeads`` / ``chain_subscribeFinalizedHeads`` over a WebSocket
on the node's URL. What real nodes do to a subscription is survived here: a subscription that
goes silent while the socket stays open is noticed after ``silence_timeout`` and told apart from
a stalled chain by one HTTP poll (the chain advanced: resubscribe; it did not: the chain stalled,
head age says so); a closed socket is reopened with jittered exponential backoff while heads are
polled over HTTP; gaps are backfilled with ``chain_getBlockHash(n)`` + ``chain_getHeader``;
reorgs are walked back through parent hashes to the common ancestor. A node that no longer has
srd's blocks (reset to a fresh database, or another node behind a load-balanced URL) is followed
from where it is: heights that go back are counted as regressions, not errors.

A node that lists only the new JSON-RPC spec is followed with ``chainHead_v1_follow`` instead
(``head_tracking``): block numbers come from the parent links of ``newBlock`` events (one
``chainHead_v1_header`` for the first finalized block), ``bestBlockChanged`` feeds the same
tracker, finalized and pruned blocks are unpinned, and ``stop`` starts a new follow.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import structlog

from srd import clock
from srd.config.probes import SubstrateTarget
from srd.model import Observation
from srd.probes.chain import (
    ChainGroup,
    Header,
    HeadUpdate,
    Health,
    Regression,
    header_hash,
)
from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate import (
    ConnectionClosed,
    NodeClient,
    RpcError,
    WsRpc,
    connect_ws,
    learn_methods,
)
from srd.retry import Backoff

log = structlog.get_logger("srd.probes.substrate")

RECONNECT_BACKOFF = Backoff(maximum=60.0, jitter=0.5)
"""Reopening a lost head socket; ``initial`` is the target's ``reconnect_backoff``. The jitter
spreads the reconnects of nodes one outage cut off together."""
BACKFILL_CONCURRENCY = 16
"""Headers fetched at once while backfilling a gap, so a long gap does not flood the node."""
FOLLOW = "chainHead_v1_follow"
FOLLOW_EVENTS = ("initialized", "newBlock", "bestBlockChanged", "finalized", "stop")


class FollowStopped(Exception):
    """The node stopped a chainHead follow before it delivered a head: following again at
    once would loop (it holds too much already), so srd backs off and polls meanwhile."""


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
        metrics: ProbeMetrics,
        *,
        groups: dict[str, ChainGroup] | None = None,
        on_observation: Callable[[Observation], None] | None = None,
        clock: Callable[[], float] = clock.monotonic,
    ) -> None:
        self.target = target
        self.url = str(target.url)
        self.metrics = metrics
        self.rpc = NodeClient(
            self.url, session, timeout=target.timeout, metrics=metrics, ca_file=target.ca_file
        )
        self._session = session
        self._groups = groups if groups is not None else {}
        self._emit = on_observation or metrics.record
        self._clock = clock
        self._backoff = replace(RECONNECT_BACKOFF, initial=target.reconnect_backoff)
        self.methods: frozenset[str] = frozenset()
        self.chain = ""
        self.group = ChainGroup(expected_block_time=target.expected_block_time)
        self.tracker = self.group.tracker(target.name)
        self._local_hashes = True
        self._first_head_at: float | None = None
        """When the current subscription delivered its first head; None before it has."""
        self._follow_headers: dict[str, Header] = {}
        """Blocks the current chainHead follow reported (unfinalized, and the newest finalized)."""
        self._pins: set[str] = set()
        """Of those, the ones the node keeps pinned for srd until unpinned."""

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the node until ``stop`` is set."""
        try:
            async with asyncio.TaskGroup() as tasks:
                loop = tasks.create_task(self._follow(), name=f"substrate:{self.target.name}")
                await stop.wait()
                loop.cancel()
        finally:
            await self.rpc.aclose()

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
                if self.target.expected_block_time is not None:
                    self.group.expected_block_time = self.target.expected_block_time
                self.tracker = self.group.tracker(self.target.name)
                if self._supports("chain_getHeader"):  # a new-spec-only node may lack it
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
        if raw is None:
            # Another node behind a load balancer answered: keep Substrate's usual hashing.
            log.debug("hashing not checked: node lacks its finalized block", node=self.url)
            return
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
        snapshot = self.group.snapshot(self.chain, self.target.name, self._clock())
        if snapshot is None:
            self._down(started, ValueError("no head seen yet"))
            return
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
            "substrate", self.target.name, clock.now(), duration, up, reason, **payload
        )
        self._emit(obs)

    # -- heads --------------------------------------------------------------------------------

    def head_mode(self) -> str:
        """legacy, chainhead or poll: how heads are followed, from config and rpc_methods."""
        mode = self.target.head_tracking
        if not self.target.subscribe or mode == "poll":
            return "poll"
        legacy = self._supports("chain_subscribeNewHeads")
        if mode == "legacy" or (mode == "auto" and legacy):
            return "legacy" if legacy else "poll"
        if mode == "chainhead" and self._supports(FOLLOW):
            return "chainhead"
        return "chainhead" if FOLLOW in self.methods else "poll"

    async def _heads_loop(self) -> None:
        attempt = 0
        mode = self.head_mode()
        log.info("following heads", node=self.target.name, mode=mode)
        while mode != "poll":
            # Reset before connecting: a connect that fails delivered nothing either.
            self._first_head_at = None
            connected = False
            self.metrics.chain_subscription_attempts.labels(self.chain, self.target.name).inc()
            log.debug("connecting to follow heads", node=self.target.name, attempt=attempt)
            try:
                async with connect_ws(
                    self.url,
                    self._session,
                    call_timeout=self.target.timeout,
                    metrics=self.metrics,
                    ssl=self.rpc.tls,
                ) as ws:
                    connected = True
                    if mode == "legacy":
                        await self._subscribed(ws)
                    else:
                        await self._followed(ws)
            except FollowStopped as exc:
                log.warning(
                    "chainHead follow stopped again", node=self.target.name, reason=str(exc)
                )
            except _FAILURES as exc:
                if connected:  # a working subscription was lost: the one warning of the outage
                    log.warning("head subscription lost", node=self.target.name, reason=str(exc))
                    self._restarts("closed").inc()
                else:
                    log.debug("head subscription failed", node=self.target.name, reason=str(exc))
            # Only a subscription that delivered heads for a while (longer than a silence)
            # starts from the first delay again: one that fails at once must not turn the
            # backoff into a busy loop.
            first = self._first_head_at
            if first is not None and self._clock() - first >= self.target.silence_timeout:
                attempt = 0
            # Heads are polled over HTTP while the socket is down, so signals stay fresh.
            await self._poll_heads_for(self._backoff.delay(attempt))
            attempt += 1
        await self._poll_heads_for(math.inf)

    async def _subscribed(self, ws: WsRpc) -> None:
        heads = await ws.subscribe("chain_subscribeNewHeads")
        finalized = None
        if self._supports("chain_subscribeFinalizedHeads"):
            finalized = await ws.subscribe("chain_subscribeFinalizedHeads")
        last_head = self._clock()
        current_seen = False
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
                self._delivered()
                # The first head of a subscription is the node's current one, not a new block.
                await self._new_best(await self._identify(result), notified=current_seen)
                current_seen = True
            elif subscription == finalized:
                self._finalized(await self._identify(result))

    async def _resubscribe(self, ws: WsRpc, old: object) -> object:
        try:
            await ws.call("chain_unsubscribeNewHeads", [old])
        except RpcError as exc:
            log.info("unsubscribe failed", node=self.url, reason=str(exc))
        return await ws.subscribe("chain_subscribeNewHeads")

    # -- chainHead_v1_follow ------------------------------------------------------------------

    async def _followed(self, ws: WsRpc) -> None:
        follow = await self._refollow(ws, None)
        delivered = False  # a best block came: a stop after that is followed again at once
        last_head = self._clock()
        while True:
            remaining = self.target.silence_timeout - (self._clock() - last_head)
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    subscription, event = await ws.notification()
            except TimeoutError:
                last_head = self._clock()
                # A node without chain_getHeader cannot be polled: follow again to be sure.
                if not self._supports("chain_getHeader") or await self._chain_advanced():
                    log.warning("chainHead follow went silent; following again", node=self.url)
                    self._restarts("silent").inc()
                    follow = await self._refollow(ws, follow)
                    delivered = False
                continue
            if not isinstance(event, dict) or subscription != follow:
                continue  # an old follow's late events
            kind = event.get("event")
            if kind not in FOLLOW_EVENTS:
                continue  # operation events: srd starts no operations
            if kind == "stop":
                log.warning("node stopped the chainHead follow; following again", node=self.url)
                self._restarts("stop").inc()
                if not delivered:
                    raise FollowStopped("stop before any best block")
                follow = await self._refollow(ws, None)
                delivered = False
                last_head = self._clock()
            elif kind == "initialized":
                await self._follow_initialized(ws, follow, event)
            elif kind == "newBlock":
                await self._follow_new_block(ws, follow, event)
                last_head = self._clock()
            elif kind == "bestBlockChanged":
                last_head = self._clock()
                self._delivered()
                head = await self._followed_header(ws, follow, _hash(event, "bestBlockHash"))
                await self._new_best(head, notified=delivered)
                delivered = True
            else:
                await self._follow_finalized(ws, follow, event)

    async def _refollow(self, ws: WsRpc, old: object) -> object:
        """Start a follow (after unfollowing ``old``, when it is still alive)."""
        if old is not None:
            try:
                await ws.call("chainHead_v1_unfollow", [old])
            except RpcError as exc:
                log.info("unfollow failed", node=self.url, reason=str(exc))
        self._follow_headers.clear()
        self._pins.clear()
        return await ws.subscribe(FOLLOW, [False])

    async def _followed_header(self, ws: WsRpc, follow: object, block_hash: str) -> Header:
        """A reported block's header: known from its parent's number, else asked for."""
        header = self._follow_headers.get(block_hash)
        if header is None:
            raw = await ws.call("chainHead_v1_header", [follow, block_hash])
            if raw is None:
                raise ValueError(f"follow subscription is gone (header of {block_hash})")
            header = self._follow_headers[block_hash] = Header.from_scale(raw, block_hash)
        return header

    async def _follow_initialized(self, ws: WsRpc, follow: object, event: dict[str, Any]) -> None:
        # v1 sends finalizedBlockHashes (oldest first); earlier drafts one finalizedBlockHash.
        hashes = _hashes(event, "finalizedBlockHashes") or [_hash(event, "finalizedBlockHash")]
        self._pins.update(hashes)
        self._finalized(await self._followed_header(ws, follow, hashes[-1]))
        await self._unpin(ws, follow, hashes)

    async def _follow_new_block(self, ws: WsRpc, follow: object, event: dict[str, Any]) -> None:
        block_hash, parent_hash = _hash(event, "blockHash"), _hash(event, "parentBlockHash")
        self._pins.add(block_hash)
        parent = self._follow_headers.get(parent_hash)
        if parent is not None:
            self._follow_headers[block_hash] = Header(parent.number + 1, block_hash, parent_hash)
        else:
            await self._followed_header(ws, follow, block_hash)

    async def _follow_finalized(self, ws: WsRpc, follow: object, event: dict[str, Any]) -> None:
        finalized, pruned = (
            _hashes(event, "finalizedBlockHashes"),
            _hashes(event, "prunedBlockHashes"),
        )
        if finalized:
            header = await self._followed_header(ws, follow, finalized[-1])
            self._finalized(header)
            # Numbers are derived from parents: keep the newest finalized block (the parent
            # of the next ones) and what is above it; every older block is gone for good.
            older = [h for h, known in self._follow_headers.items() if known.number < header.number]
            for gone in older:
                del self._follow_headers[gone]
        for gone in pruned:
            self._follow_headers.pop(gone, None)
        await self._unpin(ws, follow, [*finalized, *pruned])

    async def _unpin(self, ws: WsRpc, follow: object, hashes: list[str]) -> None:
        """Unpin what the node holds for srd, or it stops the follow once it holds too many."""
        pinned = [h for h in dict.fromkeys(hashes) if h in self._pins]
        if not pinned:
            return
        self._pins.difference_update(pinned)
        try:
            await ws.call("chainHead_v1_unpin", [follow, pinned])
        except RpcError as exc:
            log.info("unpin failed", node=self.url, reason=str(exc))

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
                log.debug("head poll failed", node=self.target.name, reason=str(exc))
            await asyncio.sleep(min(self.target.interval, remaining))

    async def _poll_heads(self) -> None:
        async with asyncio.timeout(self.target.timeout):
            best_raw, finalized_hash = await asyncio.gather(
                self.rpc.call("chain_getHeader"), self.rpc.call("chain_getFinalizedHead")
            )
            finalized_raw = await self.rpc.call("chain_getHeader", [finalized_hash])
        # None: the hash came from another node behind a load balancer; next poll has it.
        if finalized_raw is not None:
            self._finalized(Header.from_rpc(finalized_raw, finalized_hash))
        # Outside the poll's timeout (every call has its own): a backfill of a long gap that
        # took longer than one poll would otherwise start over, and never finish, every poll.
        await self._new_best(await self._identify(best_raw), notified=False)

    async def _identify(self, raw: object) -> Header:
        header = Header.from_rpc(raw)
        if self._local_hashes:
            return header
        block_hash = await self.rpc.call("chain_getBlockHash", [header.number])
        return Header(header.number, str(block_hash), header.parent_hash)

    def _delivered(self) -> None:
        if self._first_head_at is None:
            self._first_head_at = self._clock()

    def _finalized(self, header: Header) -> None:
        regression = self.tracker.add_finalized(header, self._clock())
        if regression is not None:
            self._regressed(regression)

    def _regressed(self, regression: Regression) -> None:
        self.metrics.chain_height_regressions.labels(self.target.name, regression.kind).inc()
        log.warning(
            "height went back; following the node",
            node=self.target.name,
            kind=regression.kind,
            before=regression.before,
            after=regression.after,
        )

    async def _new_best(self, head: Header, *, notified: bool = True) -> None:
        tracker, segment = self.tracker, self._linked(head)
        best, first = tracker.best, segment[0]
        if (
            best is not None
            and best.number + 1 < first.number <= best.number + tracker.window
            and not tracker.knows(first.parent_hash)
        ):
            segment = [*await self._backfill(best.number + 1, first.number - 1), *segment]
            # The chain moved under the backfill, or the node does not have the blocks (a
            # load-balanced URL answered from another node): walk back instead.
            if any(a.hash != b.parent_hash for a, b in itertools.pairwise(segment)):
                segment = [head]
        while True:
            if (older := tracker.missing_history(segment)) is not None:
                history = await self._header(older)
                if history is None:
                    break  # the node no longer has srd's chain (reset): a fresh start
                tracker.add_history(history)
            elif (missing := tracker.missing_parent(segment)) is not None:
                parent = await self._header(missing)
                if parent is None:
                    break
                segment.insert(0, parent)
            else:
                break
        self._account(tracker.add_best(segment, self._clock(), notified=notified))

    def _linked(self, head: Header) -> list[Header]:
        """``head`` preceded by the followed blocks that link it to what the tracker knows
        (chainHead reports every block, so a jump or a reorg links without RPC calls); just
        ``head`` when they do not link, and the walk back below does the rest."""
        segment = [head]
        while len(segment) < self.tracker.window and not self.tracker.knows(segment[0].parent_hash):
            parent = self._follow_headers.get(segment[0].parent_hash)
            if parent is None:
                return [head]
            segment.insert(0, parent)
        return segment if self.tracker.knows(segment[0].parent_hash) else [head]

    async def _backfill(self, first: int, last: int) -> list[Header]:
        """Headers ``first..last``; none when the node lacks some of them."""
        hashes = await self.rpc.call("chain_getBlockHash", [list(range(first, last + 1))])
        if not isinstance(hashes, list):
            raise ValueError(f"no hashes for blocks {first}..{last}: {hashes!r:.80}")
        if None in hashes:
            return []
        headers: list[Header | None] = []
        for start in range(0, len(hashes), BACKFILL_CONCURRENCY):
            chunk = hashes[start : start + BACKFILL_CONCURRENCY]
            headers += await asyncio.gather(*(self._header(h) for h in chunk))
        known = [h for h in headers if h is not None]
        return known if len(known) == len(headers) else []

    async def _header(self, block_hash: str) -> Header | None:
        """The header, or None when the node does not have the block (any more)."""
        if (followed := self._follow_headers.get(block_hash)) is not None:
            return followed
        raw = await self.rpc.call("chain_getHeader", [block_hash])
        return None if raw is None else Header.from_rpc(raw, block_hash)

    def _account(self, update: HeadUpdate) -> None:
        best = self.tracker.best
        if best is None or update.added == 0:
            return
        if update.regression is not None:
            self._regressed(update.regression)
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


def _hash(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise ValueError(f"follow event without {key}: {event!r:.120}")
    return value


def _hashes(event: dict[str, Any], key: str) -> list[str]:
    value = event.get(key) or []
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise ValueError(f"follow event with bad {key}: {event!r:.120}")
    return value
