"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from srd.evaluation.metrics import EvaluationMetrics


@pytest.fixture
def metrics() -> EvaluationMetrics:
    """The evaluation stage's metrics, on a registry of the test's own."""
    return EvaluationMetrics(CollectorRegistry())
