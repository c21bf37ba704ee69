"""A bounded in-memory series store with Prometheus-faithful ``increase`` and ``rate``.

At each evaluation tick ``sample`` copies the series rules need from srd's own samples. Each
series keeps every point for ``fine_window`` (the longest alert window) and one point per
``coarse_step`` beyond it, up to the longest range any rule reads (an SLO period): memory per
series is bounded by ``fine_window / tick + period / coarse_step`` whatever the uptime.

``increase``/``rate`` follow ``extrapolatedRate`` of Prometheus 2.42: the range ``[t-w, t]`` is
closed on both ends, times are whole milliseconds, counter resets add the value before the
reset, and the result is extrapolated towards the range boundaries (by at most half the average
sample spacing when the data starts or ends far from them, and never below a zero counter).
Resets are detected at ingest on every point and carried in a cumulative "adjusted" value, so
thinning old points never loses a reset; over the coarse part only the sample count (and hence
the extrapolation) is approximate, by at most one coarse step. Time is always a parameter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from srd.evaluation.rules import Selector, SeriesNeed
from srd.model import LabelSet, Sample, label_set

SamplesSource = Callable[[], Iterable[Sample]]
"""The current value of every series srd exports, as plain samples."""

LOOKBACK_SECONDS = 300.0
"""Prometheus' default lookback for instant selectors: a gauge older than this is absent."""


@dataclass(frozen=True, slots=True)
class Point:
    t: int
    """Milliseconds since the epoch, as Prometheus stores them."""
    value: float
    adjusted: float
    """``value`` plus every value lost to an earlier counter reset."""


@dataclass
class _Series:
    fine: deque[Point] = field(default_factory=deque)
    coarse: deque[Point] = field(default_factory=deque)
    reset_offset: float = 0.0

    def newest(self) -> Point | None:
        return self.fine[-1] if self.fine else (self.coarse[-1] if self.coarse else None)

    def points(self) -> Iterable[Point]:
        yield from self.coarse
        yield from self.fine


def to_ms(at: float) -> int:
    return round(at * 1000)


