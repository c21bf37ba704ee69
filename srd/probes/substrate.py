"""Substrate JSON-RPC over HTTP (REFERENCE.md §1), tolerant of what real nodes send."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp

from srd.config import SubstrateTarget
from srd.model import ChainSnapshot, Observation

# Substrate's RPC server refuses bodies above 10 MiB; srd's answers are small.
MAX_RESPONSE_BYTES = 1 << 20

_CLASSES = {
    -32700: "parse",
    -32701: "parse",
    -32702: "parse",
    -32600: "invalid_request",
    -32601: "method_not_found",
    -32602: "invalid_params",
    -32603: "internal",
    -32604: "internal",
    -32005: "limit",
    -32006: "limit",
    -32007: "too_big",
    -32008: "too_big",
    -32009: "busy",
}


def classify(code: object) -> str:
    """Error class of a JSON-RPC error code, by range (codes differ across server versions)."""
    if not isinstance(code, int) or isinstance(code, bool):
        return "unknown"
    if code in _CLASSES:
        return _CLASSES[code]
    if -32099 <= code <= -32000:
        return "server"
    return "application"


class RpcError(Exception):
    """A call failed. ``error_class`` is bounded (metric label); ``str()`` is for people."""

    def __init__(self, method: str, error_class: str, message: str) -> None:
        self.method = method
        self.error_class = error_class
        super().__init__(f"{method}: {message}")


def parse_block_number(value: object) -> int:
    """Block numbers come as hex strings, padded (``0x00000004``) or not (``0x67``), or ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:2].lower() == "0x":
        return int(value, 16)
    raise ValueError(f"not a block number: {value!r}")


class RpcClient:
    """JSON-RPC 2.0 over HTTP POST to one node."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session
        self._ids = itertools.count(1)

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        request = {
            "jsonrpc": "2.0",
            "id": next(self._ids),
            "method": method,
            "params": params or [],
        }
        try:
            async with self._session.post(self.url, json=request) as response:
                if response.status != 200:
                    raise RpcError(method, "http", f"HTTP {response.status}")
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except aiohttp.ClientError as exc:
            raise RpcError(method, "connection", str(exc) or type(exc).__name__) from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise RpcError(method, "too_big", f"response over {MAX_RESPONSE_BYTES} bytes")
        return _result(method, body)


def _result(method: str, body: bytes) -> Any:
    try:
        reply = json.loads(body)
    except ValueError:
        raise RpcError(method, "malformed", "response is not JSON") from None
    if not isinstance(reply, dict):
        raise RpcError(method, "malformed", "response is not a JSON object")
    error = reply.get("error")
    if error is not None:
        # Some servers omit "code" (seen: {"error": {"message": "Method not found: …"}}).
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        error_class = classify(code)
        if error_class == "unknown" and "not found" in str(message).lower():
            error_class = "method_not_found"
        raise RpcError(method, error_class, f"{message} (code {code})")
    if "result" not in reply:
        raise RpcError(method, "malformed", "response has neither result nor error")
    return reply["result"]


class SubstrateProbe:
    """Polls one node: health, chain name, best and finalized headers."""

    def __init__(self, target: SubstrateTarget, session: aiohttp.ClientSession) -> None:
        self.target = target
        self.rpc = RpcClient(str(target.url), session)
        self._chain: str | None = None

    async def __call__(self) -> Observation:
        loop = asyncio.get_running_loop()
        started, at = loop.time(), time.time()
        try:
            async with asyncio.timeout(self.target.timeout):
                snapshot = await self._snapshot()
        except TimeoutError:
            reason = f"timeout after {self.target.timeout:g}s"
        except RpcError as exc:
            reason = str(exc)
        except (ValueError, TypeError, KeyError) as exc:
            reason = f"unexpected answer: {exc}"
        else:
            return Observation(
                "substrate", self.target.name, at, loop.time() - started, up=True, chain=snapshot
            )
        return Observation(
            "substrate", self.target.name, at, loop.time() - started, up=False, reason=reason
        )

    async def _snapshot(self) -> ChainSnapshot:
        if self._chain is None:
            self._chain = str(await self.rpc.call("system_chain"))
        health, best, finalized_hash = await asyncio.gather(
            self.rpc.call("system_health"),
            self.rpc.call("chain_getHeader"),
            self.rpc.call("chain_getFinalizedHead"),
        )
        finalized = await self.rpc.call("chain_getHeader", [finalized_hash])
        return ChainSnapshot(
            chain=self._chain,
            best=parse_block_number(best["number"]),
            finalized=parse_block_number(finalized["number"]),
            peers=int(health["peers"]),
            is_syncing=bool(health["isSyncing"]),
            should_have_peers=bool(health.get("shouldHavePeers", True)),
        )
