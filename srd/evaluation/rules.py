"""The rule-kind interface every evaluable rule implements (SLO tiers, chain health, RPO …).

There is no PromQL parser in srd. A rule kind is a typed object that can both evaluate itself
in-process on a ``SeriesReader`` (the ``SeriesStore``) and render the equivalent PromQL for
export; promtool proves the two agree. New rule kinds (``chainrules.py``, ``recovery.py``)
implement ``AlertRule`` and, when they need recorded series in the export, ``RuleGroup``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from srd.model import LabelSet, label_set, unquote

_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.DOTALL)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


@dataclass(frozen=True)
class Selector:
    """A metric name with exact-match (``=``) and exclusion (``!=``) label matchers.

    This is the only query srd evaluates itself; anything richer stays PromQL, export-only.
    """

    name: str
    equal: LabelSet = ()
    not_equal: LabelSet = ()

    @classmethod
    def parse(cls, text: str) -> Selector:
        """``srd_probe_results_total{target="web",result!="success"}`` → Selector.

        ValueError says what is accepted when ``text`` is anything else (a function, a regex
        matcher, a range)."""
        match = _SELECTOR.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a plain selector such as "
                'metric_total{label="value"} (only = and != matchers)'
            )
        equal: dict[str, str] = {}
        not_equal: dict[str, str] = {}
        body = (match.group(2) or "").strip()
        pos = 0
        while pos < len(body):
            matcher = _MATCHER.match(body, pos)
            if matcher is None or matcher.end() == pos:
                raise ValueError(
                    f'cannot read the label matchers of {text!r}; write label="value" '
                    'or label!="value", separated by commas'
                )
            name, op, value = matcher.groups()
            value = unquote(value)
            (equal if op == "=" else not_equal)[name] = value
            pos = matcher.end()
        return cls(match.group(1), label_set(equal), label_set(not_equal))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k, "") == v for k, v in self.equal) and all(
            labels.get(k, "") != v for k, v in self.not_equal
        )

    def promql(self) -> str:
        matchers = [f'{k}="{_escape(v)}"' for k, v in self.equal]
        matchers += [f'{k}!="{_escape(v)}"' for k, v in self.not_equal]
        return f"{self.name}{{{','.join(matchers)}}}" if matchers else self.name

    def __str__(self) -> str:
        return self.promql()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class SeriesNeed:
    """A selector a rule reads, and the longest range (seconds) it reads it over, so the store
    samples it and keeps enough history."""

    selector: Selector
    range: float


@dataclass(frozen=True)
class RecordingRule:
    """One Prometheus recording rule, for export only."""

    record: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)


Outcome = bool | None
"""An alert condition for one label set: True (met), False (not met), None (no data).

Prometheus has no "no data" result (the series is just absent), so None behaves like False in
the alert state machine; rules use it to report no-data separately (a ``NoData`` alert)."""


class SeriesReader(Protocol):
    """What a rule reads: PromQL's instant and range functions over srd's own series
    (``SeriesStore`` implements it)."""

    def last(self, selector: Selector, at: float, lookback: float = ...) -> dict[LabelSet, float]:
        """The instant vector at ``at``: each series' newest value within the lookback."""

    def increase(self, selector: Selector, at: float, window: float) -> dict[LabelSet, float]:
        """``increase(selector[window])`` at ``at``."""

    def rate(self, selector: Selector, at: float, window: float) -> dict[LabelSet, float]:
        """``rate(selector[window])`` at ``at``, per second."""

    def sum_increase(self, selector: Selector, at: float, window: float) -> float | None:
        """``sum(increase(selector[window]))``: None when absent."""


class AlertRule(Protocol):
    """A Prometheus-style alerting rule srd can evaluate and export.

    Instances of one rule are told apart by the labels ``evaluate`` returns; the alert's labels
    are those plus ``labels`` plus ``alertname``, exactly as Prometheus builds them.
    """

    @property
    def name(self) -> str:
        """The ``alertname``."""

    @property
    def for_(self) -> float:
        """Seconds the condition must hold before the alert fires (0: at once)."""

    @property
    def keep_firing_for(self) -> float:
        """Seconds a firing alert stays firing after its condition clears."""

    @property
    def labels(self) -> Mapping[str, str]:
        """Static labels added to every instance (``severity`` …)."""

    @property
    def annotations(self) -> Mapping[str, str]:
        """Static annotations (no templates: in-process and exported alerts must match)."""

    def expr(self) -> str:
        """The PromQL of the condition, for export."""

    def needs(self) -> Sequence[SeriesNeed]:
        """The series ``evaluate`` reads and over which range."""

    def evaluate(
        self, store: SeriesReader, at: float, firing: Mapping[str, bool]
    ) -> dict[LabelSet, Outcome]:
        """The condition at Unix time ``at`` per label set, computed from ``store``.

        ``firing`` maps the alertnames of rules evaluated earlier in the same group to whether
        any instance of them is firing now; it lets a rule be inhibited by another exactly as
        the exported ``unless ALERTS{…}`` does. Label sets not returned are not met."""


class RuleGroup(Protocol):
    """An ordered group of rules: recording rules first, then alerting rules, as exported.

    Order matters: a rule sees the firing state of the alerting rules before it."""

    @property
    def name(self) -> str: ...

    def recording_rules(self) -> Sequence[RecordingRule]: ...

    def alert_rules(self) -> Sequence[AlertRule]: ...
