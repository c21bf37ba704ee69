"""A fake Substrate chain and nodes speaking its JSON-RPC over HTTP and WebSocket (REFERENCE.md §1).

Use it wherever a real node cannot run: ``srd run --sandbox``, drills and tests. It answers like
a real node does — hex block numbers (zero-padded or minimal), ``-32601`` for unsafe and unknown
methods, batches, head subscriptions on the same port, ``/health``, ``/health/readiness`` and a
``/metrics`` page with the node's Prometheus names (§2) — and block hashes are real: blake2b-256
of the SCALE-encoded header. Faults are scriptable, for tests and drills:

- chain: ``chain.production_stalled``, ``chain.finality_stalled``, ``chain.reorg(depth=3)``;
- chain: ``chain.reset()`` (the node came back with a fresh database: heights start again);
- node: ``node.faults`` (``skip_heads``, ``too_many_connections``, ``latency``,
  ``malformed_json``, ``omit_error_codes``, ``split_body``, ``endless_body``, ``body_padding``,
  ``nested_result``, ``websocket_only``, ``down``), ``node.silence_subscriptions()``,
  ``await node.close_websockets()``, ``node.missing_methods``, ``node.syncing``;
- network: ``LoadBalancer(node_a, node_b)`` serves two nodes behind one URL, alternating.

The new JSON-RPC spec's ``chainHead_v1_follow`` is served too (``chainHead_v1_header`` answers
the SCALE-encoded header; ``chainHead_v1_unpin``, ``chainHead_v1_unfollow``);
``node.chainhead_only`` lists it without the legacy subscriptions, and a follow holding more
than ``node.max_pinned`` pinned blocks gets ``stop``, as real servers do.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from srd.http.app import serving
from srd.probes.chain import header_hash, scale_header

UNSAFE_METHODS = frozenset({"system_peers", "system_addReservedPeer", "author_rotateKeys"})
SUBSCRIPTIONS = {
    # subscribe method: (kind, notification method, unsubscribe method)
    "chain_subscribeNewHeads": ("best", "chain_newHead", "chain_unsubscribeNewHeads"),
    "chain_subscribeFinalizedHeads": (
        "finalized",
        "chain_finalizedHead",
        "chain_unsubscribeFinalizedHeads",
    ),
}
UNSUBSCRIBE = frozenset(unsubscribe for _, _, unsubscribe in SUBSCRIPTIONS.values())
FOLLOW_EVENT = "chainHead_v1_followEvent"
CHAINHEAD = frozenset(
    {"chainHead_v1_follow", "chainHead_v1_header", "chainHead_v1_unpin", "chainHead_v1_unfollow"}
)
INVALID_BLOCK_HASH = -32801
DUPLICATE_HASHES = -32804
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    state_root: str = "0x" + "00" * 32
    extrinsics_root: str = "0x" + "00" * 32
    logs: tuple[str, ...] = ()


def _make_block(chain: str, number: int, parent_hash: str, fork: int) -> Block:
    state_root = _hash(f"{chain}/state/{fork}", number)
    extrinsics_root = _hash(f"{chain}/extrinsics", number)
    # A PreRuntime digest item (0x06, engine "aura", SCALE bytes of the u64 slot), as on a
    # real Aura chain: the hash covers encoded logs too.
    logs = ("0x06" + b"aura".hex() + "20" + number.to_bytes(8, "little").hex(),)
    raw = {
        "parentHash": parent_hash,
        "number": number,
        "stateRoot": state_root,
        "extrinsicsRoot": extrinsics_root,
        "digest": {"logs": list(logs)},
    }
    return Block(number, header_hash(raw), parent_hash, state_root, extrinsics_root, logs)


def _hash(text: str, number: int) -> str:
    return "0x" + hashlib.blake2b(f"{text}/{number}".encode(), digest_size=32).hexdigest()


Listener = Callable[[str, Block], None]
"""Called with ("best" | "finalized", block) when the chain's best or finalized block changes."""


