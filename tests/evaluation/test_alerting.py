from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from srd.evaluation.alerting import AlertStates
from srd.evaluation.rules import Outcome, SeriesNeed, SeriesReader
from srd.model import LabelSet


@dataclass
class Rule:
    name: str = "Down"
    for_: float = 300.0
    keep_firing_for: float = 0.0
    labels: Mapping[str, str] = field(default_factory=lambda: {"severity": "page"})
    annotations: Mapping[str, str] = field(default_factory=dict)

    def expr(self) -> str:
        return "up == 0"

    def needs(self) -> Sequence[SeriesNeed]:
        return ()

    def evaluate(
        self, store: SeriesReader, at: float, firing: Mapping[str, bool]
    ) -> dict[LabelSet, Outcome]:
        return {}  # the tests drive AlertStates.update with results directly


def step(states: AlertStates, rule: Rule, at: float, met: bool) -> list[str]:
    results: dict[LabelSet, Outcome] = {(("job", "a"),): met}
    return [a.state for a in states.update(rule, results, at)]


def test_alert_is_pending_first_and_fires_once_for_has_elapsed() -> None:
    states, rule = AlertStates(), Rule()
    assert step(states, rule, 0, True) == ["pending"]
    assert step(states, rule, 240, True) == []
    assert step(states, rule, 300, True) == ["firing"]


def test_alert_without_for_fires_at_once_and_resolved_is_kept_15_minutes() -> None:
    states, rule = AlertStates(), Rule(for_=0)
    assert step(states, rule, 0, True) == ["firing"]
    assert step(states, rule, 60, False) == ["resolved"]
    assert [a.state for a in states.alerts()] == ["resolved"]
    step(states, rule, 60 + 901, False)
    assert states.alerts() == []


def test_keep_firing_for_holds_the_alert_after_the_condition_clears() -> None:
    states, rule = AlertStates(), Rule(for_=0, keep_firing_for=120)
    step(states, rule, 0, True)
    assert step(states, rule, 60, False) == []
    assert states.is_firing("Down")
    assert step(states, rule, 180, False) == ["resolved"]


def test_pending_alert_that_clears_is_dropped_without_a_transition() -> None:
    states, rule = AlertStates(), Rule()
    step(states, rule, 0, True)
    assert step(states, rule, 60, False) == []
    assert states.alerts() == []


def test_alert_state_survives_a_restart_so_for_is_not_restarted(tmp_path: Path) -> None:
    path, rule = tmp_path / "alerts.json", Rule()
    before = AlertStates(path)
    step(before, rule, 0, True)
    step(before, rule, 240, True)
    before.save(240)
    after = AlertStates(path)
    after.load(250)
    assert step(after, rule, 300, True) == ["firing"]


def test_stale_or_corrupt_state_starts_over(tmp_path: Path) -> None:
    path, rule = tmp_path / "alerts.json", Rule()
    before = AlertStates(path)
    step(before, rule, 0, True)
    before.save(0)
    late = AlertStates(path)
    late.load(2 * 3600)
    assert late.alerts() == []
    path.write_text("{not json", encoding="utf-8")
    broken = AlertStates(path)
    broken.load(10)
    assert broken.alerts() == []
