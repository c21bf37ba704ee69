"""A fake Substrate chain and nodes that speak its JSON-RPC over HTTP (REFERENCE.md §1).

Use it wherever a real node cannot run: ``srd run --sandbox``, drills and tests. It answers like
a real node does — hex block numbers (zero-padded or minimal), ``-32601`` for unsafe and unknown
methods, batches, ``/health`` and ``/health/readiness`` — so the parsers are tested against the
quirks they meet in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from srd.server import serving

UNSAFE_METHODS = frozenset({"system_peers", "system_addReservedPeer", "author_rotateKeys"})


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    parent_hash: str


class FakeChain:
    """A chain that grows one block per ``block_time``; finality trails by ``finality_lag``."""

    def __init__(self, name: str = "Vilokanam Sandbox", finality_lag: int = 2) -> None:
        self.name = name
        self.finality_lag = finality_lag
        genesis = Block(0, _hash(name, 0), "0x" + "00" * 32)
        self.blocks: list[Block] = [genesis]
        self.by_hash: dict[str, Block] = {genesis.hash: genesis}

    @property
    def best(self) -> Block:
        return self.blocks[-1]

    @property
    def finalized(self) -> Block:
        return self.blocks[max(0, len(self.blocks) - 1 - self.finality_lag)]

    def produce(self) -> Block:
        parent = self.best
        block = Block(parent.number + 1, _hash(self.name, parent.number + 1), parent.hash)
        self.blocks.append(block)
        self.by_hash[block.hash] = block
        return block

    async def run(self, block_time: float) -> None:
        """Produce blocks forever, one every ``block_time`` seconds."""
        while True:
            await asyncio.sleep(block_time)
            self.produce()


def _hash(chain: str, number: int) -> str:
    return "0x" + hashlib.blake2b(f"{chain}/{number}".encode(), digest_size=32).hexdigest()


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


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
        self.requests: dict[str, int] = {}
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "system_health": lambda _: self.health(),
            "system_syncState": lambda _: {
                "startingBlock": 0,
                "currentBlock": chain.best.number,
                "highestBlock": chain.best.number,
            },
            "system_chain": lambda _: chain.name,
            "system_name": lambda _: self.name,
            "system_version": lambda _: "1.0.0-sandbox",
            "chain_getHeader": self._get_header,
            "chain_getFinalizedHead": lambda _: chain.finalized.hash,
            "chain_getFinalisedHead": lambda _: chain.finalized.hash,
            "chain_getBlockHash": self._get_block_hash,
            "rpc_methods": lambda _: {"version": 1, "methods": sorted(self._methods)},
        }

    def health(self) -> dict[str, Any]:
        return {"peers": self.peers, "isSyncing": False, "shouldHavePeers": True}

    def header(self, block: Block) -> dict[str, Any]:
        number = f"0x{block.number:08x}" if self.pad_numbers else hex(block.number)
        return {
            "parentHash": block.parent_hash,
            "number": number,
            "stateRoot": _hash("state", block.number),
            "extrinsicsRoot": _hash("extrinsics", block.number),
            "digest": {"logs": []},
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

    def answer(self, request: Any) -> dict[str, Any]:
        """The JSON-RPC response object for one request object."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "Invalid request")
        method, request_id = request["method"], request.get("id")
        self.requests[method] = self.requests.get(method, 0) + 1
        params = request.get("params", [])
        try:
            if method in UNSAFE_METHODS:
                raise RpcFault(-32601, "RPC call is unsafe to be called externally")
            handler = self._methods.get(method)
            if handler is None:
                raise RpcFault(-32601, "Method not found")
            if not isinstance(params, list):
                raise RpcFault(-32602, "Invalid params: expected an array")
            return {"jsonrpc": "2.0", "id": request_id, "result": handler(params)}
        except RpcFault as fault:
            return _error(request_id, fault.code, fault.message)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._rpc)
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/readiness", self._readiness)
        return app

    async def _rpc(self, request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return web.json_response(_error(None, -32700, "Parse error"))
        if isinstance(payload, list):
            if not payload:
                return web.json_response(_error(None, -32600, "Invalid request: empty batch"))
            return web.json_response([self.answer(item) for item in payload])
        return web.json_response(self.answer(payload))

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def _readiness(self, _: web.Request) -> web.Response:
        health = self.health()
        ready = not health["isSyncing"] and health["peers"] > 0
        return web.Response(status=200 if ready else 500)

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on host:port (0 = a free port); yields the node's RPC URL."""
        async with serving(self.app(), host, port) as bound:
            yield f"http://{host}:{bound}"


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


@asynccontextmanager
async def producing(chain: FakeChain, block_time: float) -> AsyncIterator[FakeChain]:
    """Run the chain's block production for the duration of the ``async with``."""
    task = asyncio.create_task(chain.run(block_time), name=f"fake-chain:{chain.name}")
    try:
        yield chain
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
