"""Backup freshness from S3 (aiobotocore): the measurement behind each scenario's RPO.

A backup's age comes from the timestamp in its name (the time of the data), cross-checked with
S3's LastModified (the upload): the earlier of the two counts, because a backup cannot hold
data newer than its upload. That also makes copies and restores of old backups, whose
LastModified is the copy time, age correctly — and it is why tests against moto (which stamps
every object "now") age their objects by name.

A newest backup of 0 bytes is a failed backup job, not a good backup: the newest non-empty one
counts. A listing that fails or times out is no-data with a reason, never "met".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from srd import clock
from srd.evaluation.recovery import (
    BackupLocation,
    LocationStatus,
    Readiness,
    RecoveryPack,
    RecoverySource,
    RpoStatus,
    S3Settings,
    judge_rpo,
    readiness,
)
from srd.metrics import Metrics

SKEW_TOLERANCE = 300.0
"""Seconds a name's timestamp may be after the upload before it is reported: backup hosts'
clocks drift, but by minutes, not more."""

PAGE_SIZE = 1000
"""Keys per listing request: S3's maximum, so the platform's 30 backups take one request."""


class BackupChecker:
    """Checks every backup location of a DR pack and judges each scenario's RPO.

    Wire it as a periodic task every ``pack.srd.s3.interval``: ``await checker.check()``."""

    def __init__(
        self,
        pack: RecoveryPack,
        *,
        clock: Callable[[], float] = clock.now,
        session: AioSession | None = None,
    ) -> None:
        self.pack = pack
        self._clock = clock
        self._session = session or get_session()

    async def check(self) -> dict[str, RpoStatus]:
        """RPO status per scenario. Locations are listed concurrently, each within its own
        timeout, and a location shared by scenarios is listed once."""
        backups = self.pack.srd.backups
        unique = list(dict.fromkeys(loc for locs in backups.values() for loc in locs))
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._check_location(loc)) for loc in unique]
        by_location = {loc: task.result() for loc, task in zip(unique, tasks, strict=True)}
        return {
            s.scenario: judge_rpo(
                s.scenario, self.pack.rpo(s), [by_location[loc] for loc in backups[s.scenario]]
            )
            for s in self.pack.scenarios
        }

    async def _check_location(self, location: BackupLocation) -> LocationStatus:
        settings = self.pack.srd.s3
        environment = self.pack.srd.environment
        url = location.url(environment)
        scan = _Scan(location)
        try:
            async with (
                asyncio.timeout(settings.timeout),
                self._session.create_client("s3", **_client_args(settings)) as client,
            ):
                paginator = client.get_paginator("list_objects_v2")
                pages = paginator.paginate(
                    Bucket=location.bucket_name(environment),
                    Prefix=location.prefix,
                    PaginationConfig={"PageSize": PAGE_SIZE},
                )
                async for page in pages:
                    for obj in page.get("Contents", ()):
                        scan.add(obj["Key"], obj["Size"], obj["LastModified"].timestamp())
        except TimeoutError:
            reason = f"listing timed out after {settings.timeout:g}s"
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'error')}: {error.get('Message', exc)}"
        except (BotoCoreError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        else:
            return scan.status(url, self._clock())
        return LocationStatus(url, self._clock(), location.retention_count, reason=reason)


async def assess_readiness(
    checker: BackupChecker, source: RecoverySource, metrics: Metrics
) -> list[Readiness]:
    """Check backups, read recoveries, export and return the DR readiness of every scenario."""
    rpo = await checker.check()
    summary = readiness(checker.pack, rpo, await source.recovery_records())
    for item in summary:
        metrics.record_readiness(item)
    return summary


def _client_args(settings: S3Settings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "region_name": settings.region,
        # One retry rides out a dropped connection; more would only eat the timeout.
        "config": AioConfig(
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            retries={"total_max_attempts": 2, "mode": "standard"},
        ),
    }
    if settings.endpoint_url is not None:
        args["endpoint_url"] = str(settings.endpoint_url)
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        args["aws_access_key_id"] = settings.access_key_id.value
        args["aws_secret_access_key"] = settings.secret_access_key.value
    return args


@dataclass
class _Scan:
    """Running summary of a listing: memory stays flat however many objects a prefix holds."""

    location: BackupLocation
    count: int = 0
    unmatched: int = 0
    skewed: int = 0
    newest_good: tuple[float, str] | None = None
    newest_any: tuple[float, str, int] | None = None
    _name: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        before, after = self.location.pattern.split("{timestamp}")
        self._name = re.compile(re.escape(before) + "(.+)" + re.escape(after) + r"\Z")

    def add(self, key: str, size: int, last_modified: float) -> None:
        named_at = self._named_at(key.removeprefix(self.location.prefix))
        if named_at is None:
            self.unmatched += 1
            return
        self.count += 1
        if named_at > last_modified + SKEW_TOLERANCE:
            self.skewed += 1
        taken_at = min(named_at, last_modified)
        if self.newest_any is None or taken_at > self.newest_any[0]:
            self.newest_any = (taken_at, key, size)
        if size > 0 and (self.newest_good is None or taken_at > self.newest_good[0]):
            self.newest_good = (taken_at, key)

    def _named_at(self, name: str) -> float | None:
        match = self._name.match(name)
        if match is None:
            return None
        try:
            parsed = datetime.strptime(match.group(1), self.location.timestamp_format)
        except ValueError:
            return None
        # The platform's backup job stamps names in UTC.
        return parsed.replace(tzinfo=UTC).timestamp()

    def status(self, url: str, now: float) -> LocationStatus:
        notes = []
        if self.newest_any is not None and self.newest_any[2] == 0:
            notes.append(f"newest backup {self.newest_any[1]} is empty (0 bytes)")
        if self.unmatched:
            notes.append(f"{self.unmatched} objects do not match {self.location.pattern}")
        if self.skewed:
            notes.append(
                f"{self.skewed} backups are named later than their upload; upload time used"
            )
        good_at, good_key = self.newest_good if self.newest_good else (None, None)
        return LocationStatus(
            location=url,
            checked_at=now,
            retention_count=self.location.retention_count,
            count=self.count,
            newest_good_key=good_key,
            newest_good_at=good_at,
            notes=tuple(notes),
        )