class FakeChain:
    """A chain that grows one block per ``block_time``; finality trails by ``finality_lag``."""

    def __init__(self, name: str = "Vilokanam Sandbox", finality_lag: int = 2) -> None:
        self.name = name
        self.finality_lag = finality_lag
        self.production_stalled = False
        """run() produces nothing while True (a block-production stall)."""
        self.finality_stalled = False
        """Finalized stays where it is while True (a finality stall)."""
        genesis = _make_block(name, 0, "0x" + "00" * 32, 0)
        self.blocks: list[Block] = [genesis]
        self.by_hash: dict[str, Block] = {genesis.hash: genesis}
        self.listeners: list[Listener] = []
        self._finalized = 0
        self._forks = itertools.count(1)
        self._reset_fork = 0
        """Blocks produced after a reset differ from those before it (new state roots)."""

    @property
    def best(self) -> Block:
        return self.blocks[-1]

    @property
    def finalized(self) -> Block:
        return self.blocks[self._finalized]

    def produce(self) -> Block:
        block = self._append(self.best, 0)
        self._notify("best", block)
        self._finalize()
        return block

    def reorg(self, depth: int, length: int | None = None) -> Block:
        """Replace the last ``depth`` blocks by a fork of ``length`` blocks (default: one
        longer) from their parent; nodes notify only the new best, as real ones do. Finalized
        blocks never revert. ``length == depth`` is a competing block at the same height."""
        if not 0 < depth <= self.best.number - self.finalized.number:
            raise ValueError(
                f"reorg depth {depth} must be 1..{self.best.number - self.finalized.number} "
                "(unfinalized blocks)"
            )
        fork = next(self._forks)
        ancestor = self.blocks[self.best.number - depth]
        del self.blocks[ancestor.number + 1 :]
        block = ancestor
        for _ in range(depth + 1 if length is None else length):
            block = self._append(block, fork)
        self._notify("best", block)
        self._finalize()
        return block

    def reset(self) -> None:
        """Start again from genesis with new blocks, finalized back to 0: a dev node restarted
        with a fresh database, or a node restored from an old snapshot."""
        self._reset_fork = next(self._forks)
        del self.blocks[1:]
        genesis = self.blocks[0]
        self.by_hash = {genesis.hash: genesis}  # a fresh database knows no old block
        self._finalized = 0

    async def run(self, block_time: float, jitter: float = 0.0) -> None:
        """Produce blocks forever, one every ``block_time`` seconds (± ``jitter`` of it, drawn
        from ``random``: seed it for a repeatable run), unless stalled."""
        while True:
            await asyncio.sleep(block_time * random.uniform(1 - jitter, 1 + jitter))  # noqa: S311
            if not self.production_stalled:
                self.produce()

    def _append(self, parent: Block, fork: int) -> Block:
        block = _make_block(self.name, parent.number + 1, parent.hash, fork or self._reset_fork)
        self.blocks.append(block)
        self.by_hash[block.hash] = block
        return block

    def _finalize(self) -> None:
        target = max(self._finalized, self.best.number - self.finality_lag)
        if not self.finality_stalled and target > self._finalized:
            self._finalized = target
            self._notify("finalized", self.finalized)

    def _notify(self, kind: str, block: Block) -> None:
        for listener in self.listeners:
            listener(kind, block)


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


@dataclass
class NodeFaults:
    """Faults one node shows, as real nodes and proxies do; set them at any time."""

    skip_heads: int = 0
    """Drop this many coming new-head notifications (the client sees a gap)."""
    too_many_connections: bool = False
    """Answer HTTP 429 to RPC posts and WebSocket upgrades."""
    latency: float = 0.0
    """Seconds added before every answer (rate limiting shows up so, not as errors)."""
    malformed_json: bool = False
    """Answer with a truncated JSON body."""
    omit_error_codes: bool = False
    """Error objects without ``code`` (seen: ``{"error":{"message":"Method not found: …"}}``)."""
    split_body: float = 0.0
    """Send each HTTP answer in two chunks this many seconds apart (proxies and busy nodes)."""
    endless_body: bool = False
    """HTTP answers start a JSON string and never end it, nor the body."""
    body_padding: int = 0
    """Bytes of whitespace after each HTTP answer: still JSON, as big as wanted."""
    nested_result: int = 0
    """Answer every HTTP call with a result nested this many arrays deep."""
    websocket_only: bool = False
    """HTTP POST is refused with 405, as by endpoints that serve only WebSocket."""
    down: bool = False
    """A proxy in front of a stopped node: 503 to every request, WebSockets closed."""


