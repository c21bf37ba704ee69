"""Backup freshness against a real moto S3 server.

moto stamps every object's LastModified with the real "now"; the timestamp in the object name
is what ages a backup (the earlier of the two counts), so these tests name their objects at
ages relative to a fixed clock near the real time and pass that clock to the checker.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from srd.evaluation.backups import BackupChecker, assess_readiness
from srd.evaluation.engine import Engine
from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.recovery import (
    RETENTION_FOR,
    RecoveryPack,
    parse_recovery_pack,
    record_readiness,
    recovery_alerts,
)
from srd.model import RecoveryRecord
from srd.probes import backups
from srd.runtime import DaemonMetrics

NOW = float(int(time.time()))
HOUR = 3600.0


@pytest.fixture
async def s3(moto_url: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "s3", endpoint_url=moto_url, region_name="us-east-1"
    ) as client:
        yield client


def make_pack(
    endpoint: str, environment: str, timeout: str = "5s", s3_extra: str = ""
) -> RecoveryPack:
    text = f"""\
disaster_recovery:
  objectives:
    - {{name: RPO, description: Maximum acceptable data loss, target: 1 hour}}
    - {{name: RTO, description: Maximum acceptable downtime, target: 4 hours}}
  recovery_scenarios:
    - {{scenario: database_failure, rpo: 1 hour, rto: 2 hours}}
    - {{scenario: blockchain_node_failure, rpo: 6 hours, rto: 4 hours}}
    - {{scenario: complete_data_center_outage, rpo: 24 hours, rto: 24 hours}}
srd:
  environment: {environment}
  s3: {{endpoint_url: "{endpoint}", timeout: {timeout}{s3_extra}}}
  backups:
    database_failure: [&db {{bucket: "vilokanam-backups-{{environment}}", prefix: database/,
                             pattern: "postgres-backup-{{timestamp}}.sql.gz", retention_count: 30}}]
    blockchain_node_failure: [&chain {{bucket: "vilokanam-backups-{{environment}}",
                                       prefix: blockchain/,
                                       pattern: "blockchain-state-{{timestamp}}.tar.gz",
                                       retention_count: 7}}]
    complete_data_center_outage: [*db, *chain]
"""
    return parse_recovery_pack(text, "dr.yaml")


def stamp(age: float) -> str:
    return datetime.fromtimestamp(NOW - age, UTC).strftime("%Y%m%d-%H%M%S")


async def put_backups(
    s3: Any, bucket: str, prefix: str, name: str, ages: Sequence[float], size: int = 64
) -> None:
    """Backups ``ages`` seconds old, named like the platform's: ``name`` with {timestamp}."""
    limit = asyncio.Semaphore(16)

    async def put(age: float) -> None:
        async with limit:
            key = prefix + name.format(timestamp=stamp(age))
            await s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)

    await asyncio.gather(*(put(age) for age in ages))


async def seeded(s3: Any, environment: str, db_ages: Sequence[float]) -> str:
    bucket = f"vilokanam-backups-{environment}"
    await s3.create_bucket(Bucket=bucket)
    await put_backups(s3, bucket, "database/", "postgres-backup-{timestamp}.sql.gz", db_ages)
    chain_ages = [i * 6 * HOUR + 1800 for i in range(7)]
    await put_backups(s3, bucket, "blockchain/", "blockchain-state-{timestamp}.tar.gz", chain_ages)
    return bucket


def checker(pack: RecoveryPack) -> BackupChecker:
    return BackupChecker(pack, clock=lambda: NOW)


async def test_fresh_backups_meet_every_rpo_with_ages_from_their_names(
    s3: Any, moto_url: str
) -> None:
    await seeded(s3, "fresh", [600 + i * HOUR for i in range(30)])
    status = await checker(make_pack(moto_url, "fresh")).check()

    database = status["database_failure"]
    assert (database.state, database.age) == ("met", 600.0)
    [location] = database.locations
    assert location.location == "s3://vilokanam-backups-fresh/database/"
    assert (location.count, location.retention) == (30, "ok")
    assert location.newest_good_key == f"database/postgres-backup-{stamp(600)}.sql.gz"
    assert (status["blockchain_node_failure"].state, status["blockchain_node_failure"].age) == (
        "met",
        1800.0,
    )
    outage = status["complete_data_center_outage"]
    assert (outage.state, outage.age) == ("met", 1800.0)  # the older of the two it restores


