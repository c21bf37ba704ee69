from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from srd.config import ConfigError, Mode
from srd.evaluation.engine import Engine
from srd.evaluation.export import rule_file
from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.recovery import (
    RecoveryPack,
    judge_rpo,
    load_recovery_pack,
    measure_rto,
    parse_recovery_pack,
    readiness,
    record_readiness,
    recovery_alerts,
)
from srd.failover.runbooks import Runbook
from srd.journal import ExecutionRecord
from srd.model import RecoveryRecord
from srd.probes.backups import LocationStatus
from srd.runtime import DaemonMetrics
from tests.support.evalkit import PLATFORM_BLOCK, promtool
from tests.support.failoverkit import Kit, kit

SHIPPED = Path(__file__).parents[2] / "rules" / "disaster_recovery.yaml"

SRD_PART = """\
srd:
  environment: staging
  backups:
    database_failure:
      - {bucket: "b-{environment}", prefix: database/, pattern: "p-{timestamp}.gz",
         retention_count: 30}
    blockchain_node_failure:
      - {bucket: "b-{environment}", prefix: chain/, pattern: "c-{timestamp}.tgz",
         retention_count: 7}
    complete_data_center_outage:
      - {bucket: "b-{environment}", prefix: database/, pattern: "p-{timestamp}.gz",
         retention_count: 30}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_recovery_pack(text, "dr.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_the_platform_block_as_the_platform_writes_it_parses_into_seconds() -> None:
    pack = parse_recovery_pack(PLATFORM_BLOCK + SRD_PART, "dr.yaml")
    assert [(s.scenario, pack.rpo(s), pack.rto(s)) for s in pack.scenarios] == [
        ("database_failure", 3600.0, 7200.0),
        ("blockchain_node_failure", 21600.0, 14400.0),
        ("complete_data_center_outage", 86400.0, 86400.0),
    ]
    assert pack.disaster_recovery.objective("RPO") == 3600.0
    assert pack.disaster_recovery.objective("rto") == 4 * 3600.0
    assert pack.scenarios[1].steps[-1] == "add_to_validator_set"


def test_the_shipped_pack_holds_the_platform_block_verbatim_and_its_backup_layout() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    assert PLATFORM_BLOCK in text
    pack = load_recovery_pack(SHIPPED)
    env = pack.srd.environment
    database, blockchain = pack.srd.backups["complete_data_center_outage"]
    assert database.url(env) == f"s3://vilokanam-backups-{env}/database/"
    assert (database.pattern, database.retention_count) == (
        "postgres-backup-{timestamp}.sql.gz",
        30,
    )
    assert blockchain.url(env) == f"s3://vilokanam-backups-{env}/blockchain/"
    assert (blockchain.pattern, blockchain.retention_count) == (
        "blockchain-state-{timestamp}.tar.gz",
        7,
    )


def test_the_environment_fills_the_bucket_name() -> None:
    pack = parse_recovery_pack(PLATFORM_BLOCK + SRD_PART, "dr.yaml")
    [location] = pack.srd.backups["database_failure"]
    assert location.bucket_name(pack.srd.environment) == "b-staging"


def test_a_scenario_without_rpo_falls_back_to_the_rpo_objective() -> None:
    text = PLATFORM_BLOCK.replace("      rpo: 6 hours\n", "") + SRD_PART
    pack = parse_recovery_pack(text, "dr.yaml")
    assert pack.rpo(pack.scenarios[1]) == 3600.0


def test_a_bad_duration_names_file_line_and_key() -> None:
    [error] = errors_of(PLATFORM_BLOCK.replace("rto: 4 hours", "rto: four hours") + SRD_PART)
    assert error.startswith("dr.yaml:13: disaster_recovery.recovery_scenarios[1].rto: ")
    assert "cannot read 'four hours' as a duration" in error


def test_backups_for_an_unknown_scenario_name_the_key_and_the_known_scenarios() -> None:
    text = PLATFORM_BLOCK + SRD_PART.replace("blockchain_node_failure:", "blockchain_failure:")
    errors = errors_of(text)
    assert errors[0].startswith("dr.yaml:28: srd.backups.blockchain_failure: unknown scenario")
    assert "'blockchain_node_failure'" in errors[0]
    assert errors[1] == (
        "dr.yaml:24: srd.backups: no backup location for scenario 'blockchain_node_failure'"
    )


def test_a_missing_field_and_a_typo_are_both_reported_with_their_keys() -> None:
    text = PLATFORM_BLOCK + SRD_PART.replace("retention_count: 7", "retension_count: 7")
    errors = errors_of(text)
    assert errors == [
        "dr.yaml:29: srd.backups.blockchain_node_failure[0].retention_count: "
        "required key is missing",
        "dr.yaml:30: srd.backups.blockchain_node_failure[0].retension_count: unknown key",
    ]


def test_a_pattern_without_a_timestamp_is_refused() -> None:
    [error] = errors_of(PLATFORM_BLOCK + SRD_PART.replace('"c-{timestamp}.tgz"', "c.tgz"))
    assert "srd.backups.blockchain_node_failure[0].pattern: " in error
    assert "{timestamp} exactly once" in error


def test_a_missing_srd_part_is_reported() -> None:
    assert errors_of(PLATFORM_BLOCK) == ["dr.yaml:1: srd: required key is missing"]


def test_half_given_s3_credentials_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_ID", "AKIA")
    text = PLATFORM_BLOCK + SRD_PART.replace(
        "  backups:", "  s3:\n    access_key_id: {env: KEY_ID}\n  backups:"
    )
    [error] = errors_of(text)
    assert error.startswith("dr.yaml:24: srd.s3: give both access_key_id and secret_access_key")


def pack() -> RecoveryPack:
    return parse_recovery_pack(PLATFORM_BLOCK + SRD_PART, "dr.yaml")


def test_rto_is_measured_from_the_last_recovery_and_the_last_drill_is_remembered() -> None:
    records = [
        RecoveryRecord("database_failure", 1000.0, 1900.0, "drill"),
        RecoveryRecord("database_failure", 5000.0, 8000.0, "real"),
        RecoveryRecord("database_failure", 2000.0, 2600.0, "drill"),
        RecoveryRecord("blockchain_node_failure", 100.0, 400.0, "real"),
    ]
    rto = measure_rto(records)
    database = rto["database_failure"]
    assert (database.last_seconds, database.last_kind, database.count) == (3000.0, "real", 3)
    assert database.last_drill_at == 2600.0
    assert rto["blockchain_node_failure"].last_drill_at is None


def test_a_recovery_that_ends_before_it_was_detected_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ends .* before it was detected"):
        RecoveryRecord("database_failure", 10.0, 5.0, "real")


def location(age: float | None, reason: str = "") -> LocationStatus:
    now = 100_000.0
    return LocationStatus(
        location="s3://b/database/",
        checked_at=now,
        retention_count=30,
        reason=reason,
        count=None if reason else 30,
        newest_good_key=None if age is None else "p-x.gz",
        newest_good_at=None if age is None else now - age,
    )


def test_rpo_is_met_only_when_every_location_is_within_it() -> None:
    assert judge_rpo("s", 3600.0, [location(600.0), location(3600.0)]).state == "met"
    breached = judge_rpo("s", 3600.0, [location(600.0), location(3601.0)])
    assert (breached.state, breached.age) == ("breached", 3601.0)


def test_a_failed_listing_makes_rpo_unknown_even_when_another_location_is_fresh() -> None:
    status = judge_rpo("s", 3600.0, [location(60.0), location(None, "AccessDenied: no")])
    assert (status.state, status.age) == ("unknown", None)
    assert "AccessDenied" in status.reason


def test_a_location_without_any_good_backup_is_a_breach_not_unknown() -> None:
    status = judge_rpo("s", 3600.0, [location(None)])
    assert status.state == "breached"
    assert "no non-empty backup" in status.reason


def test_readiness_summarises_every_scenario_and_is_json_able() -> None:
    rpo = {"database_failure": judge_rpo("database_failure", 3600.0, [location(120.0)])}
    records = [
        RecoveryRecord("database_failure", 0.0, 9000.0, "drill"),
        RecoveryRecord("renamed_long_ago", 0.0, 1.0, "real"),
    ]
    summary = readiness(pack(), rpo, records)
    assert [s.scenario for s in summary] == [s.scenario for s in pack().scenarios]
    database = json.loads(json.dumps(summary[0].to_dict()))
    assert database["rpo_state"] == "met"
    assert database["backup_age_seconds"] == 120.0
    assert database["rto_last_seconds"] == 9000.0
    assert database["rto_met"] is False
    assert database["last_drill_at"] == 9000.0
    assert database["backups"][0]["retention"] == "ok"
    chain = summary[1].to_dict()
    assert (chain["rpo_state"], chain["rpo_reason"], chain["rto_met"]) == (
        "unknown",
        "not checked yet",
        None,
    )


def test_readiness_metrics_show_unknown_rpo_as_absent_never_as_met() -> None:
    metrics = EvaluationMetrics(CollectorRegistry())
    rpo = {
        "database_failure": judge_rpo("database_failure", 3600.0, [location(7200.0)]),
        "blockchain_node_failure": judge_rpo(
            "blockchain_node_failure", 21600.0, [location(None, "timed out")]
        ),
    }
    records = [RecoveryRecord("database_failure", 0.0, 600.0, "real")]
    for item in readiness(pack(), rpo, records):
        record_readiness(metrics, item)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("srd_rpo_met", scenario="database_failure") == 0.0
    assert value("srd_backup_age_seconds", scenario="database_failure") == 7200.0
    assert value("srd_backup_count", scenario="database_failure", location="s3://b/database/") == 30
    assert value("srd_rpo_objective_seconds", scenario="blockchain_node_failure") == 21600.0
    assert value("srd_rto_objective_seconds", scenario="database_failure") == 7200.0
    assert value("srd_rto_last_seconds", scenario="database_failure") == 600.0
    assert value("srd_rpo_met", scenario="blockchain_node_failure") is None
    assert value("srd_rpo_unknown", scenario="blockchain_node_failure") == 1.0
    assert value("srd_backup_age_seconds", scenario="blockchain_node_failure") is None
    assert value("srd_rto_last_seconds", scenario="blockchain_node_failure") is None


def test_an_rpo_breach_alerts_at_once_and_an_unknown_rpo_after_fifteen_minutes() -> None:
    metrics = DaemonMetrics()
    rpo = {
        "database_failure": judge_rpo("database_failure", 3600.0, [location(7200.0)]),
        "blockchain_node_failure": judge_rpo(
            "blockchain_node_failure", 21600.0, [location(None, "timed out")]
        ),
        "complete_data_center_outage": judge_rpo(
            "complete_data_center_outage", 86400.0, [location(7200.0)]
        ),
    }
    for item in readiness(pack(), rpo, []):
        record_readiness(metrics.evaluation, item)
    engine = Engine(
        [], metrics.evaluation, samples=metrics.samples, extra_groups=[recovery_alerts()]
    )

    def firing(at: float) -> set[tuple[str, str]]:
        engine.evaluate(at)
        return {
            (a.name, dict(a.labels)["scenario"])
            for a in engine.states.alerts()
            if a.state == "firing"
        }

    breached = ("DisasterRecoveryRpoBreached", "database_failure")
    assert firing(0.0) == {breached}
    assert firing(840.0) == {breached}
    assert firing(900.0) == {breached, ("DisasterRecoveryRpoUnknown", "blockchain_node_failure")}


def test_the_recovery_alerts_pass_promtool_check(tmp_path: Path) -> None:
    binary = promtool()
    path = tmp_path / "dr.rules.yml"
    path.write_text(yaml.safe_dump(rule_file([recovery_alerts()])))
    result = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


SCENARIO_RUNBOOK = """
runbooks:
  - name: restore
    scenario: database_failure
    match: [alertname="Down"]
    steps:
      - {name: a, action: {actuator: fake, action: set, params: {key: a, value: 1}}, timeout: 1s}
