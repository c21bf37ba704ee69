"""SLOs as rule groups: Sloth-compatible recording rules and one burn-rate alert per tier.

Every input format (srd's own, OpenSLO v1, Sloth) becomes an ``Slo``. An SLO whose SLI is made
of plain selectors evaluates in-process; one given as raw PromQL (a Sloth ``error_query``, an
OpenSLO query that is not a plain selector) is **export-only**: srd writes its rules for
Prometheus but cannot judge it itself (``Slo.evaluable`` is False and its alerts never fire
in-process).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from srd.config.durations import format_duration
from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.rules import (
    AlertRule,
    Outcome,
    RecordingRule,
    Selector,
    SeriesNeed,
    SeriesReader,
)
from srd.model import LabelSet

HOUR = 3600.0
DAY = 86400.0
CALENDAR_MONTH = 30 * DAY
"""Length used for a calendar month where one length is needed: burn-rate factors and the
exported period range (PromQL has no calendar ranges; in-process the budget uses the month)."""


@dataclass(frozen=True)
class Tier:
    """One multiwindow burn-rate alert: fires when ``budget_percent`` of the period's budget
    would be spent within ``long_window`` at the current rate, on both windows."""

    budget_percent: float
    long_window: float
    short_window: float
    severity: str
    enabled: bool = True
    for_: float = 0.0

    def factor(self, period: float) -> float:
        return self.budget_percent * (period / HOUR) / 100 / (self.long_window / HOUR)


DEFAULT_TIERS = (
    Tier(2, HOUR, 5 * 60, "page"),
    Tier(5, 6 * HOUR, 30 * 60, "page"),
    Tier(10, DAY, 2 * HOUR, "ticket"),
    Tier(10, 3 * DAY, 6 * HOUR, "ticket"),
)
"""The four tiers of the SRE workbook (REFERENCE.md §5); factors follow from the period."""


@dataclass(frozen=True)
class Sli:
    """Error ratio as events. In-process when ``total`` and one of ``bad``/``good`` are
    selectors; otherwise ``error_query``/``total_query`` are PromQL with ``{{.window}}``."""

    total: Selector | None = None
    bad: Selector | None = None
    good: Selector | None = None
    error_query: str | None = None
    total_query: str | None = None

    @property
    def evaluable(self) -> bool:
        return self.total is not None and (self.bad is not None or self.good is not None)

    def selectors(self) -> list[Selector]:
        return [s for s in (self.total, self.bad, self.good) if s is not None]

    def total_rate_promql(self, window: str) -> str:
        if self.total is not None:
            return f"sum(rate({self.total.promql()}[{window}]))"
        assert self.total_query is not None  # noqa: S101 - the loaders guarantee one of them
        return _window(self.total_query, window)

    def error_ratio_promql(self, window: str) -> str:
        total = self.total_rate_promql(window)
        if self.bad is not None:
            return f"(sum(rate({self.bad.promql()}[{window}]))) / ({total})"
        if self.good is not None:
            return f"1 - ((sum(rate({self.good.promql()}[{window}]))) / ({total}))"
        assert self.error_query is not None  # noqa: S101 - the loaders guarantee one of them
        return f"({_window(self.error_query, window)}) / ({total})"

    def error_ratio(self, store: SeriesReader, at: float, window: float) -> float | None:
        """The recording rule's value in-process; None where Prometheus has no value or NaN
        (no series, or no events at all: no-data is neither good nor bad)."""
        if self.total is None:
            return None
        total = _sum_rate(store, self.total, at, window)
        part_selector = self.bad or self.good
        part = _sum_rate(store, part_selector, at, window) if part_selector else None
        if total is None or part is None or total == 0:
            return None
        return part / total if self.bad is not None else 1 - part / total


def _sum_rate(store: SeriesReader, selector: Selector, at: float, window: float) -> float | None:
    rates = store.rate(selector, at, window)
    # Prometheus sums in label order; keep it so results match to the last bit.
    return sum(value for _, value in sorted(rates.items())) if rates else None


_WINDOW = re.compile(r"\{\{\s*\.window\s*\}\}")


def _window(query: str, window: str) -> str:
    return _WINDOW.sub(window, query)


@dataclass(frozen=True)
class Slo:
    name: str
    service: str
    objective: float
    """A ratio, 0.999 for 99.9 %."""
    period: float
    """Seconds of the rolling period (30 days for a calendar month)."""
    sli: Sli
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    timezone: str | None = None
    """Set for a calendar-month period: the budget resets at the month start in this zone."""
    min_events: float = 0
    alert_when_no_data: bool = False
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def evaluable(self) -> bool:
        return self.sli.evaluable

    @property
    def alert_prefix(self) -> str:
        return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", self.name))

    @property
    def sloth_labels(self) -> dict[str, str]:
        return {
            "sloth_id": f"{self.service}-{self.name}",
            "sloth_service": self.service,
            "sloth_slo": self.name,
        }

    @property
    def sloth_matchers(self) -> str:
        """``sloth_labels`` as PromQL matchers, sorted: ``sloth_id="…",sloth_service="…",…``."""
        return ",".join(f'{k}="{v}"' for k, v in sorted(self.sloth_labels.items()))

    def windows(self) -> list[float]:
        """Every window a ratio is recorded for: the tiers' windows, then the period."""
        found = {w for t in self.tiers if t.enabled for w in (t.short_window, t.long_window)}
        return [*sorted(found), self.period]

    def period_start(self, at: float) -> float:
        if self.timezone is None:
            return at - self.period
        now = datetime.fromtimestamp(at, ZoneInfo(self.timezone))
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()

    def budget_remaining(self, store: SeriesReader, at: float) -> float | None:
        """Exact, traffic-weighted: 1 − bad / ((1 − objective) × total) over the period."""
        ratio = self.sli.error_ratio(store, at, at - self.period_start(at))
        return None if ratio is None else 1 - ratio / (1 - self.objective)

    def report(self, store: SeriesReader, at: float, metrics: EvaluationMetrics) -> None:
        """Export the remaining budget and the burn rate of every window (absent: no data)."""
        if not self.evaluable:
            return
        metrics.report_budget(self.name, self.budget_remaining(store, at))
        for window in self.windows():
            ratio = self.sli.error_ratio(store, at, window)
            rate = None if ratio is None else ratio / (1 - self.objective)
            metrics.report_burn_rate(self.name, format_duration(window), rate)

    def needs(self) -> list[SeriesNeed]:
        longest = max(self.windows())
        return [SeriesNeed(s, longest) for s in self.sli.selectors()]


