"""Fixtures of the runtime tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from srd.supervisor import SupervisorMetrics


@pytest.fixture
def metrics() -> SupervisorMetrics:
    """The supervisor's metrics, on a registry of the test's own."""
    return SupervisorMetrics(CollectorRegistry())
