"""srd's own metrics, on a registry of its own (never the global one: tests build their own)."""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from srd import __version__
from srd.model import Observation

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric srd exports, created on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        self.build_info = Gauge(
            "srd_build_info",
            "srd version and Python it runs on; always 1.",
            ["version", "python"],
            registry=reg,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.task_restarts = Counter(
            "srd_task_restarts",
            "Restarts of supervised tasks after a crash or an early exit.",
            ["task"],
            registry=reg,
        )
        self.config_reloads = Counter(
            "srd_config_reloads",
            "Config reloads by result (success, error).",
            ["result"],
            registry=reg,
        )
        self.config_last_reload_success = Gauge(
            "srd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load or reload that succeeded.",
            registry=reg,
        )
        self.probe_up = Gauge(
            "srd_probe_up",
            "1 when the last probe of a target succeeded, 0 otherwise.",
            ["probe", "target"],
            registry=reg,
        )
        self.probe_results = Counter(
            "srd_probe_results",
            "Probes by outcome (success, failure): the event counts availability SLIs use.",
            ["probe", "target", "result"],
            registry=reg,
        )
        self.probe_duration = Histogram(
            "srd_probe_duration_seconds",
            "Duration of probes, by probe kind.",
            ["probe"],
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.chain_best_block = Gauge(
            "srd_chain_best_block",
            "Best block number a node reports.",
            ["chain", "node"],
            registry=reg,
        )
        self.chain_finalized_block = Gauge(
            "srd_chain_finalized_block",
            "Finalized block number a node reports.",
            ["chain", "node"],
            registry=reg,
        )

    def record(self, obs: Observation) -> None:
        """Export one observation. A failed probe keeps the last chain numbers out of date
        rather than zeroing them: ``srd_probe_up`` says the data is stale."""
        self.probe_up.labels(obs.probe, obs.target).set(1 if obs.up else 0)
        # Both outcomes exist from the first probe, so a bad/total ratio is 0, not absent.
        success = self.probe_results.labels(obs.probe, obs.target, "success")
        failure = self.probe_results.labels(obs.probe, obs.target, "failure")
        (success if obs.up else failure).inc()
        self.probe_duration.labels(obs.probe).observe(obs.duration)
        if obs.chain is not None:
            self.chain_best_block.labels(obs.chain.chain, obs.target).set(obs.chain.best)
            self.chain_finalized_block.labels(obs.chain.chain, obs.target).set(obs.chain.finalized)