async def test_an_empty_newest_backup_does_not_count_and_the_older_good_one_breaches_rpo(
    s3: Any, moto_url: str
) -> None:
    bucket = await seeded(s3, "empty", [70 * 60 + i * HOUR for i in range(29)])
    await put_backups(s3, bucket, "database/", "postgres-backup-{timestamp}.sql.gz", [300], size=0)
    status = await checker(make_pack(moto_url, "empty")).check()

    database = status["database_failure"]
    assert (database.state, database.age) == ("breached", 4200.0)
    [location] = database.locations
    assert location.count == 30
    assert (
        f"newest backup database/postgres-backup-{stamp(300)}.sql.gz is empty"
        in (location.notes[0])
    )
    assert "RPO 3600s" in database.reason


async def test_a_backup_older_than_the_rpo_is_a_breach(s3: Any, moto_url: str) -> None:
    await seeded(s3, "stale", [2 * HOUR + i * HOUR for i in range(30)])
    status = await checker(make_pack(moto_url, "stale")).check()
    assert (status["database_failure"].state, status["database_failure"].age) == (
        "breached",
        7200.0,
    )
    # The same backups still meet the 24 h RPO of a data-centre outage.
    assert status["complete_data_center_outage"].state == "met"


async def test_too_few_and_too_many_backups_are_reported_against_retention(
    s3: Any, moto_url: str
) -> None:
    await seeded(s3, "few", [600, 4200])
    await seeded(s3, "many", [600 + i * HOUR for i in range(33)])
    few = (await checker(make_pack(moto_url, "few")).check())["database_failure"]
    many = (await checker(make_pack(moto_url, "many")).check())["database_failure"]
    assert (few.locations[0].count, few.locations[0].retention) == (2, "too_few")
    assert (many.locations[0].count, many.locations[0].retention) == (33, "too_many")
    assert few.state == many.state == "met"


