"""srd's own metrics, on a registry of its own (never the global one: tests build their own)."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from srd import __version__
from srd.model import ChainSnapshot, Observation
from srd.probes.stream_metrics import StreamMetrics

if TYPE_CHECKING:  # srd.probes imports probe modules that may import this one
    from srd.evaluation.recovery import Readiness
    from srd.probes.crosscheck import CrossCheck

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BLOCK_TIME_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 18.0, 30.0, 60.0, 120.0)
"""Around the platform's 6 s target, finely; up to the 120 s stall threshold."""
REORG_DEPTH_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 20.0, 50.0, 100.0)


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
        self.schedule_lag = Histogram(
            "srd_schedule_lag_seconds",
            "How late periodic work (polls, evaluations) started against its schedule.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
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
        self.discovered_targets = Gauge(
            "srd_discovered_targets",
            "Targets the last successful discovery round of a source found (after max_targets).",
            ["source"],
            registry=reg,
        )
        self.discovery_failures = Counter(
            "srd_discovery_failures",
            "Discovery rounds of a source that failed; its previous targets were kept.",
            ["source"],
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
        self.chain_exporter_disagreement = Gauge(
            "srd_chain_exporter_disagreement",
            "1 when a node's metrics page (substrate_block_height) disagrees with its RPC "
            "beyond the tolerance.",
            ["chain", "node"],
            registry=reg,
        )
        self.chain_exporter_stale = Gauge(
            "srd_chain_exporter_stale",
            "1 when a node's metrics page stopped advancing while its RPC kept advancing.",
            ["chain", "node"],
            registry=reg,
        )
        self._chain_metrics(reg)
        self._recovery_metrics(reg)
        self._failover_metrics(reg)
        self.alert_state = Gauge(
            "srd_alert_state",
            "Alert instances of srd's own rules by state (pending, firing, resolved: kept "
            "and reported for 15 m after clearing).",
            ["alertname", "state"],
            registry=reg,
        )
        self.slo_error_budget_remaining = Gauge(
            "srd_slo_error_budget_remaining_ratio",
            "Share of the SLO period's error budget left, traffic-weighted: "
            "1 - bad / ((1 - objective) × total). Negative once overspent; absent with no data.",
            ["slo"],
            registry=reg,
        )
        self.slo_burn_rate = Gauge(
            "srd_slo_burn_rate",
            "Error ratio over a window divided by the SLO's allowed error ratio (1 = on budget).",
            ["slo", "window"],
            registry=reg,
        )
        self.promql_sli_events = Counter(
            "srd_promql_sli_events",
            "Events of a PromQL SLI counted from Prometheus query results, by kind (bad, "
            "total): the counters the SLO engine evaluates such an SLI on.",
            ["slo", "kind"],
            registry=reg,
        )
        self.streams = StreamMetrics()
        reg.register(self.streams)

    def _chain_metrics(self, reg: CollectorRegistry) -> None:
        node = ["chain", "node"]
        self.chain_finality_lag = Gauge(
            "srd_chain_finality_lag_blocks",
            "Best minus finalized block number.",
            node,
            registry=reg,
        )
        self.chain_head_age = Gauge(
            "srd_chain_head_age_seconds",
            "Seconds since a node's best block number last rose.",
            node,
            registry=reg,
        )
        self.chain_finalized_age = Gauge(
            "srd_chain_finalized_age_seconds",
            "Seconds since a node's finalized block number last rose.",
            node,
            registry=reg,
        )
        self.chain_peers = Gauge("srd_chain_peers", "Peers of a node.", node, registry=reg)
        self.chain_should_have_peers = Gauge(
            "srd_chain_should_have_peers",
            "1 when the node expects peers (shouldHavePeers); peers 0 is then a fault.",
            node,
            registry=reg,
        )
        self.chain_syncing = Gauge(
            "srd_chain_syncing", "1 while a node is major-syncing.", node, registry=reg
        )
        self.chain_sync_gap = Gauge(
            "srd_chain_sync_gap_blocks",
            "Blocks a node is behind the highest block it knows of (system_syncState).",
            node,
            registry=reg,
        )
        self.chain_block_time = Histogram(
            "srd_chain_block_time_seconds",
            "Seconds between consecutive blocks of a chain as srd saw them (forks and "
            "backfilled gaps excluded).",
            ["chain"],
            buckets=BLOCK_TIME_BUCKETS,
            registry=reg,
        )
        self.chain_reorgs = Counter(
            "srd_chain_reorgs", "Reorgs a node went through.", node, registry=reg
        )
        self.chain_reorg_depth = Histogram(
            "srd_chain_reorg_depth_blocks",
            "Depth of reorgs: best-chain blocks that stopped being canonical.",
            node,
            buckets=REORG_DEPTH_BUCKETS,
            registry=reg,
        )
        self.chain_best_spread = Gauge(
            "srd_chain_best_block_spread_blocks",
            "Highest minus lowest best block number across the nodes of a chain.",
            ["chain"],
            registry=reg,
        )
        self.chain_finalized_disagreement = Gauge(
            "srd_chain_finalized_hash_disagreement",
            "1 when nodes of a chain finalized different blocks at the same height.",
            ["chain"],
            registry=reg,
        )
        self.chain_subscription_restarts = Counter(
            "srd_chain_subscription_restarts",
            "Head subscriptions started again, by reason (silent: no notification while the "
            "chain advanced; closed: the WebSocket failed or closed; stop: the node ended a "
            "chainHead_v1_follow).",
            ["chain", "node", "reason"],
            registry=reg,
        )
        self.blocks_produced = Counter(
            "vilokanam_blocks_produced",
            "Blocks srd saw the chain produce, forks excluded, counted once per chain.",
            ["chain"],
            registry=reg,
        )
        self.rpc_duration = Histogram(
            "srd_rpc_request_duration_seconds",
            "Duration of JSON-RPC calls to Substrate nodes, by method.",
            ["method"],
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.rpc_errors = Counter(
            "srd_rpc_errors",
            "Failed JSON-RPC calls by method and error class (bounded set, see "
            "srd.probes.substrate.classify).",
            ["method", "class"],
            registry=reg,
        )

    def _failover_metrics(self, reg: CollectorRegistry) -> None:
        self.webhook_alerts = Counter(
            "srd_webhook_alerts",
            "Alerts accepted from Alertmanager webhook posts, by status (firing, resolved).",
            ["status"],
            registry=reg,
        )
        self.webhook_rejected = Counter(
            "srd_webhook_rejected",
            "Webhook posts refused, by reason (unauthorized, too_large, malformed, queue_full).",
            ["reason"],
            registry=reg,
        )
        self.guard_blocks = Counter(
            "srd_guard_blocks",
            "Runbook steps a guard refused, by guard (mode, kill_switch, leadership, cooldown, "
            "flapping, rate_limit, min_healthy, error_budget, approval).",
            ["guard"],
            registry=reg,
        )
        self.runbook_executions = Counter(
            "srd_runbook_executions",
            "Runbook executions that ended, by result (succeeded, rolled_back, failed, "
            "escalated, blocked, cancelled, dry_run).",
            ["runbook", "result"],
            registry=reg,
        )
        self.escalations = Counter(
            "srd_escalations",
            "Runbooks that stopped and paged, by how they ended (reason: escalated, "
            "rolled_back, failed, blocked).",
            ["runbook", "reason"],
            registry=reg,
        )
        self.escalation_notifications = Counter(
            "srd_escalation_notifications",
            "Escalation alerts posted to Alertmanager, by result (sent, failed: every retry "
            "failed).",
            ["result"],
            registry=reg,
        )
        self.runbook_step_duration = Histogram(
            "srd_runbook_step_duration_seconds",
            "Duration of runbook steps, convergence and verification included.",
            ["runbook", "step"],
            buckets=(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
            registry=reg,
        )
        self.leader = Gauge(
            "srd_leader",
            "1 while this srd instance leads (may act), 0 while it follows; by holder identity.",
            ["identity"],
            registry=reg,
        )
        self.journal_fenced_writes = Counter(
            "srd_journal_fenced_writes",
            "Journal writes refused because another replica leads at a higher term: each one "
            "stopped an execution here, for the leader to reconcile.",
            registry=reg,
        )

    def _recovery_metrics(self, reg: CollectorRegistry) -> None:
        scenario = ["scenario"]
        self.backup_age = Gauge(
            "srd_backup_age_seconds",
            "Age of the newest non-empty backup a scenario restores (the oldest such age when "
            "it restores several). Absent when unknown or when there is no good backup.",
            scenario,
            registry=reg,
        )
        self.backup_count = Gauge(
            "srd_backup_count",
            "Backups (name matches the pattern) in each location a scenario restores.",
            ["scenario", "location"],
            registry=reg,
        )
        self.rpo_met = Gauge(
            "srd_rpo_met",
            "1 when every backup a scenario restores is within its RPO, 0 when not; "
            "absent while unknown (see srd_rpo_unknown).",
            scenario,
            registry=reg,
        )
        self.rpo_unknown = Gauge(
            "srd_rpo_unknown",
            "1 when backups could not be checked (listing failed or timed out).",
            scenario,
            registry=reg,
        )
        self.rpo_objective = Gauge(
            "srd_rpo_objective_seconds", "A scenario's RPO objective.", scenario, registry=reg
        )
        self.rto_objective = Gauge(
            "srd_rto_objective_seconds", "A scenario's RTO objective.", scenario, registry=reg
        )
        self.rto_last = Gauge(
            "srd_rto_last_seconds",
            "Measured RTO (detected to recovered) of a scenario's last recovery, real or drill.",
            scenario,
            registry=reg,
        )
        self.dr_last_drill = Gauge(
            "srd_dr_last_drill_timestamp_seconds",
            "Unix time a scenario's last drill recovered.",
            scenario,
            registry=reg,
        )
        # Drills (srd simulate), as recorded in the journal the daemon reads: one series per
        # drill file name, a handful per site.
        drill = ["drill"]
        self.drill_last_run = Gauge(
            "srd_drill_last_run_timestamp_seconds",
            "Unix time a drill last ran to its verdict.",
            drill,
            registry=reg,
        )
        self.drill_last_rto = Gauge(
            "srd_drill_last_rto_seconds",
            "RTO a drill measured at its last run (absent when it measured none).",
            drill,
            registry=reg,
        )
        self.drill_last_passed = Gauge(
            "srd_drill_last_passed",
            "1 when a drill's last run passed (its objectives met, or breached as expected).",
            drill,
            registry=reg,
        )

    def record_readiness(self, summary: Readiness) -> None:
        """Export one scenario's DR readiness; unknown values are removed, never zeroed."""
        name = summary.scenario
        self.rpo_objective.labels(name).set(summary.rpo_objective)
        self.rto_objective.labels(name).set(summary.rto_objective)
        rpo = summary.rpo
        self.rpo_unknown.labels(name).set(int(summary.rpo_state == "unknown"))
        if rpo is None or rpo.state == "unknown":
            self.rpo_met.remove(name)
        else:
            self.rpo_met.labels(name).set(int(rpo.state == "met"))
        if rpo is not None and rpo.age is not None:
            self.backup_age.labels(name).set(rpo.age)
        else:
            self.backup_age.remove(name)
        for location in rpo.locations if rpo else ():
            if location.count is None:
                self.backup_count.remove(name, location.location)
            else:
                self.backup_count.labels(name, location.location).set(location.count)
        rto = summary.rto
        if rto is not None:
            self.rto_last.labels(name).set(rto.last_seconds)
        if rto is not None and rto.last_drill_at is not None:
            self.dr_last_drill.labels(name).set(rto.last_drill_at)

    def record_cross_check(self, chain: str, node: str, check: CrossCheck) -> None:
        self.chain_exporter_disagreement.labels(chain, node).set(int(check.disagreement))
        self.chain_exporter_stale.labels(chain, node).set(int(check.stale))

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
            self._record_chain(obs.chain, obs.target)
        if obs.samples is not None:
            self.streams.update(obs)

    def _record_chain(self, chain: ChainSnapshot, node: str) -> None:
        labels = (chain.chain, node)
        # Reorg series exist at 0 from a node's first snapshot: no reorgs is 0, not no-data,
        # and rate() sees the first reorg (a counter born at 1 would hide it).
        self.chain_reorgs.labels(*labels)
        self.chain_reorg_depth.labels(*labels)
        self.chain_finality_lag.labels(*labels).set(chain.finality_lag)
        self.chain_peers.labels(*labels).set(chain.peers)
        self.chain_should_have_peers.labels(*labels).set(int(chain.should_have_peers))
        self.chain_syncing.labels(*labels).set(int(chain.is_syncing))
        # Unknown values are left out rather than exported as zero: no-data is not "fresh".
        if chain.head_age is not None:
            self.chain_head_age.labels(*labels).set(chain.head_age)
        if chain.finalized_age is not None:
            self.chain_finalized_age.labels(*labels).set(chain.finalized_age)
        if chain.sync_gap is not None:
            self.chain_sync_gap.labels(*labels).set(chain.sync_gap)