def record_name(window: float) -> str:
    return f"slo:sli_error:ratio_rate{format_duration(window)}"


@dataclass(frozen=True)
class _SloAlert:
    """An alert rule of one SLO: it reads the SLO's series."""

    slo: Slo

    def needs(self) -> Sequence[SeriesNeed]:
        return self.slo.needs()


@dataclass(frozen=True)
class BurnRateAlert(_SloAlert):
    """One tier of one SLO, inhibited while any faster enabled tier of the same SLO fires."""

    tier: Tier
    inhibited_by: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.slo.alert_prefix}BurnRate{format_duration(self.tier.long_window)}"

    @property
    def for_(self) -> float:
        return self.tier.for_

    @property
    def keep_firing_for(self) -> float:
        return 0.0

    @property
    def labels(self) -> Mapping[str, str]:
        return {
            **self.slo.labels,
            **self.slo.sloth_labels,
            "severity": self.tier.severity,
            "sloth_severity": self.tier.severity,
        }

    @property
    def annotations(self) -> Mapping[str, str]:
        budget, long = self.tier.budget_percent, format_duration(self.tier.long_window)
        return {
            "summary": f"{self.slo.name}: error budget burning fast",
            "description": f"At this rate {budget:g}% of the {self.slo.name} error budget is "
            f"spent within {long} (burn rate above {self.factor:g}).",
        }

    @property
    def factor(self) -> float:
        return self.tier.factor(self.slo.period)

    @property
    def threshold(self) -> float:
        return self.factor * (1 - self.slo.objective)

    def expr(self) -> str:
        match = self.slo.sloth_matchers
        windows = (self.tier.short_window, self.tier.long_window)
        both = "\nand\n".join(
            f"max without (sloth_window) ({record_name(w)}{{{match}}} > {self.threshold!r})"
            for w in windows
        )
        expr = f"(\n{both}\n)"
        if self.slo.min_events > 0:
            long = format_duration(self.tier.long_window)
            total = f"{self.slo.sli.total_rate_promql(long)} * {self.tier.long_window:g}"
            if self.slo.sli.total is not None:
                total = f"sum(increase({self.slo.sli.total.promql()}[{long}]))"
            expr += f"\nand on() ({total} >= {self.slo.min_events:g})"
        if self.inhibited_by:
            names = "|".join(self.inhibited_by)
            expr += f'\nunless on() ALERTS{{alertname=~"{names}",alertstate="firing"}}'
        return expr

    def evaluate(
        self, store: SeriesReader, at: float, firing: Mapping[str, bool]
    ) -> dict[LabelSet, Outcome]:
        sli = self.slo.sli
        if not self.slo.evaluable or any(firing.get(name) for name in self.inhibited_by):
            return {}
        ratios = [
            sli.error_ratio(store, at, w) for w in (self.tier.short_window, self.tier.long_window)
        ]
        if any(r is None for r in ratios):
            return {(): None}
        if self.slo.min_events > 0 and sli.total is not None:
            seen = store.sum_increase(sli.total, at, self.tier.long_window)
            if seen is None or seen < self.slo.min_events:
                return {(): False}
        return {(): all(r is not None and r > self.threshold for r in ratios)}


