"""PromQL SLIs: event counts from a Prometheus server, fed to the in-process SLO engine.

An SLO whose SLI is raw PromQL (a Sloth ``error_query``/``total_query``, an OpenSLO query
that is not a plain selector) cannot be evaluated on srd's own series. ``PromqlSource`` asks
Prometheus, on each poll at time ``t``, for the events of the window since its last good
poll — the SLI's rate queries evaluated *at* ``t``, multiplied by the window's length — and
adds them to ``srd_promql_sli_events_total{slo,kind}``. ``{{.window}}`` is the window, but
never shorter than ``lookback`` (two scrape intervals): ``rate()`` needs two samples in its
range, and a window as short as the scrape interval rarely holds two. A longer range makes
each poll's count a moving average of the recent rate; over many polls the counts still add
up to the events that happened. ``event_slo`` gives the same SLO
with an SLI of plain selectors on those counters, which the engine evaluates like any other
(burn rates, budget, no-data). Export keeps the original SLO: Prometheus runs the raw PromQL.

Queries go through ``srd.probes.promql.PromqlClient``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import structlog

from srd.config.durations import format_duration
from srd.evaluation.rules import Selector
from srd.evaluation.slo import Sli, Slo
from srd.model import label_set
from srd.probes.metrics import ProbeMetrics
from srd.probes.promql import PromqlClient, PromqlError

log = structlog.get_logger("srd.evaluation.promql_sli")

EVENTS_METRIC = ProbeMetrics.PROMQL_SLI_EVENTS + "_total"
MIN_WINDOW = 1.0
"""PromQL durations are whole; a shorter window is left to the next poll."""
MAX_WINDOW = 3600.0
"""After a long outage only the last hour is asked for: one query stays cheap, and the
missing events are no-data, never guessed."""


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

    def __init__(
        self, slo: Slo, client: PromqlClient, metrics: ProbeMetrics, *, lookback: float = 0.0
    ) -> None:
        """``lookback``: the shortest range a query is asked for (seconds), at least two
        scrape intervals of the SLI's series."""
        if slo.sli.total_query is None and slo.sli.total is None:
            raise ValueError(f"SLO {slo.name} has no total query")
        self.slo = slo
        self.client = client
        self.metrics = metrics
        self.lookback = lookback
        self._last: float | None = None
        self._counting = True
        """False while polls yield no data: the warning is logged once when that begins."""
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
        bad_q, total_q = self._queries(format_duration(max(window, math.ceil(self.lookback))))
        try:
            total_rate = await self.client.scalar(total_q, at)
            bad_rate = await self.client.scalar(bad_q, at) if total_rate else 0.0
        except PromqlError as exc:
            return self._no_data(Poll(name, at, window, reason=str(exc)), total_q)
        if total_rate is None:
            self._last = at  # nothing happened that Prometheus knows of: no-data, not zero
            poll = Poll(name, at, window, reason="no series for the total query")
            return self._no_data(poll, total_q)
        if bad_rate is None or math.isnan(bad_rate):
            bad_rate = 0.0  # no bad series while total has events: none were bad
        total, bad = total_rate * window, min(bad_rate, total_rate) * window
        self.metrics.promql_sli_events.labels(name, "total").inc(max(total, 0.0))
        self.metrics.promql_sli_events.labels(name, "bad").inc(max(bad, 0.0))
        self._last = at
        if not self._counting:
            log.info("PromQL SLI counting again", slo=name)
            self._counting = True
        return Poll(name, at, window, bad=bad, total=total)

    def _no_data(self, poll: Poll, query: str) -> Poll:
        # Once per spell of no data: a query that matches nothing is most often a typo or a
        # missing scrape job, which the operator must hear of, but not every poll.
        if self._counting:
            log.warning("PromQL SLI not counted", slo=poll.slo, reason=poll.reason, query=query)
            self._counting = False
        return poll


def event_slo(slo: Slo) -> Slo:
    """``slo`` with its SLI on ``srd_promql_sli_events_total``: what the engine evaluates."""
    sli = Sli(
        total=Selector(EVENTS_METRIC, label_set({"slo": slo.name, "kind": "total"})),
        bad=Selector(EVENTS_METRIC, label_set({"slo": slo.name, "kind": "bad"})),
    )
    return dataclasses.replace(slo, sli=sli)
