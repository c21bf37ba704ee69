"""One evaluation tick: take the current samples, evaluate every rule group in order, update alert
state and metrics, persist the state when it changed, and return the alert transitions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from srd.evaluation.alerting import AlertStates
from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.rules import RuleGroup
from srd.evaluation.series import SamplesSource, SeriesStore
from srd.evaluation.slo import Slo, SloGroup
from srd.model import Alert

STATE_FILE = "alerts.json"


class Schedule:
    """Evaluation timestamps on a fixed grid, ``first + k × interval``, whatever the lag of the
    run that asks: as Prometheus evaluates a group at its scheduled time, so a window reads
    the same samples every tick and a ``for`` counts whole intervals."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._first: float | None = None
        self._last: float | None = None

    def at(self, now: float) -> float:
        """The tick a run starting at Unix time ``now`` belongs to (the latest one not after
        ``now``); never the same tick twice, even when the wall clock steps back."""
        if self._first is None:
            self._first = now
        tick = self._first + math.floor((now - self._first) / self.interval) * self.interval
        if self._last is not None and tick <= self._last:
            tick = self._last + self.interval
        self._last = tick
        return tick


class Engine:
    """Evaluates SLO groups and any extra groups (chain health, recovery) on srd's own series.

    ``samples`` gives the current values of the series srd exports at each tick (the runtime
    reads them off its registry); without it the store is fed by ``store.ingest`` (tests,
    replays).
    """

    def __init__(
        self,
        slos: Sequence[Slo],
        metrics: EvaluationMetrics,
        *,
        samples: SamplesSource | None = None,
        state_dir: Path | None = None,
        extra_groups: Sequence[RuleGroup] = (),
        coarse_step: float = 300.0,
    ) -> None:
        self.slos = list(slos)
        self.groups: list[RuleGroup] = [SloGroup(slo) for slo in self.slos]
        self.groups += extra_groups
        rules = [rule for group in self.groups for rule in group.alert_rules()]
        needs = [need for rule in rules for need in rule.needs()]
        alert_windows = [t.long_window for slo in self.slos for t in slo.tiers if t.enabled]
        self.store = SeriesStore(
            fine_window=max(alert_windows, default=3600.0), coarse_step=coarse_step
        )
        self.store.watch(needs)
        self.metrics = metrics
        self.states = AlertStates(state_dir / STATE_FILE if state_dir else None)
        self._names = {rule.name for rule in rules}
        self._samples = samples
        self._loaded = False

    def evaluate(self, at: float) -> list[Alert]:
        """Run one evaluation at Unix time ``at``; return the alerts that changed state."""
        if not self._loaded:
            self.states.load(at)
            self.states.retain(self._names)
            self._loaded = True
        if self._samples is not None:
            self.store.sample(self._samples(), at)
        transitions: list[Alert] = []
        for group in self.groups:
            firing: dict[str, bool] = {}
            for rule in group.alert_rules():
                results = rule.evaluate(self.store, at, firing)
                transitions += self.states.update(rule, results, at)
                firing[rule.name] = self.states.is_firing(rule.name)
        self.states.save(at)
        for (name, state), count in self.states.counts().items():
            self.metrics.alert_state.labels(name, state).set(count)
        for slo in self.slos:
            slo.report(self.store, at, self.metrics)
        return transitions
