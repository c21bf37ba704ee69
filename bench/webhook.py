"""``POST /alertmanager`` against the real ``srd run`` in its own process, from a client on
loopback: webhook throughput and latency, and the time from a webhook to the first actuator
call of the runbook it triggers.

1. Throughput: srd in ``observe`` mode with bearer auth (observe does not skip intake: every
   accepted alert is journaled as received before its 2xx — durable acknowledgement, group
   commit — only acting is refused). The same flood then runs against a bare aiohttp handler
   (``bench.bare_webhook``: parse the JSON, answer 200) pinned to the same core: the ratio
   is srd's cost over the least any Python webhook does. A bounded pool
   of keep-alive connections POSTs valid version 4 payloads, each a distinct alert (its own
   fingerprint, so dedup never short-circuits) that matches no runbook, so nothing acts. 503
   is the intake's back-pressure when its queue is full (Alertmanager retries it): counted
   and reported apart, never an error; any other non-2xx fails the benchmark.
2. Webhook to first action: srd ``armed`` with one runbook of one ``scale_deployment`` step
   on the fake Kubernetes API served by this process (instrumented to timestamp every
   ``/scale`` request), fed distinct matching alerts one at a time, each run to completion
   before the next. The wall-clock journal timestamps of each execution split the latency.

srd is pinned to one core and the client to the others (when there are several), so the
numbers are srd's on one core. Everything is bounded and every process is killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from srd.journal import JOURNAL_FILE
from srd.simulate.sandbox.kubernetes import DEPLOYMENTS, FakeKubernetes, make_deployment

TOKEN = "bench-webhook-token"  # noqa: S105  (a throwaway srd on loopback)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CONNECTIONS = 32
REQUESTS = 20_000
DURATION = 15.0
WARMUP = 500
ACTIONS = 50
ACTION_TIMEOUT = 10.0
NAMESPACE, DEPLOYMENT = "bench", "bench-app"
STARTS_AT = "2026-11-28T10:00:00Z"
CORES = frozenset(os.sched_getaffinity(0))
SRD_CPU = min(CORES)
"""srd's core; the client runs on the others, when there are others."""


def _payload_template(alertname: str) -> bytes:
    """A version 4 payload with one firing alert; ``FINGERPRINT`` is replaced per request."""
    labels = {"alertname": alertname, "service": "bench", "severity": "page"}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "benchmark alert"},
        "startsAt": STARTS_AT,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "FINGERPRINT",
    }
    payload = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "srd",
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }
    return json.dumps(payload).encode()


def _body(template: bytes, index: int) -> bytes:
    return template.replace(b"FINGERPRINT", f"{index:016x}".encode())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_config(directory: Path, port: int, mode: str, kubernetes_url: str | None = None) -> Path:
    config: dict[str, Any] = {
        "mode": mode,
        "state_dir": str(directory / f"state-{mode}"),
        "server": {"listen": f"127.0.0.1:{port}"},
        "log": {"level": "info", "format": "json"},
        "failover": {"auth": {"bearer_token": {"env": "SRD_BENCH_TOKEN"}}},
    }
    if kubernetes_url is not None:
        step = {
            "name": "scale_up",
            "action": {
                "actuator": "kubernetes",
                "action": "scale_deployment",
                "params": {"namespace": NAMESPACE, "name": DEPLOYMENT, "replicas": 3},
            },
            "timeout": "30s",
        }
        runbook = {
            "name": "bench_scale",
            "match": ['alertname="BenchScale"'],
            "cooldown": "0s",
            "steps": [step],
        }
        (directory / "runbook.yaml").write_text(json.dumps({"runbooks": [runbook]}))
        # The guards' caps are for production; here 50 alerts in a row must each run once.
        config["failover"] |= {
            "runbooks": ["runbook.yaml"],
            "cooldown": "0s",
            "flap_max": 100_000,
            "max_executions": 100_000,
        }
        config["actuators"] = {"kubernetes": {"host": kubernetes_url}}
    path = directory / f"srd-{mode}.yaml"  # JSON is YAML
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class Srd:
    process: asyncio.subprocess.Process
    base_url: str
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@asynccontextmanager
async def _running_srd(config: Path, port: int, log: Path) -> AsyncIterator[Srd]:
    """The real ``srd run`` on ``port``, pinned to one core; killed on exit."""
    command = shutil.which("srd", path=str(Path(sys.executable).parent))
    argv = [command] if command else [sys.executable, "-m", "srd.cli"]
    async with _running(port, log, *argv, "run", "--config", str(config)) as srd:
        yield srd