class SeriesStore:
    """Series by (name, labels), sampled from srd's own samples or ingested directly.

    ``fine_window``: seconds kept at full resolution (the longest alert window).
    ``coarse_step``: spacing, seconds, of the points kept beyond it.
    """

    def __init__(self, *, fine_window: float = 3 * 86400.0, coarse_step: float = 300.0) -> None:
        self._fine_ms = to_ms(fine_window)
        self._coarse_ms = to_ms(coarse_step)
        self._keep_ms: dict[str, int] = {}
        self._selectors: dict[str, list[Selector]] = {}
        self._series: dict[str, dict[LabelSet, _Series]] = {}

    def watch(self, needs: Iterable[SeriesNeed]) -> None:
        """Sample these selectors from now on and keep each name's longest range."""
        for need in needs:
            name = need.selector.name
            self._selectors.setdefault(name, [])
            if need.selector not in self._selectors[name]:
                self._selectors[name].append(need.selector)
            # One lookback beyond the range, so instant reads at the range start still work.
            keep = to_ms(need.range + LOOKBACK_SECONDS)
            self._keep_ms[name] = max(self._keep_ms.get(name, 0), keep)

    def sample(self, samples: Iterable[Sample], at: float) -> None:
        """Copy the watched series' values from ``samples`` as points at ``at``."""
        for sample in samples:
            selectors = self._selectors.get(sample.name)
            if selectors:
                labels = dict(sample.labels)
                if any(s.matches(labels) for s in selectors):
                    self.ingest(sample.name, labels, at, sample.value)
        self._forget_vanished(to_ms(at))

    def ingest(self, name: str, labels: Mapping[str, str], at: float, value: float) -> None:
        """Add one point. Points must come in time order per series; an older one is ignored."""
        series = self._series.setdefault(name, {}).setdefault(label_set(labels), _Series())
        t = to_ms(at)
        newest = series.newest()
        if newest is not None:
            if t <= newest.t:
                return
            if value < newest.value:
                series.reset_offset += newest.value
        series.fine.append(Point(t, value, value + series.reset_offset))
        self._thin(series, t, self._keep_ms.get(name, self._fine_ms))

    def _thin(self, series: _Series, now: int, keep: int) -> None:
        horizon = now - keep
        while series.fine and series.fine[0].t < now - self._fine_ms:
            point = series.fine.popleft()
            if point.t >= horizon and (
                not series.coarse or point.t - series.coarse[-1].t >= self._coarse_ms
            ):
                series.coarse.append(point)
        while series.coarse and series.coarse[0].t < horizon:
            series.coarse.popleft()
        while series.fine and series.fine[0].t < horizon:
            series.fine.popleft()

    def _forget_vanished(self, now: int) -> None:
        for name, by_labels in self._series.items():
            keep = self._keep_ms.get(name, self._fine_ms)
            gone = [k for k, s in by_labels.items() if (p := s.newest()) and p.t < now - keep]
            for key in gone:
                del by_labels[key]

    def point_count(self) -> int:
        """Points held over all series (for tests and memory checks)."""
        return sum(len(s.fine) + len(s.coarse) for by in self._series.values() for s in by.values())

    def range(self, selector: Selector, at: float, window: float) -> dict[LabelSet, list[Point]]:
        """Points of each matching series in ``[at - window, at]`` (both ends included)."""
        end = to_ms(at)
        start = end - to_ms(window)
        out: dict[LabelSet, list[Point]] = {}
        for labels, series in self._series.get(selector.name, {}).items():
            if selector.matches(dict(labels)):
                points = [p for p in series.points() if start <= p.t <= end]
                if points:
                    out[labels] = points
        return out

    def last(
        self, selector: Selector, at: float, lookback: float = LOOKBACK_SECONDS
    ) -> dict[LabelSet, float]:
        """The instant vector at ``at``: each series' newest value within the lookback."""
        return {
            labels: points[-1].value
            for labels, points in self.range(selector, at, lookback).items()
        }

    def increase(self, selector: Selector, at: float, window: float) -> dict[LabelSet, float]:
        """``increase(selector[window])`` at ``at``; series with < 2 points are absent."""
        return self._extrapolated(selector, at, window, is_rate=False)

    def rate(self, selector: Selector, at: float, window: float) -> dict[LabelSet, float]:
        """``rate(selector[window])`` at ``at``, per second."""
        return self._extrapolated(selector, at, window, is_rate=True)

    def sum_increase(self, selector: Selector, at: float, window: float) -> float | None:
        """``sum(increase(selector[window]))``: None when no series has two points (absent)."""
        values = self.increase(selector, at, window)
        return sum(values.values()) if values else None

    def _extrapolated(
        self, selector: Selector, at: float, window: float, *, is_rate: bool
    ) -> dict[LabelSet, float]:
        end = to_ms(at)
        start = end - to_ms(window)
        out = {}
        for labels, points in self.range(selector, at, window).items():
            value = extrapolated_increase(points, start, end)
            if value is not None:
                out[labels] = value / window if is_rate else value
        return out


def extrapolated_increase(points: list[Point], start: int, end: int) -> float | None:
    """Prometheus 2.42 ``extrapolatedRate`` for a counter, before the division by the range."""
    if len(points) < 2:
        return None
    first, last = points[0], points[-1]
    result = last.adjusted - first.adjusted
    duration_to_start = (first.t - start) / 1000
    duration_to_end = (end - last.t) / 1000
    sampled = (last.t - first.t) / 1000
    average_spacing = sampled / (len(points) - 1)
    if result > 0 and first.value >= 0:
        # A counter cannot go below zero: do not extrapolate past the point it would be 0.
        duration_to_zero = sampled * (first.value / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_spacing * 1.1
    interval = sampled
    interval += duration_to_start if duration_to_start < threshold else average_spacing / 2
    interval += duration_to_end if duration_to_end < threshold else average_spacing / 2
    return result * (interval / sampled)
