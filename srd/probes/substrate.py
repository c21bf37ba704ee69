"""Substrate JSON-RPC over HTTP and WebSocket (REFERENCE.md §1), tolerant of what real nodes send.

``SubstrateProbe`` is a one-shot poll; ``srd.probes.substrate_watcher`` follows a node for as
long as it runs, on top of the clients here.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from srd import clock
from srd.config.probes import SubstrateTarget
from srd.model import ChainSnapshot, Observation
from srd.probes.body import BodyError, parse_json, read_body
from srd.probes.chain import Health, parse_block_number
from srd.probes.metrics import ProbeMetrics

__all__ = ["NodeClient", "RpcClient", "RpcError", "SubstrateProbe", "WsRpc", "classify"]
__all__ += ["connect_ws", "http_url", "ws_url"]
__all__ += ["learn_methods", "parse_block_number"]

log = structlog.get_logger("srd.probes.substrate")

# Substrate's RPC server refuses bodies above 10 MiB; srd's answers are small.
MAX_RESPONSE_BYTES = 1 << 20
MAX_PENDING_NOTIFICATIONS = 1024
"""Notifications queued beyond this are dropped: the gap they leave is backfilled."""

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


_NOT_FOUND = ("not found", "unsafe")


def classify(code: object) -> str:
    """Error class of a JSON-RPC error code, by range (codes differ across server versions).

    Transport classes are added by the clients: ``http``, ``rate_limited`` (HTTP 429),
    ``connection``, ``timeout``, ``malformed``, ``too_big``, ``too_deep``."""
    if not isinstance(code, int) or isinstance(code, bool):
        return "unknown"
    if code in _CLASSES:
        return _CLASSES[code]
    if -32099 <= code <= -32000:
        return "server"
    return "application"


class RpcError(Exception):
    """A call failed. ``error_class`` is bounded (metric label); ``str()`` is for people."""

    def __init__(
        self, method: str, error_class: str, message: str, http_status: int | None = None
    ) -> None:
        self.method = method
        self.error_class = error_class
        self.http_status = http_status
        super().__init__(f"{method}: {message}")


def _request(request_id: int, method: str, params: list[Any] | None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}


class _Instrumented:
    """Times every call and counts its failures by class."""

    metrics: ProbeMetrics | None

    @asynccontextmanager
    async def _observed(self, method: str) -> AsyncIterator[None]:
        started = clock.monotonic()
        try:
            yield
        except RpcError as exc:
            self._count(method, exc.error_class)
            raise
        except TimeoutError:
            self._count(method, "timeout")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.rpc_duration.labels(method).observe(clock.monotonic() - started)

    def _count(self, method: str, error_class: str) -> None:
        if self.metrics is not None:
            self.metrics.rpc_errors.labels(method, error_class).inc()


_HTTP_OF_WS = {"wss://": "https://", "ws://": "http://"}
_WS_OF_HTTP = {http: ws for ws, http in _HTTP_OF_WS.items()}


def http_url(url: str) -> str:
    """The HTTP URL of a node given in either transport: same host, port and path."""
    return _rescheme(url, _HTTP_OF_WS)


def ws_url(url: str) -> str:
    """The WebSocket URL of a node given in either transport (Substrate serves both)."""
    return _rescheme(url, _WS_OF_HTTP)


def _rescheme(url: str, schemes: dict[str, str]) -> str:
    for old, new in schemes.items():
        if url.startswith(old):
            return new + url.removeprefix(old)
    return url


def tls(ca_file: Path | None) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=``: always verified, against ``ca_file`` when given."""
    return True if ca_file is None else ssl.create_default_context(cafile=ca_file)


