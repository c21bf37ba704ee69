"""The failover stage's metrics: alerts taken in, guards, runbook executions, escalations and
leadership, on a registry the runtime gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class FailoverMetrics:
    """The failover stage's metrics, created on ``registry``."""

    WEBHOOK_ALERTS = "srd_webhook_alerts"
    WEBHOOK_REJECTED = "srd_webhook_rejected"
    GUARD_BLOCKS = "srd_guard_blocks"
    RUNBOOK_EXECUTIONS = "srd_runbook_executions"
    ESCALATIONS = "srd_escalations"
    ESCALATION_NOTIFICATIONS = "srd_escalation_notifications"
    RUNBOOK_STEP_DURATION = "srd_runbook_step_duration_seconds"
    LEADER = "srd_leader"
    JOURNAL_FENCED_WRITES = "srd_journal_fenced_writes"
    JOURNAL_ERRORS = "srd_journal_errors"
    JOURNAL_WRITABLE = "srd_journal_writable"
    INTAKE_ALERTS = "srd_intake_alerts"
    INTAKE_BYTES = "srd_intake_bytes"
    EXECUTIONS_STUCK = "srd_executions_stuck"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = reg = registry
        self.webhook_alerts = Counter(
            self.WEBHOOK_ALERTS,
            "Alerts accepted from Alertmanager webhook posts, by status (firing, resolved).",
            ["status"],
            registry=reg,
        )
        self.webhook_rejected = Counter(
            self.WEBHOOK_REJECTED,
            "Webhook posts refused, by reason (unauthorized, too_large, malformed, queue_full).",
            ["reason"],
            registry=reg,
        )
        self.guard_blocks = Counter(
            self.GUARD_BLOCKS,
            "Runbook steps a guard refused, by guard (mode, kill_switch, leadership, cooldown, "
            "flapping, rate_limit, min_healthy, error_budget, approval).",
            ["guard"],
            registry=reg,
        )
        self.runbook_executions = Counter(
            self.RUNBOOK_EXECUTIONS,
            "Runbook executions that ended, by result (succeeded, rolled_back, failed, "
            "escalated, blocked, cancelled, dry_run).",
            ["runbook", "result"],
            registry=reg,
        )
        self.escalations = Counter(
            self.ESCALATIONS,
            "Runbooks that stopped and paged, by how they ended (reason: escalated, "
            "rolled_back, failed, blocked).",
            ["runbook", "reason"],
            registry=reg,
        )
        self.escalation_notifications = Counter(
            self.ESCALATION_NOTIFICATIONS,
            "Escalation alerts posted to Alertmanager, by result (sent, failed: every retry "
            "failed).",
            ["result"],
            registry=reg,
        )
        self.runbook_step_duration = Histogram(
            self.RUNBOOK_STEP_DURATION,
            "Duration of runbook steps, convergence and verification included.",
            ["runbook", "step"],
            buckets=(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
            registry=reg,
        )
        self.leader = Gauge(
            self.LEADER,
            "1 while this srd instance leads (may act), 0 while it follows; by holder identity.",
            ["identity"],
            registry=reg,
        )
        # Journal faults and the intake's budget (durable acknowledgement).
        self.journal_errors = Counter(
            self.JOURNAL_ERRORS,
            "Journal calls that met a backend error, by call (op: a journal method, read, "
            "open) and kind (transient: locked, connection, timeout; permanent: full, "
            "read_only, corrupt, io, error).",
            ["op", "kind"],
            registry=reg,
        )
        self.journal_writable = Gauge(
            self.JOURNAL_WRITABLE,
            "0 while the journal's last write failed (/readyz says why), 1 otherwise.",
            registry=reg,
        )
        self.intake_alerts = Gauge(
            self.INTAKE_ALERTS,
            "Alerts the intake holds: admitted, awaiting their receipt's commit or a decision "
            "(bounded by failover.queue_size).",
            registry=reg,
        )
        self.intake_bytes = Gauge(
            self.INTAKE_BYTES,
            "Webhook body bytes of the alerts the intake holds (bounded by failover.queue_bytes).",
            registry=reg,
        )
        self.journal_fenced_writes = Counter(
            self.JOURNAL_FENCED_WRITES,
            "Journal writes refused because another replica leads at a higher term: each one "
            "stopped an execution here, for the leader to reconcile.",
            registry=reg,
        )
        self.executions_stuck = Gauge(
            self.EXECUTIONS_STUCK,
            "Executions this leader is retrying after a journal write (or another fault) "
            "interrupted them: nonzero also turns /readyz 503.",
            registry=reg,
        )