"""


async def scenario_execution(k: Kit, runbook: Runbook) -> ExecutionRecord:
    """An execution as the dispatcher plans it: the alert recorded with the runbook's scenario."""
    alert = {"fingerprint": "f", "startsAt": "2024-01-01T00:00:00Z", "scenario": runbook.scenario}
    mode = k.mode[0].value
    execution = await k.journal.start_execution(runbook.name, "key", mode, "corr", alert)
    assert execution is not None
    return execution


async def test_a_dry_run_ends_as_a_plan_and_never_counts_as_a_recovery(tmp_path: Path) -> None:
    async with kit(tmp_path / "dry", mode=Mode.DRY_RUN) as k:
        runbook = k.runbook(SCENARIO_RUNBOOK)
        execution = await scenario_execution(k, runbook)
        assert await k.executor.run(runbook, execution) == "dry_run"
        assert await k.state(execution.id) == "dry_run"
        assert k.actuator.calls == []
        assert await k.journal.recovery_records() == []
        assert measure_rto(await k.journal.recovery_records()) == {}
        result = {"runbook": "restore", "result": "dry_run"}
        assert k.metrics.registry.get_sample_value("srd_runbook_executions_total", result) == 1
    async with kit(tmp_path / "armed") as k:  # the same runbook armed is a recovery
        runbook = k.runbook(SCENARIO_RUNBOOK)
        assert await k.executor.run(runbook, await scenario_execution(k, runbook)) == "succeeded"
        [record] = await k.journal.recovery_records()
        assert record.scenario == "database_failure"