class RpcClient(_Instrumented):
    """JSON-RPC 2.0 over HTTP POST to one node. Every call has a timeout."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 10.0,
        metrics: ProbeMetrics | None = None,
        ssl: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = http_url(url)
        self.timeout = timeout
        self.metrics = metrics
        self._session = session
        self._ssl = ssl
        self._ids = itertools.count(1)

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        async with self._observed(method), asyncio.timeout(self.timeout):
            body = await self._post(method, _request(next(self._ids), method, params))
            return _result(method, body)

    async def _post(self, method: str, request: dict[str, Any]) -> bytes:
        try:
            async with self._session.post(self.url, json=request, ssl=self._ssl) as response:
                if response.status == 429:
                    raise RpcError(method, "rate_limited", "HTTP 429: too many connections")
                if response.status != 200:
                    raise RpcError(method, "http", f"HTTP {response.status}", response.status)
                return await read_body(response, MAX_RESPONSE_BYTES)
        except BodyError as exc:
            raise RpcError(method, exc.reason, str(exc)) from None
        except aiohttp.ClientError as exc:
            raise RpcError(method, "connection", str(exc) or type(exc).__name__) from exc


def _result(method: str, body: bytes | str) -> Any:
    try:
        reply = parse_json(body)
    except BodyError as exc:
        raise RpcError(method, exc.reason, f"response {exc}") from None
    if not isinstance(reply, dict):
        raise RpcError(method, "malformed", "response is not a JSON object")
    return _unwrap(method, reply)


def _unwrap(method: str, reply: dict[str, Any]) -> Any:
    error = reply.get("error")
    if error is not None:
        # Some servers omit "code" (seen: {"error": {"message": "Method not found: …"}}).
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        error_class = classify(code)
        # -32601 is also "RPC call is unsafe to be called externally".
        if error_class == "unknown" and any(w in str(message).lower() for w in _NOT_FOUND):
            error_class = "method_not_found"
        raise RpcError(method, error_class, f"{message} (code {code})")
    if "result" not in reply:
        raise RpcError(method, "malformed", "response has neither result nor error")
    return reply["result"]


class ConnectionClosed(Exception):
    """The WebSocket closed or failed; calls in flight and subscriptions are gone."""


class WsRpc(_Instrumented):
    """JSON-RPC over one WebSocket: calls matched to replies by id, and one bounded queue of
    subscription notifications as (subscription id, result)."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, timeout: float, metrics: ProbeMetrics | None
    ):
        self.timeout = timeout
        self.metrics = metrics
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._notifications: asyncio.Queue[tuple[object, Any] | None] = asyncio.Queue()
        self.dropped = 0
        """Notifications dropped because the queue was full."""

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        try:
            async with self._observed(method), asyncio.timeout(self.timeout):
                try:
                    await self._ws.send_json(_request(request_id, method, params))
                except (ConnectionError, aiohttp.ClientError) as exc:
                    raise RpcError(method, "connection", str(exc) or "send failed") from exc
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def subscribe(self, method: str, params: list[Any] | None = None) -> object:
        """Subscribe; the id is a string on Substrate, may be an integer elsewhere."""
        subscription = await self.call(method, params)
        if not isinstance(subscription, str | int) or isinstance(subscription, bool):
            raise RpcError(method, "malformed", f"subscription id {subscription!r}")
        return subscription

    async def notification(self) -> tuple[object, Any]:
        """The next notification; ConnectionClosed once the socket is gone."""
        item = await self._notifications.get()
        if item is None:
            self._notifications.put_nowait(None)  # later callers learn it too
            raise ConnectionClosed("WebSocket closed")
        return item

    async def read(self) -> None:
        """Dispatch incoming messages until the socket closes."""
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                self._dispatch(message.data)
        finally:
            for method, future in self._pending.values():
                if not future.done():
                    future.set_exception(RpcError(method, "connection", "WebSocket closed"))
            self._notifications.put_nowait(None)

    def _dispatch(self, data: str) -> None:
        try:
            message = parse_json(data)
        except BodyError as exc:
            # No id to match: the call it answered times out; the count says why.
            self._count("websocket_message", exc.reason)
            return
        if not isinstance(message, dict):
            self._count("websocket_message", "malformed")
            return
        params = message.get("params")
        if "method" in message and isinstance(params, dict) and "subscription" in params:
            if self._notifications.qsize() >= MAX_PENDING_NOTIFICATIONS:
                self.dropped += 1
                return
            self._notifications.put_nowait((params["subscription"], params.get("result")))
            return
        pending = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if pending is None or pending[1].done():
            return
        method, future = pending
        try:
            future.set_result(_unwrap(method, message))
        except RpcError as exc:
            future.set_exception(exc)


@asynccontextmanager
async def connect_ws(
    url: str,
    session: aiohttp.ClientSession,
    *,
    call_timeout: float,
    metrics: ProbeMetrics | None = None,
    ssl: ssl.SSLContext | bool = True,
) -> AsyncIterator[WsRpc]:
    """Open a WebSocket to the node and read it until the ``async with`` ends; the connect
    and every call on it are bounded by ``call_timeout`` seconds."""
    timeout = call_timeout
    try:
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(
                ws_url(url),
                max_msg_size=MAX_RESPONSE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                ssl=ssl,
            )
    except aiohttp.WSServerHandshakeError as exc:
        error_class = "rate_limited" if exc.status == 429 else "http"
        message = f"HTTP {exc.status}"
        raise RpcError("websocket_connect", error_class, message, exc.status) from exc
    except aiohttp.ClientError as exc:
        raise RpcError("websocket_connect", "connection", str(exc) or type(exc).__name__) from exc
    rpc = WsRpc(ws, timeout, metrics)
    reader = asyncio.create_task(rpc.read(), name=f"substrate-ws-reader:{url}")
    try:
        yield rpc
    finally:
        reader.cancel()
        with suppress(asyncio.CancelledError):
            await reader
        await ws.close()