@dataclass
class _Subscription:
    kind: str
    notification: str
    silent: bool = False
    reported: dict[str, int] = field(default_factory=dict)
    """chainHead follows: blocks reported (hash → number), newest finalized and after."""
    pinned: set[str] = field(default_factory=set)
    finalized: int = 0


@dataclass(eq=False)  # connections are kept in a set, by identity
class _Connection:
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    subscriptions: dict[object, _Subscription] = field(default_factory=dict)


class FakeSubstrateNode:
    """One node's RPC view of a FakeChain. ``pad_numbers`` picks ``0x00000004`` over ``0x4``."""

    def __init__(
        self,
        chain: FakeChain,
        *,
        name: str = "srd-sandbox-node",
        peers: int = 5,
        pad_numbers: bool = True,
    ) -> None:
        self.chain = chain
        self.name = name
        self.peers = peers
        self.pad_numbers = pad_numbers
        self.syncing = False
        self.sync_gap = 0
        """highestBlock − currentBlock in system_syncState."""
        self.missing_methods: set[str] = set()
        """Methods this node does not implement (seen: system_syncState on some servers)."""
        self.integer_subscription_ids = False
        """Substrate's ids are strings; other servers use integers."""
        self.chainhead_only = False
        """Only the new spec's chainHead_v1_* methods follow heads; no legacy subscriptions."""
        self.max_pinned = 32
        """Blocks a follow may hold pinned; one more and the node sends ``stop``."""
        self.faults = NodeFaults()
        self.requests: dict[str, int] = {}
        self.websocket_attempts = 0
        """WebSocket upgrade requests, answered or refused."""
        self._connections: set[_Connection] = set()
        self._ids = itertools.count(1)
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "system_health": lambda _: self.health(),
            "system_syncState": lambda _: {
                "startingBlock": 0,
                "currentBlock": chain.best.number,
                "highestBlock": chain.best.number + self.sync_gap,
            },
            "system_chain": lambda _: chain.name,
            "system_name": lambda _: self.name,
            "system_version": lambda _: "1.0.0-sandbox",
            "chain_getHeader": self._get_header,
            "chain_getFinalizedHead": lambda _: chain.finalized.hash,
            "chain_getFinalisedHead": lambda _: chain.finalized.hash,
            "chain_getBlockHash": self._get_block_hash,
            "rpc_methods": lambda _: {
                "version": 1,
                "methods": sorted(
                    {*self._methods, *CHAINHEAD, *self._legacy_subscriptions()}
                    - self.missing_methods
                ),
            },
        }
        chain.listeners.append(self._on_block)

    def _legacy_subscriptions(self) -> set[str]:
        return set() if self.chainhead_only else {*SUBSCRIPTIONS, *UNSUBSCRIBE}

    def health(self) -> dict[str, Any]:
        return {"peers": self.peers, "isSyncing": self.syncing, "shouldHavePeers": True}

    def header(self, block: Block) -> dict[str, Any]:
        number = f"0x{block.number:08x}" if self.pad_numbers else hex(block.number)
        return {
            "parentHash": block.parent_hash,
            "number": number,
            "stateRoot": block.state_root,
            "extrinsicsRoot": block.extrinsics_root,
            "digest": {"logs": list(block.logs)},
        }

    def _get_header(self, params: list[Any]) -> dict[str, Any] | None:
        if not params or params[0] is None:
            return self.header(self.chain.best)
        if not isinstance(params[0], str):
            raise RpcFault(-32602, "Invalid params: expected a block hash")
        block = self.chain.by_hash.get(params[0])
        return self.header(block) if block else None

    def _get_block_hash(self, params: list[Any]) -> Any:
        if not params or params[0] is None:
            return self.chain.best.hash
        if isinstance(params[0], list):
            return [self._hash_at(item) for item in params[0]]
        return self._hash_at(params[0])

    def _hash_at(self, number: object) -> str | None:
        if isinstance(number, str):
            try:
                number = int(number, 16)
            except ValueError:
                raise RpcFault(-32602, "Invalid params: bad block number") from None
        if not isinstance(number, int) or number < 0:
            raise RpcFault(-32602, "Invalid params: bad block number")
        blocks = self.chain.blocks
        return blocks[number].hash if number < len(blocks) else None

    def answer(self, request: Any, connection: _Connection | None = None) -> dict[str, Any]:
        """The JSON-RPC response object for one request object."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return self._error(None, -32600, "Invalid request")
        method, request_id = request["method"], request.get("id")
        self.requests[method] = self.requests.get(method, 0) + 1
        params = request.get("params", [])
        try:
            if method in UNSAFE_METHODS:
                raise RpcFault(-32601, "RPC call is unsafe to be called externally")
            if not isinstance(params, list):
                raise RpcFault(-32602, "Invalid params: expected an array")
            result = self._call(method, params, connection)
            return {"jsonrpc": "2.0", "id": request_id, "result": result}
        except RpcFault as fault:
            return self._error(request_id, fault.code, fault.message)

    def _call(self, method: str, params: list[Any], connection: _Connection | None) -> Any:
        handler = self._methods.get(method)
        if method in self.missing_methods:
            handler = None
        elif handler is None and connection is not None:  # subscriptions need a WebSocket
            if method in SUBSCRIPTIONS and not self.chainhead_only:
                return self._subscribe(method, connection)
            if method in UNSUBSCRIBE and not self.chainhead_only:
                return connection.subscriptions.pop(params[0] if params else None, None) is not None
            if method in CHAINHEAD:
                return self._chainhead(method, params, connection)
        if handler is None:
            raise RpcFault(-32601, f"Method not found: {method}")
        return handler(params)

    def _subscription_id(self) -> object:
        number = next(self._ids)
        return number if self.integer_subscription_ids else f"sub{number:013x}"

    def _subscribe(self, method: str, connection: _Connection) -> object:
        kind, notification, _ = SUBSCRIPTIONS[method]
        subscription = self._subscription_id()
        connection.subscriptions[subscription] = _Subscription(kind, notification)
        # A real node sends the current head right after the subscription id.
        current = self.chain.best if kind == "best" else self.chain.finalized
        asyncio.get_running_loop().call_soon(self._send, connection, subscription, current)
        return subscription

    def _error(self, request_id: Any, code: int, message: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": message}
        if not self.faults.omit_error_codes:
            error["code"] = code
        return {"jsonrpc": "2.0", "id": request_id, "error": error}

    def _on_block(self, kind: str, block: Block) -> None:
        if kind == "best" and self.faults.skip_heads > 0:
            self.faults.skip_heads -= 1
            return
        for connection in self._connections:
            for subscription, sub in list(connection.subscriptions.items()):
                if sub.kind == kind:
                    self._send(connection, subscription, block)
                elif sub.kind == "follow" and not sub.silent:
                    if kind == "best":
                        self._follow_best(connection, subscription, block)
                    else:
                        self._follow_finalized(connection, subscription, block)

    def _send(self, connection: _Connection, subscription: object, block: Block) -> None:
        self._notify(connection, subscription, self.header(block))

    def _notify(self, connection: _Connection, subscription: object, result: Any) -> None:
        sub = connection.subscriptions.get(subscription)
        if sub is None or sub.silent:
            return
        notification = {
            "jsonrpc": "2.0",
            "method": sub.notification,
            "params": {"subscription": subscription, "result": result},
        }
        connection.outbox.put_nowait(json.dumps(notification))

    # -- chainHead_v1 (the new JSON-RPC spec) ---------------------------------------------------

    def _chainhead(self, method: str, params: list[Any], connection: _Connection) -> Any:
        if method == "chainHead_v1_follow":
            if not params or not isinstance(params[0], bool):
                raise RpcFault(-32602, "Invalid params: expected withRuntime: bool")
            subscription = self._subscription_id()
            connection.subscriptions[subscription] = _Subscription("follow", FOLLOW_EVENT)
            asyncio.get_running_loop().call_soon(self._follow_start, connection, subscription)
            return subscription
        sub = connection.subscriptions.get(params[0]) if params else None
        if method == "chainHead_v1_unfollow":
            if sub is not None and sub.kind == "follow":
                del connection.subscriptions[params[0]]
            return None
        if sub is None or sub.kind != "follow":
            return None  # invalid or stale follow: null, not an error (the spec)
        if len(params) != 2:
            raise RpcFault(-32602, "Invalid params")
        if method == "chainHead_v1_header":
            block = self.chain.by_hash.get(params[1]) if params[1] in sub.pinned else None
            if block is None:
                raise RpcFault(INVALID_BLOCK_HASH, "Invalid block hash")
            return "0x" + scale_header(self.header(block)).hex()
        hashes = params[1] if isinstance(params[1], list) else [params[1]]
        if len(set(hashes)) != len(hashes):
            raise RpcFault(DUPLICATE_HASHES, "Duplicate hashes")
        if not all(h in sub.pinned for h in hashes):
            raise RpcFault(INVALID_BLOCK_HASH, "Invalid block hash")
        sub.pinned.difference_update(hashes)
        return None

    def _follow_start(self, connection: _Connection, subscription: object) -> None:
        sub = connection.subscriptions.get(subscription)
        if sub is None or sub.silent:
            return
        finalized = self.chain.finalized
        sub.finalized = finalized.number
        sub.reported[finalized.hash] = finalized.number
        event = {"event": "initialized", "finalizedBlockHashes": [finalized.hash]}
        self._notify(connection, subscription, event)
        if self._pin(connection, subscription, finalized.hash):
            self._follow_best(connection, subscription, self.chain.best)

    def _pin(self, connection: _Connection, subscription: object, block_hash: str) -> bool:
        """Pin a block for a follow; False (and ``stop`` sent) when it holds too many."""
        sub = connection.subscriptions[subscription]
        sub.pinned.add(block_hash)
        if len(sub.pinned) <= self.max_pinned:
            return True
        self._notify(connection, subscription, {"event": "stop"})
        del connection.subscriptions[subscription]
        return False

    def _follow_best(self, connection: _Connection, subscription: object, best: Block) -> None:
        """newBlock for each block not reported yet (parents first), then bestBlockChanged."""
        sub = connection.subscriptions.get(subscription)
        if sub is None:
            return
        new: list[Block] = []
        block: Block | None = best
        while block is not None and block.hash not in sub.reported:
            new.insert(0, block)
            block = self.chain.by_hash.get(block.parent_hash)
        for block in new:
            sub.reported[block.hash] = block.number
            event = {"event": "newBlock", "blockHash": block.hash}
            self._notify(connection, subscription, event | {"parentBlockHash": block.parent_hash})
            if not self._pin(connection, subscription, block.hash):
                return
        self._notify(
            connection, subscription, {"event": "bestBlockChanged", "bestBlockHash": best.hash}
        )

    def _fork_point(self, block_hash: str) -> int:
        """Number of the highest canonical ancestor of a block (itself when canonical)."""
        canonical = self.chain.blocks
        block = self.chain.by_hash[block_hash]
        while not (block.number < len(canonical) and canonical[block.number] is block):
            block = self.chain.by_hash[block.parent_hash]
        return block.number if block.hash != block_hash else len(canonical)

    def _follow_finalized(
        self, connection: _Connection, subscription: object, block: Block
    ) -> None:
        sub = connection.subscriptions.get(subscription)
        if sub is None or block.number <= sub.finalized:
            return
        canonical = self.chain.blocks
        finalized = [b.hash for b in canonical[sub.finalized + 1 : block.number + 1]]
        # Pruned: reported blocks of forks that branched off below the new finalized block.
        pruned = [h for h in sub.reported if self._fork_point(h) < block.number]
        event = {"event": "finalized", "finalizedBlockHashes": finalized}
        self._notify(connection, subscription, event | {"prunedBlockHashes": pruned})
        sub.finalized = block.number
        sub.reported = {
            h: n for h, n in sub.reported.items() if n >= block.number and h not in pruned
        }

    def silence_subscriptions(self) -> None:
        """The subscriptions open now stop notifying; their sockets stay open and answer calls,
        and a new subscription works (the stuck-subscription bug of real nodes)."""
        for connection in self._connections:
            for sub in connection.subscriptions.values():
                sub.silent = True

    @property
    def follows(self) -> int:
        """chainHead follows open now, on every socket."""
        return sum(
            sub.kind == "follow" for c in self._connections for sub in c.subscriptions.values()
        )

    def pinned(self) -> int:
        """Blocks pinned by every follow open now."""
        return sum(len(sub.pinned) for c in self._connections for sub in c.subscriptions.values())

    async def close_websockets(self) -> None:
        """Close every WebSocket mid-stream, as a restarting node or a proxy does."""
        for connection in list(self._connections):
            await connection.ws.close()

    async def go_down(self) -> None:
        """The node stops (``faults.down``) and its WebSockets close; clear ``faults.down``
        to bring it back."""
        self.faults.down = True
        await self.close_websockets()

    @property
    def websockets(self) -> int:
        return len(self._connections)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._rpc)
        app.router.add_get("/", self._websocket)
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/readiness", self._readiness)
        app.router.add_get("/metrics", self._metrics)
        return app

    def _body(self, payload: Any) -> str:
        text = json.dumps(payload)
        return text[: len(text) // 2] if self.faults.malformed_json else text

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        if faults.down:
            return web.Response(status=503, text="Service Unavailable")
        if faults.too_many_connections:
            return web.Response(status=429, text="Too many connections")
        if faults.websocket_only:
            return web.Response(status=405, text="Method Not Allowed")
        await asyncio.sleep(faults.latency)
        try:
            payload = json.loads(await request.read())
        except ConnectionError:  # the client gave up (a timeout): nobody to answer
            return web.Response(status=499)
        except ValueError:
            return await self._json(request, self._error(None, -32700, "Parse error"))
        if isinstance(payload, list):
            if not payload:
                error = self._error(None, -32600, "Invalid request: empty batch")
                return await self._json(request, error)
            return await self._json(request, [self.answer(item) for item in payload])
        return await self._json(request, self.answer(payload))

    async def _json(self, request: web.Request, payload: Any) -> web.StreamResponse:
        faults = self.faults
        if faults.nested_result and isinstance(payload, dict) and "result" in payload:
            # json.dumps recurses per level: build the deep text, as a node would send it.
            depth = faults.nested_result
            text = self._body({**payload, "result": None}).replace(
                '"result": null', '"result": ' + "[" * depth + "]" * depth
            )
        else:
            text = self._body(payload)
        data = (text + " " * faults.body_padding).encode()
        if not (faults.split_body or faults.endless_body):
            return web.Response(body=data, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if faults.endless_body:
            await response.write(b'{"jsonrpc":"2.0","id":1,"result":"')
            with suppress(ConnectionError):
                while True:  # until the client gives up and closes the connection
                    await response.write(b"a" * 65536)
            return response
        await response.write(data[: len(data) // 2])
        await asyncio.sleep(faults.split_body)
        await response.write(data[len(data) // 2 :])
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self.websocket_attempts += 1
        if self.faults.down:
            return web.Response(status=503, text="Service Unavailable")
        if self.faults.too_many_connections:
            return web.Response(status=429, text="Too many connections")
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=405, text="Used HTTP Method is not allowed. POST is required"
            )
        await ws.prepare(request)
        connection = _Connection(ws)
        self._connections.add(connection)
        sender = asyncio.create_task(self._sender(connection), name=f"fake-node-ws:{self.name}")
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                await asyncio.sleep(self.faults.latency)
                connection.outbox.put_nowait(self._body(self._ws_answer(message.data, connection)))
        finally:
            self._connections.discard(connection)
            sender.cancel()
            with suppress(asyncio.CancelledError):
                await sender
        return ws

    def _ws_answer(self, data: str, connection: _Connection) -> Any:
        try:
            payload = json.loads(data)
        except ValueError:
            return self._error(None, -32700, "Parse error")
        if isinstance(payload, list):
            return [self.answer(item, connection) for item in payload]
        return self.answer(payload, connection)

    async def _sender(self, connection: _Connection) -> None:
        while True:
            text = await connection.outbox.get()
            with suppress(ConnectionError):
                await connection.ws.send_str(text)

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def _readiness(self, _: web.Request) -> web.Response:
        health = self.health()
        ready = not health["isSyncing"] and health["peers"] > 0
        return web.Response(status=200 if ready else 500)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics_page().encode(), headers={"Content-Type": TEXT_FORMAT}
        )

    def metrics_page(self) -> str:
        """The node's Prometheus page (REFERENCE.md §2, port 9615), label ``chain``."""
        chain, best = json.dumps(self.chain.name), self.chain.best.number
        heights = {"best": best, "finalized": self.chain.finalized.number}
        heights["sync_target"] = best + self.sync_gap
        gauges = {
            "substrate_number_leaves": 1,
            "substrate_ready_transactions_number": 0,
            "substrate_sub_libp2p_peers_count": self.peers,
            "substrate_sub_libp2p_is_major_syncing": int(self.syncing),
            "substrate_finality_grandpa_round": self.chain.finalized.number,
        }
        lines = ["# TYPE substrate_block_height gauge"]
        lines += [
            f'substrate_block_height{{status="{status}",chain={chain}}} {value}'
            for status, value in heights.items()
        ]
        for name, value in gauges.items():
            lines += [f"# TYPE {name} gauge", f"{name}{{chain={chain}}} {value}"]
        lines += [
            "# TYPE substrate_import_queue_processed_total counter",
            f'substrate_import_queue_processed_total{{result="success",chain={chain}}} {best}',
            "# TYPE substrate_sub_txpool_validations_scheduled counter",
            f"substrate_sub_txpool_validations_scheduled{{chain={chain}}} 0",
            "# TYPE substrate_sub_txpool_validations_finished counter",
            f"substrate_sub_txpool_validations_finished{{chain={chain}}} 0",
            "# TYPE substrate_build_info gauge",
            f'substrate_build_info{{name="{self.name}",version="1.0.0-sandbox",chain={chain}}} 1',
        ]
        for histogram in (
            "substrate_block_verification_time",
            "substrate_block_propagation_time",
            "substrate_proposer_block_constructed",
        ):
            lines += [
                f"# TYPE {histogram} histogram",
                f'{histogram}_bucket{{le="0.1",chain={chain}}} {best}',
                f'{histogram}_bucket{{le="+Inf",chain={chain}}} {best}',
                f"{histogram}_sum{{chain={chain}}} {best * 0.01:.2f}",
                f"{histogram}_count{{chain={chain}}} {best}",
            ]
        return "\n".join(lines) + "\n"

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> AbstractAsyncContextManager[str]:
        """Serve on host:port (0 = a free port); yields the node's RPC URL (HTTP and WS)."""
        return _serving_rpc(self.app(), [self], host, port)


