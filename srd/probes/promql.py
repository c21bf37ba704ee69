"""PromQL SLIs: event counts from a Prometheus server, fed to the in-process SLO engine.

An SLO whose SLI is raw PromQL (a Sloth ``error_query``/``total_query``, an OpenSLO query
that is not a plain selector) cannot be evaluated on srd's own series. ``PromqlSource`` asks
Prometheus, on each poll at time ``t``, for the events of the window since its last good
poll — the SLI's rate queries with ``{{.window}}`` set to that window, evaluated *at* ``t``
and multiplied by its length, so consecutive windows tile time without gaps or overlaps —
and adds them to ``srd_promql_sli_events_total{slo,kind}``. ``event_slo`` gives the same SLO
with an SLI of plain selectors on those counters, which the engine evaluates like any other
(burn rates, budget, no-data). Export keeps the original SLO: Prometheus runs the raw PromQL.

prometheus-api-client is synchronous (requests): every query runs in a worker thread with a
request timeout, and the caller's wait is bounded by the same timeout plus a margin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from srd.config.durations import format_duration
from srd.evaluation.rules import Selector, label_set
from srd.evaluation.slo import Sli, Slo
from srd.probes.metrics import ProbeMetrics

EVENTS_METRIC = ProbeMetrics.PROMQL_SLI_EVENTS + "_total"
MIN_WINDOW = 1.0
"""PromQL durations are whole; a shorter window is left to the next poll."""
MAX_WINDOW = 3600.0
"""After a long outage only the last hour is asked for: one query stays cheap, and the
missing events are no-data, never guessed."""


class PromqlError(Exception):
    """A query failed, timed out or answered something that is not a number."""


class PromqlClient:
    """Instant queries against one Prometheus server, off the event loop, with a timeout."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        # No retries inside the thread: the timeout must bound the whole call.
        self._client = PrometheusConnect(url, retry=Retry(total=0), timeout=math.ceil(timeout))

    async def scalar(self, query: str, at: float | None = None) -> float | None:
        """The query's single value at ``at`` (now when None); None when the result is empty."""
        result = await self.query(query, at)
        if not result:
            return None
        if len(result) > 1:
            raise PromqlError(f"{len(result)} series where one was expected: {query}")
        return result[0][1]

    async def query(self, query: str, at: float | None = None) -> list[tuple[Any, float]]:
        """Instant vector or scalar as (labels, value) pairs."""
        params = {} if at is None else {"time": repr(at)}
        try:
            async with asyncio.timeout(self.timeout + 1):
                raw = await asyncio.to_thread(self._client.custom_query, query, params=params)
        except TimeoutError as exc:
            raise PromqlError(f"timed out after {self.timeout:g}s: {query}") from exc
        except Exception as exc:  # requests and the client raise many kinds: all mean no answer
            raise PromqlError(f"{type(exc).__name__}: {exc}") from exc
        return _values(raw, query)


def _values(raw: Any, query: str) -> list[tuple[Any, float]]:
    try:
        if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
            return [({}, float(raw[1]))]  # a scalar result: [time, "value"]
        return [(label_set(item["metric"]), float(item["value"][1])) for item in raw]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise PromqlError(f"unexpected result for {query}: {raw!r:.200}") from exc


@dataclass(frozen=True)
class Poll:
    """One poll's outcome: events added, or why none were (no-data is a state)."""

    slo: str
    at: float
    window: float
    bad: float | None = None
    total: float | None = None
    reason: str | None = None


class PromqlSource:
    """Counts one PromQL SLO's events from Prometheus into srd's metrics."""

    def __init__(self, slo: Slo, client: PromqlClient, metrics: ProbeMetrics) -> None:
        if slo.sli.total_query is None and slo.sli.total is None:
            raise ValueError(f"SLO {slo.name} has no total query")
        self.slo = slo
        self.client = client
        self.metrics = metrics
        self._last: float | None = None
        # Both counters exist at 0 from the start, so the first events are an increase.
        for kind in ("bad", "total"):
            metrics.promql_sli_events.labels(slo.name, kind)

    def _queries(self, window: str) -> tuple[str, str]:
        """(bad, total) events per second over ``window``, as the export renders them."""
        sli = self.slo.sli
        total = sli.total_rate_promql(window)
        return f"({sli.error_ratio_promql(window)}) * ({total})", total

    async def poll(self, at: float) -> Poll:
        """Count the events in (last good poll, ``at``]. The first poll only starts the clock."""
        name = self.slo.name
        if self._last is None:
            self._last = at
            return Poll(name, at, 0.0, reason="first poll: counting starts now")
        window = min(float(math.floor(at - self._last)), MAX_WINDOW)
        if window < MIN_WINDOW:
            return Poll(name, at, 0.0, reason="less than a second since the last poll")
        bad_q, total_q = self._queries(format_duration(window))
        try:
            total_rate = await self.client.scalar(total_q, at)
            bad_rate = await self.client.scalar(bad_q, at) if total_rate else 0.0
        except PromqlError as exc:
            return Poll(name, at, window, reason=str(exc))
        if total_rate is None:
            self._last = at  # nothing happened that Prometheus knows of: no-data, not zero
            return Poll(name, at, window, reason="no series for the total query")
        if bad_rate is None or math.isnan(bad_rate):
            bad_rate = 0.0  # no bad series while total has events: none were bad
        total, bad = total_rate * window, min(bad_rate, total_rate) * window
        self.metrics.promql_sli_events.labels(name, "total").inc(max(total, 0.0))
        self.metrics.promql_sli_events.labels(name, "bad").inc(max(bad, 0.0))
        self._last = at
        return Poll(name, at, window, bad=bad, total=total)


def event_slo(slo: Slo) -> Slo:
    """``slo`` with its SLI on ``srd_promql_sli_events_total``: what the engine evaluates."""
    sli = Sli(
        total=Selector(EVENTS_METRIC, label_set({"slo": slo.name, "kind": "total"})),
        bad=Selector(EVENTS_METRIC, label_set({"slo": slo.name, "kind": "bad"})),
    )
    return dataclasses.replace(slo, sli=sli)
