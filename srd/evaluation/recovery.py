"""Disaster-recovery objectives: the platform's ``disaster_recovery`` block, RPO and RTO.

A DR rule pack holds the platform's block exactly as the platform writes it (REFERENCE.md §3)
and, beside it under ``srd:``, what srd needs to check it: where each scenario's backups live.
Keeping srd's additions out of the platform block means the block can be pasted in verbatim
and compared with the platform's copy by eye or by diff.

RPO is judged from backup freshness (``srd.probes.backups`` lists S3); RTO is measured from
recovery records (the failover journal). ``readiness`` joins both into one summary per scenario.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from srd.config.durations import Duration
from srd.config.files import load_yaml_model, parse_yaml_model
from srd.config.types import Strict
from srd.evaluation.chainrules import AlertGroup, Compare, ThresholdAlert
from srd.evaluation.metrics import EvaluationMetrics
from srd.journal import Executions
from srd.model import RecoveryRecord
from srd.probes.backups import BackupLocation, LocationStatus, S3Settings

ScenarioName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
"""A scenario is a metric label value: short, lower case."""


# --- the platform's block, verbatim ----------------------------------------------------------


class Objective(Strict):
    """``{name: RPO, description: Maximum acceptable data loss, target: 1 hour}``."""

    name: str
    description: str = ""
    target: Duration


class RecoveryScenario(Strict):
    scenario: ScenarioName
    rpo: Duration | None = Field(None, description="Falls back to the RPO objective's target.")
    rto: Duration | None = Field(None, description="Falls back to the RTO objective's target.")
    steps: list[str] = Field(default_factory=list)


class DisasterRecovery(Strict):
    objectives: list[Objective] = Field(default_factory=list)
    recovery_scenarios: list[RecoveryScenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_and_complete(self) -> DisasterRecovery:
        names = [s.scenario for s in self.recovery_scenarios]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"scenario names must be unique; repeated: {repeated}")
        for kind in ("rpo", "rto"):
            if self.objective(kind) is None:
                missing = [s.scenario for s in self.recovery_scenarios if getattr(s, kind) is None]
                if missing:
                    raise ValueError(
                        f"scenarios {missing} have no {kind} and there is no "
                        f"{kind.upper()} objective to fall back to"
                    )
        return self

    def objective(self, name: str) -> float | None:
        """Target of the objective called ``name`` (case-insensitive), if any."""
        return next((o.target for o in self.objectives if o.name.lower() == name.lower()), None)


# --- srd's additions -------------------------------------------------------------------------


class SrdRecovery(Strict):
    environment: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    s3: S3Settings = Field(default_factory=S3Settings)
    backups: dict[ScenarioName, list[BackupLocation]] = Field(
        description="Per scenario, every backup its recovery restores; all must meet its RPO."
    )


class RecoveryPack(Strict):
    """A DR rule pack: ``disaster_recovery`` (the platform's, verbatim) plus ``srd``."""

    disaster_recovery: DisasterRecovery
    srd: SrdRecovery

    @model_validator(mode="after")
    def _backups_match_scenarios(self) -> RecoveryPack:
        known = {s.scenario for s in self.disaster_recovery.recovery_scenarios}
        errors = [
            _error(("srd", "backups", name), f"unknown scenario; known: {sorted(known)}")
            for name in self.srd.backups
            if name not in known
        ]
        errors += [
            _error(("srd", "backups", name), "a scenario needs at least one backup location")
            for name, locations in self.srd.backups.items()
            if not locations
        ]
        # RPO cannot be judged without knowing where the data is: say so at load, not at 3 am.
        errors += [
            _error(("srd", "backups"), f"no backup location for scenario {name!r}")
            for name in sorted(known - set(self.srd.backups))
        ]
        if errors:
            raise ValidationError.from_exception_data("RecoveryPack", errors)
        return self

    @property
    def scenarios(self) -> list[RecoveryScenario]:
        return self.disaster_recovery.recovery_scenarios

    def rpo(self, scenario: RecoveryScenario) -> float:
        return self._target(scenario, "rpo")

    def rto(self, scenario: RecoveryScenario) -> float:
        return self._target(scenario, "rto")

    def _target(self, scenario: RecoveryScenario, kind: Literal["rpo", "rto"]) -> float:
        value: float | None = getattr(scenario, kind)
        if value is None:
            value = self.disaster_recovery.objective(kind)
        if value is None:  # DisasterRecovery's validator refuses this; keep mypy and readers sure
            raise LookupError(f"scenario {scenario.scenario!r} has no {kind}")
        return value


def _error(loc: tuple[str, ...], reason: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("recovery_pack", reason), loc=loc, input=loc[-1]
    )


def parse_recovery_pack(text: str, filename: str) -> RecoveryPack:
    return parse_yaml_model(text, filename, RecoveryPack)


def load_recovery_pack(path: Path) -> RecoveryPack:
    """Read and validate a DR rule pack; ConfigError names file, line and key of each problem."""
    return load_yaml_model(path, RecoveryPack)


# --- RPO -------------------------------------------------------------------------------------


RpoState = Literal["met", "breached", "unknown"]


@dataclass(frozen=True, slots=True)
class RpoStatus:
    """RPO of one scenario: met when every backup it restores has a good one within the RPO.

    ``age`` is the oldest of the locations' newest good backups (the data a restore would
    lose); None when unknown or when a location has no good backup at all (a breach)."""

    scenario: str
    objective: float
    state: RpoState
    age: float | None
    reason: str
    locations: tuple[LocationStatus, ...]


def judge_rpo(scenario: str, objective: float, locations: Sequence[LocationStatus]) -> RpoStatus:
    """RPO state from location statuses. A failed listing makes it unknown, never met."""
    failed = [loc for loc in locations if loc.reason]
    if failed or not locations:
        reason = "; ".join(f"{loc.location}: {loc.reason}" for loc in failed) or "no locations"
        return RpoStatus(scenario, objective, "unknown", None, reason, tuple(locations))
    empty = [loc.location for loc in locations if loc.age is None]
    if empty:
        reason = f"no non-empty backup in {', '.join(empty)}"
        return RpoStatus(scenario, objective, "breached", None, reason, tuple(locations))
    worst = max(locations, key=lambda loc: loc.age or 0.0)
    age = worst.age or 0.0
    if age <= objective:
        return RpoStatus(scenario, objective, "met", age, "", tuple(locations))
    reason = f"newest good backup {worst.newest_good_key} is {age:.0f}s old (RPO {objective:.0f}s)"
    return RpoStatus(scenario, objective, "breached", age, reason, tuple(locations))


RPO_UNKNOWN_FOR = 900.0
"""Three failed 5 m checks in a row: one failed listing is noise, an hour blind is not."""
RETENTION_FOR = 7200.0
"""A backup run uploads before it prunes, and a new environment fills up over days: a count
off by one for minutes is a run in progress; off for two hours is pruning (or backing up)
that stopped."""


def recovery_alerts() -> AlertGroup:
    """RPO alerts over the exported readiness metrics, one instance per scenario.

    ``DisasterRecoveryRpoBreached`` fires when a scenario's newest good backup is older than its
    RPO (``srd_rpo_met`` is 0); ``DisasterRecoveryRpoUnknown`` when backups could not be checked
    for ``RPO_UNKNOWN_FOR`` — no-data is its own alert, never a silent pass;
    ``DisasterRecoveryRetentionMissed`` when a location has held more or fewer backups than
    its ``retention_count`` for ``RETENTION_FOR`` (``srd_backup_retention_met`` is 0)."""
    return AlertGroup(
        "disaster-recovery",
        (
            ThresholdAlert(
                "DisasterRecoveryRpoBreached",
                Compare(EvaluationMetrics.RPO_MET, "<", 1),
                0.0,
                "critical",
                "Backups are older than the RPO",
                "The newest good backup a recovery scenario restores is older than its RPO.",
            ),
            ThresholdAlert(
                "DisasterRecoveryRpoUnknown",
                Compare(EvaluationMetrics.RPO_UNKNOWN, ">", 0),
                RPO_UNKNOWN_FOR,
                "warning",
                "Backups cannot be checked",
                "Listing a recovery scenario's backups failed or timed out: its RPO is unknown.",
            ),
            ThresholdAlert(
                "DisasterRecoveryRetentionMissed",
                Compare(EvaluationMetrics.BACKUP_RETENTION_MET, "<", 1),
                RETENTION_FOR,
                "warning",
                "Backups are not kept as the retention policy says",
                "A backup location holds more backups than its retention_count (pruning "
                "stopped) or fewer (backups are missing); srd_backup_count says which.",
            ),
        ),
    )


# --- RTO -------------------------------------------------------------------------------------


class RecoverySource(Protocol):
    """Where recovery records come from: the failover journal, or a fake in tests."""

    async def recovery_records(self) -> Sequence[RecoveryRecord]:
        """Every finished recovery, real and drill, in any order."""


@dataclass(frozen=True, slots=True)
class RtoMeasurement:
    """Measured RTO of one scenario: the last recovery (real or drill) and the last drill."""

    scenario: str
    last_seconds: float
    last_kind: Literal["real", "drill"]
    last_recovered_at: float
    last_drill_at: float | None
    count: int


def measure_rto(records: Iterable[RecoveryRecord]) -> dict[str, RtoMeasurement]:
    """Per scenario, the RTO of its most recent recovery (by ``recovered_at``)."""
    by_scenario: dict[str, list[RecoveryRecord]] = {}
    for record in records:
        by_scenario.setdefault(record.scenario, []).append(record)
    result = {}
    for scenario, group in by_scenario.items():
        last = max(group, key=lambda r: r.recovered_at)
        drills = [r.recovered_at for r in group if r.kind == "drill"]
        result[scenario] = RtoMeasurement(
            scenario=scenario,
            last_seconds=last.seconds,
            last_kind=last.kind,
            last_recovered_at=last.recovered_at,
            last_drill_at=max(drills) if drills else None,
            count=len(group),
        )
    return result


# --- readiness -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Readiness:
    """DR readiness of one scenario: can it be recovered within its objectives right now?"""

    scenario: str
    rpo_objective: float
    rto_objective: float
    rpo: RpoStatus | None
    """None before the first backup check."""
    rto: RtoMeasurement | None
    """None until the scenario has been recovered or drilled once."""

    @property
    def rpo_state(self) -> RpoState:
        return self.rpo.state if self.rpo is not None else "unknown"

    @property
    def rto_met(self) -> bool | None:
        return None if self.rto is None else self.rto.last_seconds <= self.rto_objective

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the API and reports; times are Unix seconds."""
        rpo, rto = self.rpo, self.rto
        return {
            "scenario": self.scenario,
            "rpo_objective_seconds": self.rpo_objective,
            "rto_objective_seconds": self.rto_objective,
            "rpo_state": self.rpo_state,
            "backup_age_seconds": rpo.age if rpo else None,
            "rpo_reason": rpo.reason if rpo else "not checked yet",
            "backups": [_location_dict(loc) for loc in rpo.locations] if rpo else [],
            "rto_met": self.rto_met,
            "rto_last_seconds": rto.last_seconds if rto else None,
            "rto_last_kind": rto.last_kind if rto else None,
            "rto_last_recovered_at": rto.last_recovered_at if rto else None,
            "last_drill_at": rto.last_drill_at if rto else None,
        }


def _location_dict(loc: LocationStatus) -> dict[str, Any]:
    return {
        "location": loc.location,
        "checked_at": loc.checked_at,
        "reason": loc.reason,
        "count": loc.count,
        "retention_count": loc.retention_count,
        "retention": loc.retention,
        "newest_good_key": loc.newest_good_key,
        "age_seconds": loc.age,
        "notes": list(loc.notes),
    }


def readiness(
    pack: RecoveryPack,
    rpo: Mapping[str, RpoStatus],
    records: Iterable[RecoveryRecord],
) -> list[Readiness]:
    """One summary per scenario of ``pack``, in the pack's order. Records of scenarios the
    pack does not know are ignored: the journal may outlive a renamed scenario."""
    rto = measure_rto(records)
    return [
        Readiness(
            scenario=s.scenario,
            rpo_objective=pack.rpo(s),
            rto_objective=pack.rto(s),
            rpo=rpo.get(s.scenario),
            rto=rto.get(s.scenario),
        )
        for s in pack.scenarios
    ]


def record_readiness(metrics: EvaluationMetrics, summary: Readiness) -> None:
    """Export one scenario's DR readiness; unknown values are removed, never zeroed."""
    name = summary.scenario
    metrics.rpo_objective.labels(name).set(summary.rpo_objective)
    metrics.rto_objective.labels(name).set(summary.rto_objective)
    rpo = summary.rpo
    metrics.rpo_unknown.labels(name).set(int(summary.rpo_state == "unknown"))
    if rpo is None or rpo.state == "unknown":
        metrics.rpo_met.remove(name)
    else:
        metrics.rpo_met.labels(name).set(int(rpo.state == "met"))
    if rpo is not None and rpo.age is not None:
        metrics.backup_age.labels(name).set(rpo.age)
    else:
        metrics.backup_age.remove(name)
    for location in rpo.locations if rpo else ():
        if location.count is None:
            metrics.backup_count.remove(name, location.location)
            metrics.backup_retention_met.remove(name, location.location)
        else:
            metrics.backup_count.labels(name, location.location).set(location.count)
            met = int(location.retention == "ok")
            metrics.backup_retention_met.labels(name, location.location).set(met)
    rto = summary.rto
    if rto is not None:
        metrics.rto_last.labels(name).set(rto.last_seconds)
    if rto is not None and rto.last_drill_at is not None:
        metrics.dr_last_drill.labels(name).set(rto.last_drill_at)


DRILL_LOOKBACK = 500
"""Executions read back for drill records: the newest, where the last run of each drill is."""


async def export_drills(journal: Executions, metrics: EvaluationMetrics) -> None:
    """The last run of each drill ``srd simulate`` recorded in ``journal``, as
    ``srd_drill_last_*{drill}`` (newest first: the first record of a drill is its last)."""
    seen: set[str] = set()
    for execution in await journal.executions(DRILL_LOOKBACK):
        alert = execution.alert
        name = str(alert.get("drill", ""))
        if alert.get("kind") != "drill" or not name or name in seen:
            continue
        seen.add(name)
        metrics.drill_last_run.labels(name).set(execution.created_at)
        metrics.drill_last_passed.labels(name).set(int(bool(alert.get("passed"))))
        rto = alert.get("rto_seconds")
        if isinstance(rto, int | float):
            metrics.drill_last_rto.labels(name).set(rto)
        else:
            metrics.drill_last_rto.remove(name)