NOT_OFFERED = frozenset({400, 404, 405, 426})
"""HTTP answers to a JSON-RPC POST by an endpoint that serves only WebSocket (seen: 405 from
the node's own server with HTTP disabled, 400/404/426 from proxies that route upgrades only)."""


class NodeClient:
    """Calls to one node: over HTTP, or, for a node given as ``ws(s)://`` whose HTTP side is
    not offered, over one WebSocket kept open between calls (reopened when it closes)."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        metrics: ProbeMetrics | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.metrics = metrics
        self.tls = tls(ca_file)
        self.http = RpcClient(url, session, timeout=timeout, metrics=metrics, ssl=self.tls)
        self.websocket_only = False
        """Set once the node refused JSON-RPC over HTTP on a ws(s):// URL."""
        self._session = session
        self._ws: WsRpc | None = None
        self._stack = AsyncExitStack()
        self._opening = asyncio.Lock()

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        if not self.websocket_only:
            try:
                return await self.http.call(method, params)
            except RpcError as exc:
                if not (self.url.startswith("ws") and exc.http_status in NOT_OFFERED):
                    raise
                log.info("node serves JSON-RPC over WebSocket only", node=self.url, reason=str(exc))
                self.websocket_only = True
        ws = await self._websocket()
        try:
            return await ws.call(method, params)
        except RpcError as exc:
            if exc.error_class == "connection":
                await self.aclose()  # the next call opens a new one
            raise

    async def _websocket(self) -> WsRpc:
        async with self._opening:
            if self._ws is None:
                self._ws = await self._stack.enter_async_context(
                    connect_ws(
                        self.url,
                        self._session,
                        call_timeout=self.timeout,
                        metrics=self.metrics,
                        ssl=self.tls,
                    )
                )
            return self._ws

    async def aclose(self) -> None:
        """Close the WebSocket calls went over, if any."""
        self._ws = None
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()


class SubstrateProbe:
    """Polls one node once per call: health, chain name, best and finalized headers."""

    def __init__(
        self,
        target: SubstrateTarget,
        session: aiohttp.ClientSession,
        metrics: ProbeMetrics | None = None,
    ) -> None:
        self.target = target
        self.rpc = NodeClient(
            str(target.url),
            session,
            timeout=target.timeout,
            metrics=metrics,
            ca_file=target.ca_file,
        )
        self._chain: str | None = None
        self.methods: frozenset[str] | None = None
        """What the node supports (rpc_methods), once learned."""

    async def __call__(self) -> Observation:
        loop = asyncio.get_running_loop()
        started, at = loop.time(), clock.now()
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
        try:
            return await self._ask()
        finally:
            await self.rpc.aclose()  # a one-shot probe keeps no WebSocket between rounds

    async def _ask(self) -> ChainSnapshot:
        if self.methods is None:
            self.methods = await learn_methods(self.rpc)
        if self._chain is None:
            self._chain = str(await self.rpc.call("system_chain"))
        health, best, finalized_hash = await asyncio.gather(
            self.rpc.call("system_health"),
            self.rpc.call("chain_getHeader"),
            self.rpc.call("chain_getFinalizedHead"),
        )
        finalized = await self.rpc.call("chain_getHeader", [finalized_hash])
        node = Health.from_rpc(health)
        return ChainSnapshot(
            chain=self._chain,
            best=parse_block_number(best["number"]),
            finalized=parse_block_number(finalized["number"]),
            peers=node.peers,
            is_syncing=node.is_syncing,
            should_have_peers=node.should_have_peers,
        )


async def learn_methods(rpc: RpcClient | NodeClient) -> frozenset[str]:
    """The methods a node supports; empty when it does not say (then srd tries the basics)."""
    try:
        answer = await rpc.call("rpc_methods")
    except RpcError as exc:
        if exc.error_class != "method_not_found":
            raise
        return frozenset()
    methods = answer.get("methods") if isinstance(answer, dict) else None
    return frozenset(m for m in methods or () if isinstance(m, str))
