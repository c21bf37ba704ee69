from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from srd.evaluation.engine import Engine
from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.rules import Selector
from srd.evaluation.slo import Sli, Slo

TOTAL = Selector.parse('r_total{t="w"}')
BAD = Selector.parse('r_total{t="w",result="failure"}')


def slo(**kwargs: object) -> Slo:
    base: dict[str, object] = {
        "name": "web",
        "service": "web",
        "objective": 0.999,
        "period": 30 * 86400.0,
        "sli": Sli(total=TOTAL, bad=BAD),
    }
    return Slo(**{**base, **kwargs})  # type: ignore[arg-type]


def run(engine: Engine, minutes: int, good: int, bad: int, start: int = 0) -> list[str]:
    firing: list[str] = []
    for m in range(start, start + minutes + 1):
        engine.store.ingest("r_total", {"t": "w", "result": "success"}, m * 60.0, good * m)
        engine.store.ingest("r_total", {"t": "w", "result": "failure"}, m * 60.0, bad * m)
        engine.evaluate(m * 60.0)
        firing = sorted(a.name for a in engine.states.alerts() if a.state == "firing")
    return firing


def test_fastest_tier_fires_and_inhibits_the_slower_ones(metrics: EvaluationMetrics) -> None:
    engine = Engine([slo()], metrics)
    assert run(engine, 10, 50, 50) == ["WebBurnRate1h"]


def test_min_events_guard_keeps_a_low_traffic_slo_quiet(metrics: EvaluationMetrics) -> None:
    engine = Engine([slo(min_events=1000)], metrics)
    assert run(engine, 10, 1, 1) == []


def test_no_data_is_its_own_state_and_alerts_only_when_asked(metrics: EvaluationMetrics) -> None:
    quiet = Engine([slo()], metrics)
    assert run(quiet, 10, 0, 0) == []
    assert quiet.slos[0].budget_remaining(quiet.store, 600) is None
    assert metrics.remaining_budget("web") is None
    loud = Engine(
        [slo(alert_when_no_data=True)],
        EvaluationMetrics(CollectorRegistry()),
    )
    assert run(loud, 10, 0, 0) == ["WebNoData"]


def test_remaining_budget_is_traffic_weighted(metrics: EvaluationMetrics) -> None:
    engine = Engine([slo()], metrics)
    run(engine, 60, 9995, 5)  # 0.05 % errors: half the 0.1 % budget
    assert engine.slos[0].budget_remaining(engine.store, 3600) == pytest.approx(0.5)
    sample = metrics.registry.get_sample_value
    assert sample("srd_slo_error_budget_remaining_ratio", {"slo": "web"}) == pytest.approx(0.5)
    assert sample("srd_slo_burn_rate", {"slo": "web", "window": "1h"}) == pytest.approx(0.5)
    assert metrics.remaining_budget("web") == pytest.approx(0.5)  # what the budget gate reads


def test_engine_state_survives_restart(tmp_path: Path) -> None:
    first = Engine([slo()], EvaluationMetrics(CollectorRegistry()), state_dir=tmp_path)
    assert run(first, 10, 50, 50) == ["WebBurnRate1h"]
    second = Engine([slo()], EvaluationMetrics(CollectorRegistry()), state_dir=tmp_path)
    second.evaluate(660.0)  # no history yet: no data, so the restored alert resolves
    (restored,) = second.states.alerts()
    assert (restored.name, restored.fired_at, restored.state) == ("WebBurnRate1h", 60.0, "resolved")
