"""The daemon's metrics: every stage's group on one registry, and the plain samples evaluation
is fed from it."""

from __future__ import annotations

import time

from prometheus_client.metrics import MetricWrapperBase

from srd.evaluation.chainrules import AlertGroup, Compare, ThresholdAlert
from srd.evaluation.engine import Engine
from srd.model import Observation
from srd.probes.metrics import ProbeMetrics
from srd.runtime import DaemonMetrics


def test_each_group_names_every_metric_it_exports_by_a_constant() -> None:
    metrics = DaemonMetrics()
    groups: tuple[object, ...] = (
        metrics.runtime,
        metrics.supervisor,
        metrics.probes,
        metrics.evaluation,
        metrics.failover,
    )
    for group in groups:
        constants = {
            value
            for key, value in vars(type(group)).items()
            if key.isupper() and isinstance(value, str)
        }
        # prometheus-client keeps the name private; a test of the names may read it.
        created = {m._name for m in vars(group).values() if isinstance(m, MetricWrapperBase)}
        assert constants == created, type(group).__name__


def test_evaluation_sees_what_a_probe_recorded_through_the_daemons_samples() -> None:
    metrics = DaemonMetrics()
    down = ThresholdAlert("TargetDown", Compare(ProbeMetrics.UP, "<", 1), 0.0, "page", "s", "d")
    engine = Engine(
        [],
        metrics.evaluation,
        samples=metrics.samples,
        extra_groups=[AlertGroup("targets", (down,))],
    )
    now = time.time()
    metrics.probes.record(Observation("http", "web", now, 0.01, up=True))
    assert engine.evaluate(now) == []
    metrics.probes.record(Observation("http", "web", now + 1, 0.01, up=False, reason="refused"))
    [alert] = engine.evaluate(now + 1)
    assert (alert.name, alert.state, dict(alert.labels)["target"]) == (
        "TargetDown",
        "firing",
        "web",
    )
    alerts = metrics.registry.get_sample_value
    assert alerts("srd_alert_state", {"alertname": "TargetDown", "state": "firing"}) == 1
