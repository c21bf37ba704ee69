"""The evaluation stage's metrics: alert state, SLO budgets and burn rates, disaster-recovery
readiness, on a registry the runtime gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge


class EvaluationMetrics:
    """The evaluation stage's metrics, created on ``registry`` (``recovery.record_readiness``
    exports the disaster-recovery ones).

    It is also the budget reader of the failover guards: ``remaining_budget`` answers with the
    value last exported, so the guard sees exactly what /metrics shows."""

    ALERT_STATE = "srd_alert_state"
    SLO_ERROR_BUDGET_REMAINING = "srd_slo_error_budget_remaining_ratio"
    SLO_BURN_RATE = "srd_slo_burn_rate"
    BACKUP_AGE = "srd_backup_age_seconds"
    BACKUP_COUNT = "srd_backup_count"
    BACKUP_RETENTION_MET = "srd_backup_retention_met"
    RPO_MET = "srd_rpo_met"
    RPO_UNKNOWN = "srd_rpo_unknown"
    RPO_OBJECTIVE = "srd_rpo_objective_seconds"
    RTO_OBJECTIVE = "srd_rto_objective_seconds"
    RTO_LAST = "srd_rto_last_seconds"
    DR_LAST_DRILL = "srd_dr_last_drill_timestamp_seconds"
    DRILL_LAST_RUN = "srd_drill_last_run_timestamp_seconds"
    DRILL_LAST_RTO = "srd_drill_last_rto_seconds"
    DRILL_LAST_PASSED = "srd_drill_last_passed"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = reg = registry
        self._budgets: dict[str, float] = {}
        self._burn_rates: set[tuple[str, str]] = set()
        self.alert_state = Gauge(
            self.ALERT_STATE,
            "Alert instances of srd's own rules by state (pending, firing, resolved: kept "
            "and reported for 15 m after clearing).",
            ["alertname", "state"],
            registry=reg,
        )
        self.slo_error_budget_remaining = Gauge(
            self.SLO_ERROR_BUDGET_REMAINING,
            "Share of the SLO period's error budget left, traffic-weighted: "
            "1 - bad / ((1 - objective) × total). Negative once overspent; absent with no data.",
            ["slo"],
            registry=reg,
        )
        self.slo_burn_rate = Gauge(
            self.SLO_BURN_RATE,
            "Error ratio over a window divided by the SLO's allowed error ratio (1 = on budget).",
            ["slo", "window"],
            registry=reg,
        )
        self._recovery_metrics(reg)

    def _recovery_metrics(self, reg: CollectorRegistry) -> None:
        scenario = ["scenario"]
        self.backup_age = Gauge(
            self.BACKUP_AGE,
            "Age of the newest non-empty backup a scenario restores (the oldest such age when "
            "it restores several). Absent when unknown or when there is no good backup.",
            scenario,
            registry=reg,
        )
        self.backup_count = Gauge(
            self.BACKUP_COUNT,
            "Backups (name matches the pattern) in each location a scenario restores.",
            ["scenario", "location"],
            registry=reg,
        )
        self.backup_retention_met = Gauge(
            self.BACKUP_RETENTION_MET,
            "1 when a location holds exactly the backups its retention_count keeps, 0 when "
            "too few (backups missing) or too many (pruning stopped); absent while unknown.",
            ["scenario", "location"],
            registry=reg,
        )
        self.rpo_met = Gauge(
            self.RPO_MET,
            "1 when every backup a scenario restores is within its RPO, 0 when not; "
            f"absent while unknown (see {self.RPO_UNKNOWN}).",
            scenario,
            registry=reg,
        )
        self.rpo_unknown = Gauge(
            self.RPO_UNKNOWN,
            "1 when backups could not be checked (listing failed or timed out).",
            scenario,
            registry=reg,
        )
        self.rpo_objective = Gauge(
            self.RPO_OBJECTIVE, "A scenario's RPO objective.", scenario, registry=reg
        )
        self.rto_objective = Gauge(
            self.RTO_OBJECTIVE, "A scenario's RTO objective.", scenario, registry=reg
        )
        self.rto_last = Gauge(
            self.RTO_LAST,
            "Measured RTO (detected to recovered) of a scenario's last recovery, real or drill.",
            scenario,
            registry=reg,
        )
        self.dr_last_drill = Gauge(
            self.DR_LAST_DRILL,
            "Unix time a scenario's last drill recovered.",
            scenario,
            registry=reg,
        )
        # Drills (srd simulate), as recorded in the journal the daemon reads: one series per
        # drill file name, a handful per site.
        drill = ["drill"]
        self.drill_last_run = Gauge(
            self.DRILL_LAST_RUN, "Unix time a drill last ran to its verdict.", drill, registry=reg
        )
        self.drill_last_rto = Gauge(
            self.DRILL_LAST_RTO,
            "RTO a drill measured at its last run (absent when it measured none).",
            drill,
            registry=reg,
        )
        self.drill_last_passed = Gauge(
            self.DRILL_LAST_PASSED,
            "1 when a drill's last run passed (its objectives met, or breached as expected).",
            drill,
            registry=reg,
        )

    def remaining_budget(self, slo: str) -> float | None:
        """The remaining error-budget ratio last exported for ``slo`` (None: no data)."""
        return self._budgets.get(slo)

    def report_budget(self, slo: str, remaining: float | None) -> None:
        """Export an SLO's remaining budget; no data removes the series rather than zeroing it."""
        if remaining is not None:
            self._budgets[slo] = remaining
            self.slo_error_budget_remaining.labels(slo).set(remaining)
        elif self._budgets.pop(slo, None) is not None:
            self.slo_error_budget_remaining.remove(slo)

    def report_burn_rate(self, slo: str, window: str, rate: float | None) -> None:
        key = (slo, window)
        if rate is not None:
            self._burn_rates.add(key)
            self.slo_burn_rate.labels(*key).set(rate)
        elif key in self._burn_rates:
            self._burn_rates.discard(key)
            self.slo_burn_rate.remove(*key)
