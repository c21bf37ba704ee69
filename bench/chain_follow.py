"""One ``SubstrateWatcher`` follows 100,000 blocks from the sandbox's fake node in each head
mode (legacy subscription, chainHead_v1_follow, HTTP polls): RSS growth and CPU per block.

The fake node runs in a separate process (its chain grows with every block; the watcher's
memory and CPU time must be its own) with one more route, ``POST /produce?n=N``. The watcher
side produces a batch, waits until the watcher's best head is the chain's, and goes on, so
every block is followed and none is dropped. RSS and CPU are taken after a warm-up (windows,
queues and caches at their working size) and at the end: a growth means a map that grows with
the chain. Bounded: a few seconds to a few minutes per mode, depending on the machine.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config.probes import SubstrateTarget
from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate_watcher import SubstrateWatcher
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode

from .poll_schedule import _free_port, _wait_serving

BLOCKS = 100_000
WARMUP = 5_000
BATCH = {"legacy": 100, "chainhead": 100, "poll": 100}
"""Blocks per batch: a poll sees a whole batch at once and backfills it."""
MODES = ("legacy", "chainhead", "poll")


def _serve(port: int, mode: str) -> None:
    chain = FakeChain(name="bench", finality_lag=2)
    node = FakeSubstrateNode(chain)
    node.chainhead_only = mode == "chainhead"
    # A batch arrives faster than any client unpins: no stop in the middle of a batch.
    node.max_pinned = 4 * max(BATCH.values())

    async def produce(request: web.Request) -> web.Response:
        for _ in range(int(request.query["n"])):
            chain.produce()
        return web.json_response({"best": chain.best.number, "hash": chain.best.hash})

    app = node.app()
    app.router.add_post("/produce", produce)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def _until(check: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the watcher's state has no event to wait on
            await asyncio.sleep(0.001)


async def _follow(base: str, mode: str) -> dict[str, float]:
    target = SubstrateTarget(
        name="bench",
        url=base,  # type: ignore[arg-type]
        interval=1.0 if mode != "poll" else 0.1,
        timeout=1.0 if mode != "poll" else 0.1,
        silence_timeout=30.0,
        head_tracking=mode,  # type: ignore[arg-type]
    )
    metrics = ProbeMetrics(CollectorRegistry())
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        watcher = SubstrateWatcher(target, session, metrics)
        task = asyncio.create_task(watcher.run(stop), name=f"bench-watcher:{mode}")
        produced = 0
        marks: dict[str, Any] = {}

        async def batch(n: int) -> None:
            nonlocal produced
            async with session.post(f"{base}/produce?n={n}") as reply:
                head = await reply.json()
            produced += n
            await _until(
                lambda: (
                    watcher.tracker.best is not None and watcher.tracker.best.hash == head["hash"]
                ),
                120,
            )

        try:
            await _until(lambda: watcher.tracker.best is not None, 60)
            step = BATCH[mode]
            while produced < BLOCKS:
                await batch(step)
                if "rss" not in marks and produced >= WARMUP:
                    gc.collect()
                    marks |= {"rss": _rss_mb(), "cpu": time.process_time(), "at": produced}
            gc.collect()
            rss, cpu = _rss_mb(), time.process_time()
        finally:
            stop.set()
            await task
    blocks = produced - marks["at"]
    return {
        "rss_growth_mb": rss - marks["rss"],
        "cpu_us_per_block": (cpu - marks["cpu"]) / blocks * 1e6,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run() -> dict[str, float]:
    results: dict[str, dict[str, float]] = {}
    for mode in MODES:
        port = _free_port()
        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(port, mode), daemon=True
        )
        server.start()
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_serving(f"{base}/health"))
            started = time.monotonic()
            results[mode] = asyncio.run(_follow(base, mode))
        finally:
            server.terminate()
            server.join(timeout=10)
        print(
            f"chain_follow {mode}: {BLOCKS} blocks in {time.monotonic() - started:.0f}s, RSS "
            f"growth {results[mode]['rss_growth_mb']:.2f} MB after a {WARMUP}-block warm-up, "
            f"CPU {results[mode]['cpu_us_per_block']:.0f} us/block"
        )
    out = {
        "chain_follow_rss_growth_mb": round(max(r["rss_growth_mb"] for r in results.values()), 2),
        "chain_follow_cpu_us_per_block": round(
            max(r["cpu_us_per_block"] for r in results.values()), 1
        ),
    }
    for mode, result in results.items():
        out[f"chain_follow_rss_growth_mb_{mode}"] = round(result["rss_growth_mb"], 2)
        out[f"chain_follow_cpu_us_per_block_{mode}"] = round(result["cpu_us_per_block"], 1)
    return out


if __name__ == "__main__":
    print(run())