class LoadBalancer:
    """Nodes behind one URL, as a round-robin load balancer serves them: each new connection
    (HTTP keep-alive or WebSocket) goes to the next node. Nodes that are not in step (one
    behind, one reset) make heights seem to go back and forth, and a hash one node gave may
    be unknown to the other."""

    def __init__(self, *nodes: FakeSubstrateNode) -> None:
        self.nodes = nodes
        self._next = itertools.cycle(nodes)
        self._backends: dict[asyncio.Transport, FakeSubstrateNode] = {}

    def _backend(self, request: web.Request) -> FakeSubstrateNode:
        connection = request.transport
        if connection is None or connection.is_closing():
            return next(self._next)
        if connection not in self._backends:
            self._backends = {c: n for c, n in self._backends.items() if not c.is_closing()}
            self._backends[connection] = next(self._next)
        return self._backends[connection]

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        return await self._backend(request)._rpc(request)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        return await self._backend(request)._websocket(request)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._rpc)
        app.router.add_get("/", self._websocket)
        return app

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> AbstractAsyncContextManager[str]:
        """Serve on host:port (0 = a free port); yields the one URL of all the nodes."""
        return _serving_rpc(self.app(), self.nodes, host, port)


@asynccontextmanager
async def _serving_rpc(
    app: web.Application, nodes: Sequence[FakeSubstrateNode], host: str, port: int
) -> AsyncIterator[str]:
    """Serve ``app`` (RPC over HTTP and WebSocket) for ``nodes``; yields its URL and closes
    the nodes' open WebSockets when it ends, so a server stop does not wait for them."""
    async with serving(app, host, port) as bound:
        try:
            yield f"http://{host}:{bound}"
        finally:
            for node in nodes:
                await node.close_websockets()


@asynccontextmanager
async def producing(
    chain: FakeChain, block_time: float, jitter: float = 0.0
) -> AsyncIterator[FakeChain]:
    """Run the chain's block production for the duration of the ``async with``."""
    task = asyncio.create_task(chain.run(block_time, jitter), name=f"fake-chain:{chain.name}")
    try:
        yield chain
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
