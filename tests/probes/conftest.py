"""Fixtures of the probes tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from srd.probes.metrics import ProbeMetrics


@pytest.fixture
def metrics() -> ProbeMetrics:
    """The probe stage's metrics, on a registry of the test's own."""
    return ProbeMetrics(CollectorRegistry())
