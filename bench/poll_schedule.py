"""1,000 exporter targets polled every 5 s by one process with ``Supervisor.start_periodic``:
CPU seconds per poll and scheduling lag (a poll's actual start minus its scheduled tick).

The targets are served by a separate process (so the poller's CPU time is its own): one
aiohttp server on loopback answering every target's path with a real node exporter page.
The poller keeps the series srd reads from a node exporter and records each observation into
srd's metrics, as the daemon does. The run is bounded: a few intervals.

The lag is what the supervisor itself measures (its ``on_lag`` hook, the same numbers as
``srd_schedule_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from srd.config.probes import ExporterTarget
from srd.config.runtime import RuntimeConfig
from srd.probes.exporter import ExporterProbe
from srd.runtime import DaemonMetrics
from srd.supervisor import Job, Supervisor

from .exporter_parse import FIXTURE, NAMES

TARGETS = 1000
INTERVAL = 5.0
INTERVALS = 3


def _serve(port: int, page_path: str) -> None:
    body = Path(page_path).read_bytes()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{target}/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_serving(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the fake exporter server did not start")


async def _poll(base: str, jitter: float) -> dict[str, Any]:
    metrics = DaemonMetrics()
    lags: list[float] = []
    supervisor = Supervisor(metrics.supervisor, on_lag=lambda _, lag: lags.append(lag))
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:

        def job_for(probe: ExporterProbe) -> Job:
            async def job() -> None:
                obs = await probe()
                metrics.probes.record(obs)
                if not obs.up:
                    failures.append(obs.reason)

            return job

        cpu_started = time.process_time()
        for i in range(TARGETS):
            target = ExporterTarget.model_validate(
                {"name": f"t{i}", "url": f"{base}/t{i}/metrics", "keep": sorted(NAMES)}
                | {"interval": INTERVAL, "timeout": 2.0}
            )
            supervisor.start_periodic(
                f"exporter:t{i}", INTERVAL, job_for(ExporterProbe(target, session)), jitter=jitter
            )
        await asyncio.sleep(INTERVAL * INTERVALS)
        await supervisor.shutdown(grace=5.0)
        cpu = time.process_time() - cpu_started
    polls = len(lags)
    return {
        "polls": polls,
        "failures": len(failures),
        "cpu_per_poll": cpu / polls,
        "lag_p99": statistics.quantiles(lags, n=100)[98],
        "lag_max": max(lags),
        "first_failure": failures[0] if failures else "",
    }


def run() -> dict[str, float]:
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, str(FIXTURE)), daemon=True
    )
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        jitter = RuntimeConfig().schedule_jitter
        result = asyncio.run(_run_async(base, jitter))
    finally:
        server.terminate()
        server.join(timeout=10)
    print(
        f"poll_schedule: {TARGETS} targets every {INTERVAL:g}s (jitter {jitter:g}) for "
        f"{INTERVALS} intervals: {result['polls']} polls, {result['failures']} failed, "
        f"CPU {result['cpu_per_poll'] * 1e3:.2f} ms/poll, lag p99 "
        f"{result['lag_p99'] * 1e3:.1f} ms, max {result['lag_max'] * 1e3:.1f} ms"
        + (f"; first failure: {result['first_failure']}" if result["failures"] else "")
    )
    assert result["failures"] == 0, result["first_failure"]
    return {
        "poll_cpu_seconds_per_poll": round(result["cpu_per_poll"], 6),
        "poll_schedule_lag_p99_seconds": round(result["lag_p99"], 4),
    }


async def _run_async(base: str, jitter: float) -> dict[str, Any]:
    await _wait_serving(f"{base}/t0/metrics")
    return await _poll(base, jitter)


if __name__ == "__main__":
    run()