async def test_listing_follows_every_page(
    s3: Any, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages stand in for S3's 1,000 keys; the newest backup sorts last, on the last page.
    monkeypatch.setattr(backups, "PAGE_SIZE", 4)
    await seeded(s3, "pages", [600 + i * 60 for i in range(33)])
    database = (await checker(make_pack(moto_url, "pages")).check())["database_failure"]
    assert (database.locations[0].count, database.age) == (33, 600.0)


async def test_objects_that_do_not_match_the_pattern_are_ignored_and_noted(
    s3: Any, moto_url: str
) -> None:
    bucket = await seeded(s3, "junk", [600 + i * HOUR for i in range(30)])
    await s3.put_object(Bucket=bucket, Key="database/README", Body=b"x")
    await s3.put_object(Bucket=bucket, Key="database/postgres-backup-latest.sql.gz", Body=b"x")
    [location] = (await checker(make_pack(moto_url, "junk")).check())["database_failure"].locations
    assert location.count == 30
    assert "2 objects do not match postgres-backup-{timestamp}.sql.gz" in location.notes


async def test_a_name_in_the_future_is_aged_by_its_upload_time(s3: Any, moto_url: str) -> None:
    await seeded(s3, "future", [-2 * HOUR])
    # Judged on the real clock: LastModified is the real upload time, however long after NOW
    # (the module's import) this test runs; the name is two hours in the future.
    future = BackupChecker(make_pack(moto_url, "future"), clock=time.time)
    database = (await future.check())["database_failure"]
    assert database.age is not None and -60 < database.age < 60
    assert any("named later than their upload" in note for note in database.locations[0].notes)


async def test_a_missing_bucket_is_no_data_with_the_reason_never_met(moto_url: str) -> None:
    status = await checker(make_pack(moto_url, "absent")).check()
    database = status["database_failure"]
    assert (database.state, database.age) == ("unknown", None)
    assert "NoSuchBucket" in database.reason
    assert database.locations[0].count is None


async def test_an_unreachable_endpoint_is_no_data_with_the_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The budget covers botocore's one retry with its backoff, so the refusal is what's seen.
    status = await checker(make_pack(f"http://127.0.0.1:{port}", "down", "10s")).check()
    assert status["database_failure"].state == "unknown"
    assert "Could not connect" in status["database_failure"].reason


async def test_an_endpoint_that_never_answers_times_out_as_no_data() -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        status = await checker(make_pack(f"http://127.0.0.1:{port}", "hang", "0.5s")).check()
        assert time.monotonic() - started < 3
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert status["database_failure"].state == "unknown"
    assert status["database_failure"].reason.endswith("listing timed out after 0.5s")


async def test_credentials_can_come_from_config_secrets(
    s3: Any, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("SRD_S3_KEY", "srd-key")
    monkeypatch.setenv("SRD_S3_SECRET", "srd-secret")
    await seeded(s3, "secrets", [600])
    extra = ", access_key_id: {env: SRD_S3_KEY}, secret_access_key: {env: SRD_S3_SECRET}"
    status = await checker(make_pack(moto_url, "secrets", s3_extra=extra)).check()
    assert status["database_failure"].state == "met"


class Journal:
    def __init__(self, records: list[RecoveryRecord]) -> None:
        self.records = records

    async def recovery_records(self) -> Sequence[RecoveryRecord]:
        return self.records


async def test_readiness_is_assessed_and_exported_from_s3_and_the_journal(
    s3: Any, moto_url: str
) -> None:
    await seeded(s3, "ready", [600 + i * HOUR for i in range(30)])
    metrics = EvaluationMetrics(CollectorRegistry())
    journal = Journal([RecoveryRecord("database_failure", NOW - 9000, NOW - 3000, "drill")])
    pack = make_pack(moto_url, "ready")
    summary = await assess_readiness(checker(pack), journal)
    for item in summary:
        record_readiness(metrics, item)

    database = summary[0].to_dict()
    assert (database["rpo_state"], database["rto_last_seconds"], database["rto_met"]) == (
        "met",
        6000.0,
        True,
    )
    assert database["last_drill_at"] == NOW - 3000

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("srd_rpo_met", scenario="database_failure") == 1.0
    assert value("srd_rpo_unknown", scenario="database_failure") == 0.0
    assert value("srd_backup_age_seconds", scenario="complete_data_center_outage") == 1800.0
    location = "s3://vilokanam-backups-ready/blockchain/"
    assert value("srd_backup_count", scenario="blockchain_node_failure", location=location) == 7
    assert value("srd_rto_last_seconds", scenario="database_failure") == 6000.0
    assert value("srd_dr_last_drill_timestamp_seconds", scenario="database_failure") == NOW - 3000


@pytest.mark.parametrize(
    ("database", "blockchain", "met"),
    [(29, 6, 0.0), (30, 7, 1.0), (31, 8, 0.0)],
    ids=["one-missing", "as-kept", "one-too-many"],
)
async def test_retention_is_met_with_exactly_the_backups_the_policy_keeps_and_alerts_otherwise(
    s3: Any, moto_url: str, database: int, blockchain: int, met: float
) -> None:
    environment = f"keep-{database}"
    bucket = f"vilokanam-backups-{environment}"
    await s3.create_bucket(Bucket=bucket)
    db_ages = [600 + i * HOUR for i in range(database)]
    chain_ages = [1800 + i * 6 * HOUR for i in range(blockchain)]
    await put_backups(s3, bucket, "database/", "postgres-backup-{timestamp}.sql.gz", db_ages)
    await put_backups(s3, bucket, "blockchain/", "blockchain-state-{timestamp}.tar.gz", chain_ages)
    metrics = DaemonMetrics()
    for item in await assess_readiness(checker(make_pack(moto_url, environment)), Journal([])):
        record_readiness(metrics.evaluation, item)

    locations = {
        ("database_failure", f"s3://{bucket}/database/"),
        ("blockchain_node_failure", f"s3://{bucket}/blockchain/"),
        ("complete_data_center_outage", f"s3://{bucket}/database/"),
        ("complete_data_center_outage", f"s3://{bucket}/blockchain/"),
    }
    for scenario, location in locations:
        labels = {"scenario": scenario, "location": location}
        assert metrics.registry.get_sample_value("srd_backup_retention_met", labels) == met

    engine = Engine(
        [], metrics.evaluation, samples=metrics.samples, extra_groups=[recovery_alerts()]
    )

    def missed(at: float) -> set[tuple[str, str]]:
        engine.evaluate(at)
        return {
            (dict(a.labels)["scenario"], dict(a.labels)["location"])
            for a in engine.states.alerts()
            if a.name == "DisasterRecoveryRetentionMissed" and a.state == "firing"
        }

    assert missed(NOW) == set()  # a backup run in progress is off by one for minutes
    assert missed(NOW + RETENTION_FOR) == (set() if met else locations)
