"""Fixtures of the failover tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from srd.failover.metrics import FailoverMetrics


@pytest.fixture
def metrics() -> FailoverMetrics:
    """The failover stage's metrics, on a registry of the test's own."""
    return FailoverMetrics(CollectorRegistry())