@dataclass(frozen=True)
class NoDataAlert(_SloAlert):
    """``<Slo>NoData``: no events at all over the fastest tier's long window (or no series)."""

    @property
    def name(self) -> str:
        return f"{self.slo.alert_prefix}NoData"

    @property
    def window(self) -> float:
        return min((t.long_window for t in self.slo.tiers if t.enabled), default=HOUR)

    # A start or restart has no events for a moment; only a lasting gap is worth a ticket.
    for_ = 600.0
    keep_firing_for = 0.0

    @property
    def labels(self) -> Mapping[str, str]:
        return {**self.slo.labels, **self.slo.sloth_labels, "severity": "ticket"}

    @property
    def annotations(self) -> Mapping[str, str]:
        return {
            "summary": f"{self.slo.name}: no SLI events",
            "description": f"No events for {self.slo.name} in the last "
            f"{format_duration(self.window)}: the SLO cannot be judged.",
        }

    def expr(self) -> str:
        return f"absent(({self.slo.sli.total_rate_promql(format_duration(self.window))}) > 0)"

    def evaluate(
        self, store: SeriesReader, at: float, firing: Mapping[str, bool]
    ) -> dict[LabelSet, Outcome]:
        if self.slo.sli.total is None:
            return {}
        rate = _sum_rate(store, self.slo.sli.total, at, self.window)
        return {(): rate is None or not rate > 0}


@dataclass(frozen=True)
class SloGroup:
    """The rule group of one SLO: recordings, then tier alerts fastest first, then NoData."""

    slo: Slo

    @property
    def name(self) -> str:
        return f"slo-{self.slo.service}-{self.slo.name}"

    def recording_rules(self) -> Sequence[RecordingRule]:
        slo, labels = self.slo, self.slo.sloth_labels
        rules = [
            RecordingRule(
                record_name(w),
                slo.sli.error_ratio_promql(format_duration(w)),
                {**labels, "sloth_window": format_duration(w)},
            )
            for w in slo.windows()
        ]
        match, period = slo.sloth_matchers, record_name(slo.period)
        rules += [
            RecordingRule("slo:objective:ratio", repr(slo.objective), labels),
            RecordingRule("slo:error_budget:ratio", repr(1 - slo.objective), labels),
            RecordingRule(
                "slo:period_error_budget_remaining:ratio",
                f"1 - (max without (sloth_window) ({period}{{{match}}}) / {1 - slo.objective!r})",
                labels,
            ),
        ]
        return rules

    def alert_rules(self) -> Sequence[AlertRule]:
        enabled = sorted((t for t in self.slo.tiers if t.enabled), key=lambda t: t.long_window)
        rules: list[AlertRule] = []
        faster: list[str] = []
        for tier in enabled:
            rule = BurnRateAlert(self.slo, tier, tuple(faster))
            rules.append(rule)
            faster.append(rule.name)
        if self.slo.alert_when_no_data:
            rules.append(NoDataAlert(self.slo))
        return rules
