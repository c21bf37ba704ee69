"""PromQL SLIs against a real Prometheus scraping counters this test controls."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter, start_http_server

from srd.evaluation.engine import Engine
from srd.evaluation.promql_sli import PromqlSource, event_slo
from srd.evaluation.slo import DAY, Sli, Slo
from srd.probes.metrics import ProbeMetrics
from srd.probes.promql import PromqlClient, PromqlError
from srd.runtime import DaemonMetrics
from tests.support import promstack
from tests.support.daemon import free_port

SLO = Slo(
    name="api-availability",
    service="api",
    objective=0.99,
    period=30 * DAY,
    sli=Sli(
        error_query='sum(rate(app_requests_total{code=~"5.."}[{{.window}}]))',
        total_query="sum(rate(app_requests_total[{{.window}}]))",
    ),
)


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[str, Counter]]:
    """An application's /metrics with a request counter by code, on loopback."""
    registry = CollectorRegistry()
    requests = Counter("app_requests", "Requests by code.", ["code"], registry=registry)
    for code in ("200", "500"):
        requests.labels(code)
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, app: tuple[str, Counter]
) -> Iterator[promstack.Prometheus]:
    with promstack.prometheus(tmp_path_factory.mktemp("prom"), {"app": [app[0]]}) as server:
        yield server


async def traffic(requests: Counter, seconds: float, errors_in_ten: int) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        requests.labels("200").inc(10 - errors_in_ten)
        requests.labels("500").inc(errors_in_ten)
        await asyncio.sleep(0.1)


def value(metrics: ProbeMetrics, kind: str) -> float:
    sample = metrics.registry.get_sample_value(
        "srd_promql_sli_events_total", {"slo": SLO.name, "kind": kind}
    )
    return sample or 0.0


async def test_promql_sli_counts_events_from_prometheus_that_the_slo_engine_evaluates(
    prometheus: promstack.Prometheus, app: tuple[str, Counter]
) -> None:
    metrics = DaemonMetrics()
    source = PromqlSource(SLO, PromqlClient(prometheus.url, timeout=5), metrics.probes)
    engine = Engine([event_slo(SLO)], metrics.evaluation, samples=metrics.samples)
    # Polls ask for times Prometheus has scraped past: 2 s behind, as a real poller would lag.
    start = time.time() - 2
    first = await source.poll(start)
    assert first.reason == "first poll: counting starts now"
    engine.evaluate(start)

    await traffic(app[1], 6, errors_in_ten=1)
    await asyncio.sleep(2.5)
    at = time.time() - 2
    second = await source.poll(at)

    assert second.reason is None, second
    assert second.total is not None and second.bad is not None
    assert second.total > 100  # ~100 events a second for most of the window
    assert second.bad / second.total == pytest.approx(0.1, abs=0.01)
    assert value(metrics.probes, "total") == pytest.approx(second.total)
    assert value(metrics.probes, "bad") == pytest.approx(second.bad)
    engine.evaluate(at)
    ratio = event_slo(SLO).sli.error_ratio(engine.store, at, 3600)
    assert ratio == pytest.approx(0.1, abs=0.01)
    # 10 % errors against a 1 % budget: burning at 10× on every window that has data.
    assert metrics.registry.get_sample_value(
        "srd_slo_burn_rate", {"slo": SLO.name, "window": "1h"}
    ) == pytest.approx(10, abs=1)


async def test_polls_as_often_as_prometheus_scrapes_count_over_two_scrape_intervals(
    prometheus: promstack.Prometheus, app: tuple[str, Counter]
) -> None:
    # Prometheus scrapes every second here; srd polls every second too (evaluation.interval
    # equal to the scrape interval), looking back two scrapes.
    metrics = ProbeMetrics(CollectorRegistry())
    client = PromqlClient(prometheus.url, timeout=5)
    source = PromqlSource(SLO, client, metrics, lookback=2.0)
    sending = asyncio.create_task(traffic(app[1], 8, errors_in_ten=1))
    await asyncio.sleep(3)
    at = time.time() - 2
    await source.poll(at)
    polls = []
    for _ in range(4):
        await asyncio.sleep(1)
        at += 1.0
        polls.append(await source.poll(at))
    await sending

    assert [p.reason for p in polls] == [None] * 4, polls
    assert [p.window for p in polls] == [1.0] * 4
    assert all(p.total is not None and p.total > 50 for p in polls)  # ~100 events a second
    total, bad = value(metrics, "total"), value(metrics, "bad")
    assert bad / total == pytest.approx(0.1, abs=0.01)


async def test_no_series_is_no_data_and_counts_nothing(prometheus: promstack.Prometheus) -> None:
    nothing = "sum(rate(nothing_total[{{.window}}]))"
    slo = replace(SLO, name="absent", sli=Sli(error_query=nothing, total_query=nothing))
    metrics = ProbeMetrics(CollectorRegistry())
    source = PromqlSource(slo, PromqlClient(prometheus.url, timeout=5), metrics)
    now = time.time()
    await source.poll(now - 10)
    with structlog.testing.capture_logs() as logged:
        poll = await source.poll(now - 5)
        again = await source.poll(now)
    assert (poll.reason, poll.total) == ("no series for the total query", None)
    assert again.reason == poll.reason
    # Warned once when the no-data began, naming the SLO and the query; not on every poll.
    [warning] = [entry for entry in logged if entry["log_level"] == "warning"]
    assert (warning["event"], warning["slo"]) == ("PromQL SLI not counted", "absent")
    assert warning["reason"] == "no series for the total query"
    assert "nothing_total" in warning["query"]
    assert metrics.registry.get_sample_value(
        "srd_promql_sli_events_total", {"slo": "absent", "kind": "total"}
    ) in (None, 0.0)


async def test_a_bad_query_is_an_error_with_prometheus_reason(
    prometheus: promstack.Prometheus,
) -> None:
    with pytest.raises(PromqlError, match="parse error"):
        await PromqlClient(prometheus.url, timeout=5).query("sum(rate(x[5m])")


async def test_a_hung_server_times_out_without_blocking_the_event_loop() -> None:
    # Listens but never answers: the request hangs until the client's timeout.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            source = PromqlSource(
                SLO, PromqlClient(url, timeout=1), ProbeMetrics(CollectorRegistry())
            )
            await source.poll(time.time() - 10)
            poll = await source.poll(time.time())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert poll.reason is not None and poll.total is None
    assert 0.9 < elapsed < 3.5
    assert ticks > elapsed / 0.05 * 0.5  # the loop kept running while the query waited