@asynccontextmanager
async def _running_bare(port: int, log: Path) -> AsyncIterator[Srd]:
    """The bare aiohttp handler (``bench.bare_webhook``) on ``port``, pinned to srd's core."""
    async with _running(port, log, sys.executable, "-m", "bench.bare_webhook", str(port)) as bare:
        yield bare


@asynccontextmanager
async def _running(port: int, log: Path, *argv: str) -> AsyncIterator[Srd]:
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "SRD_BENCH_TOKEN": TOKEN},
        )
    try:
        if len(CORES) > 1:
            os.sched_setaffinity(process.pid, {SRD_CPU})
        srd = Srd(process, f"http://127.0.0.1:{port}", log)
        await _wait_healthy(srd)
        yield srd
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _wait_healthy(srd: Srd, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if srd.process.returncode is not None:
                raise RuntimeError(f"srd exited with {srd.process.returncode}:\n{srd.log_tail()}")
            try:
                async with session.get(f"{srd.base_url}/healthz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"srd did not become healthy in {within:g}s:\n{srd.log_tail()}")


@contextlib.contextmanager
def _client_cores() -> Any:
    """Run the client off srd's core while inside (when there is another core)."""
    before = os.sched_getaffinity(0)
    if len(CORES) > 1:
        os.sched_setaffinity(0, CORES - {SRD_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


# -- 1. throughput


@dataclass
class Flood:
    sent: int = 0
    ok_latencies: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    back_pressure: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    journaled_after: float = 0.0
    """Seconds from the flood's start until the journal held every accepted alert."""


async def _flood(url: str, template: bytes, first: int, total: int, duration: float) -> Flood:
    """POST ``total`` distinct alerts (or for ``duration`` s) over CONNECTIONS keep-alive
    connections, as fast as srd answers."""
    result = Flood()
    indices = itertools.count(first)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                index = next(indices)
                if index >= first + total:
                    return
                body = _body(template, index)
                sent = time.perf_counter()
                async with session.post(url, data=body, headers=AUTH) as reply:
                    await reply.read()
                    status = reply.status
                latency = time.perf_counter() - sent
                result.sent += 1
                result.latencies.append(latency)
                if 200 <= status < 300:
                    result.ok_latencies.append(latency)
                elif status == 503:
                    result.back_pressure += 1
                else:
                    result.errors[status] = result.errors.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        result.elapsed = time.perf_counter() - started
    return result


async def _metric(session: aiohttp.ClientSession, base_url: str, name: str, label: str) -> float:
    async with session.get(f"{base_url}/metrics") as reply:
        text = await reply.text()
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError(f"srd does not export {name}{{{label}}}")


async def _journaled(path: Path, count: int) -> None:
    """Wait until the journal at ``path`` holds ``count`` alert receipts (read-only)."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            held = db.execute("SELECT count(*) FROM alerts_received").fetchone()[0]
        if held >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the journal holds {held} of {count} accepted alerts after 60 s")
        await asyncio.sleep(0.05)


async def _bare(directory: Path) -> Flood:
    """The same flood against the bare handler: what one core can answer at all."""
    port = _free_port()
    template = _payload_template("BenchNoise")
    async with _running_bare(port, directory / "bare.log") as bare:
        url = f"{bare.base_url}/alertmanager"
        await _flood(url, template, 0, WARMUP, DURATION)
        flood = await _flood(url, template, WARMUP, REQUESTS, DURATION)
    assert not flood.errors, flood.errors
    assert not flood.back_pressure
    return flood


def _journal_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        count: int = db.execute("SELECT count(*) FROM alerts_received").fetchone()[0]
        return count


async def _throughput(directory: Path) -> dict[str, Any]:
    port = _free_port()
    config = _write_config(directory, port, "observe")
    template = _payload_template("BenchNoise")
    async with _running_srd(config, port, directory / "srd-observe.log") as srd:
        url = f"{srd.base_url}/alertmanager"
        warm = await _flood(url, template, 0, WARMUP, DURATION)
        await asyncio.sleep(1.0)  # let the dispatcher drain the warm-up alerts
        cpu, client_cpu = _cpu_seconds(srd.process.pid), time.process_time()
        started = time.perf_counter()
        flood = await _flood(url, template, WARMUP, REQUESTS, DURATION)
        flood.server_cpu = _cpu_seconds(srd.process.pid) - cpu
        flood.client_cpu = time.process_time() - client_cpu
        ok = len(warm.ok_latencies) + len(flood.ok_latencies)
        # Durable acknowledgement: what was answered 2xx is in the journal already.
        lost = max(0, ok - _journal_count(directory / "state-observe" / JOURNAL_FILE))
        await _journaled(directory / "state-observe" / JOURNAL_FILE, ok)
        flood.journaled_after = time.perf_counter() - started
        async with aiohttp.ClientSession() as session:
            accepted = await _metric(
                session, srd.base_url, "srd_webhook_alerts_total", 'status="firing"'
            )
            full = await _metric(
                session, srd.base_url, "srd_webhook_rejected_total", 'reason="queue_full"'
            )
        if srd.process.returncode is not None:
            raise RuntimeError(f"srd exited during the flood:\n{srd.log_tail()}")
    errors = warm.errors | flood.errors
    assert not errors, f"non-2xx answers other than 503: {errors}"
    assert accepted == ok, f"srd counted {accepted:g} accepted alerts, the client {ok}"
    assert full == warm.back_pressure + flood.back_pressure, (full, flood.back_pressure)
    return {"flood": flood, "lost": lost}


# -- 2. webhook to first action


class TimedKubernetes(FakeKubernetes):
    """The fake API, timestamping every ``/scale`` request as it arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.scale_requests: list[tuple[float, float]] = []
        """(perf_counter, time.time) of each /scale request, in arrival order."""
        self.arrived = asyncio.Event()

    def _mark(self) -> None:
        self.scale_requests.append((time.perf_counter(), time.time()))
        self.arrived.set()

    async def _get_scale(self, request: web.Request) -> web.Response:
        self._mark()
        return await super()._get_scale(request)

    async def _patch_scale(self, request: web.Request) -> web.Response:
        self._mark()
        return await super()._patch_scale(request)

    async def _replace_scale(self, request: web.Request) -> web.Response:
        self._mark()
        return await super()._replace_scale(request)


@dataclass
class Action:
    latency: float
    """First /scale request minus the POST's send time (perf_counter, one process)."""
    answered: float
    """The webhook's answer minus the POST's send time."""
    to_planned: float
    """POST sent to the execution's row (time.time, wall clock, both processes)."""
    to_running: float
    to_scale: float


async def _wait_first_scale(fake: TimedKubernetes, before: int, srd: Srd) -> tuple[float, float]:
    deadline = time.perf_counter() + ACTION_TIMEOUT
    while len(fake.scale_requests) <= before:
        fake.arrived.clear()
        left = deadline - time.perf_counter()
        if left <= 0:
            raise RuntimeError(
                f"no /scale request within {ACTION_TIMEOUT:g}s of the webhook:\n{srd.log_tail()}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fake.arrived.wait(), left)
    return fake.scale_requests[before]


async def _finished(session: aiohttp.ClientSession, base_url: str, count: int) -> dict[str, Any]:
    """The newest execution once ``count`` executions exist and it has ended."""
    deadline = time.monotonic() + ACTION_TIMEOUT
    while time.monotonic() < deadline:
        async with session.get(f"{base_url}/api/executions?limit=1", headers=AUTH) as reply:
            newest = await reply.json()
        async with session.get(f"{base_url}/api/executions?limit=1000", headers=AUTH) as reply:
            total = len(await reply.json())
        if total == count and newest and newest[0]["state"] not in ("planned", "running"):
            if newest[0]["state"] != "succeeded":
                raise RuntimeError(f"execution ended {newest[0]['state']}: {newest[0]}")
            async with session.get(
                f"{base_url}/api/executions/{newest[0]['id']}", headers=AUTH
            ) as reply:
                detail: dict[str, Any] = await reply.json()
                return detail
        await asyncio.sleep(0.01)
    raise RuntimeError(f"execution {count} did not finish within {ACTION_TIMEOUT:g}s")


async def _first_action(directory: Path) -> list[Action]:
    fake = TimedKubernetes()
    fake.store.create(DEPLOYMENTS, NAMESPACE, make_deployment(DEPLOYMENT, 0))
    template = _payload_template("BenchScale")
    port = _free_port()
    actions: list[Action] = []
    async with fake.serving() as kubernetes_url:
        config = _write_config(directory, port, "armed", kubernetes_url)
        async with (
            _running_srd(config, port, directory / "srd-armed.log") as srd,
            aiohttp.ClientSession() as session,
        ):
            url = f"{srd.base_url}/alertmanager"
            for index in range(ACTIONS):
                before = len(fake.scale_requests)
                wall = time.time()
                sent = time.perf_counter()
                async with session.post(url, data=_body(template, index), headers=AUTH) as reply:
                    await reply.read()
                    assert reply.status == 200, f"webhook answered {reply.status}"
                answered = time.perf_counter() - sent
                first, first_wall = await _wait_first_scale(fake, before, srd)
                detail = await _finished(session, srd.base_url, index + 1)
                states = {s["state"]: s["at"] for s in detail["states"]}
                actions.append(
                    Action(
                        latency=first - sent,
                        answered=answered,
                        to_planned=detail["created_at"] - wall,
                        to_running=states["running"] - detail["created_at"],
                        to_scale=first_wall - states["running"],
                    )
                )
                # Back to 0 replicas, so every execution really scales (GET, PATCH, rollout).
                fake.store.patch(DEPLOYMENTS, NAMESPACE, DEPLOYMENT, {"spec": {"replicas": 0}})
    return actions


# -- both


async def _run_async(directory: Path) -> tuple[dict[str, Any], list[Action]]:
    throughput = await _throughput(directory)
    throughput["bare"] = await _bare(directory)
    actions = await _first_action(directory)
    return throughput, actions


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="srd-bench-webhook-") as tmp, _client_cores():
        throughput, actions = asyncio.run(_run_async(Path(tmp)))
    flood: Flood = throughput["flood"]
    bare: Flood = throughput["bare"]
    rate = flood.sent / flood.elapsed
    bare_rate = bare.sent / bare.elapsed
    p99 = _p99(flood.ok_latencies) if len(flood.ok_latencies) > 1 else float("nan")
    accepted = len(flood.ok_latencies) / flood.elapsed
    journaled = len(flood.ok_latencies) / flood.journaled_after
    print(
        f"webhook: srd run (observe, bearer auth, pinned to 1 core) on loopback, "
        f"{CONNECTIONS} keep-alive clients, distinct unmatched alerts: {flood.sent} requests "
        f"in {flood.elapsed:.1f} s = {rate:.0f} req/s ({len(flood.ok_latencies)} 2xx, "
        f"{flood.back_pressure} 503 back-pressure, 0 errors); 2xx latency p50 "
        f"{statistics.median(flood.ok_latencies) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms "
        f"(all answers p99 {_p99(flood.latencies) * 1e3:.2f} ms); {accepted:.0f} alerts/s "
        f"accepted, {journaled:.0f} alerts/s journaled (all in the journal "
        f"{flood.journaled_after - flood.elapsed:.2f} s after the last answer); CPU busy: srd "
        f"{flood.server_cpu / flood.elapsed:.0%}, client {flood.client_cpu / flood.elapsed:.0%}"
    )
    print(
        f"webhook_bare: a bare aiohttp JSON handler on the same core, same client and payloads: "
        f"{bare_rate:.0f} req/s, p99 {_p99(bare.ok_latencies) * 1e3:.2f} ms; srd with durable "
        f"acknowledgement answers {rate / bare_rate:.2f} of that; acknowledged but not in the "
        f"journal at the last answer: {throughput['lost']}"
    )

    def ms(pick: Callable[[Action], float]) -> str:
        values = [pick(a) for a in actions]
        return f"{statistics.median(values) * 1e3:.1f}/{_p99(values) * 1e3:.1f}"

    first_p99 = _p99([a.latency for a in actions])
    print(
        f"webhook_to_first_action: srd run (armed, one scale_deployment step) on the fake "
        f"Kubernetes API, {len(actions)} distinct alerts one at a time: first /scale request "
        f"p50/p99 {ms(lambda a: a.latency)} ms; split p50/p99 ms: webhook answered "
        f"{ms(lambda a: a.answered)}, POST->execution row {ms(lambda a: a.to_planned)} "
        f"(receipt write), row->running {ms(lambda a: a.to_running)} (planned fsync, guards' "
        f"history read, running), running->/scale {ms(lambda a: a.to_scale)} (running fsync, "
        f"actuator snapshot)"
    )
    return {
        "webhook_requests_per_second": round(rate, 1),
        "webhook_p99_ms": round(p99 * 1e3, 3),
        "webhook_503_count": float(flood.back_pressure),
        "webhook_accepted_per_second": round(accepted, 1),
        "webhook_journaled_per_second": round(journaled, 1),
        "webhook_bare_requests_per_second": round(bare_rate, 1),
        "webhook_ratio_to_bare": round(rate / bare_rate, 3),
        "webhook_acknowledged_lost": float(throughput["lost"]),
        "webhook_to_first_action_p99_ms": round(first_p99 * 1e3, 3),
    }


if __name__ == "__main__":
    run()
