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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)
from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from srd.clock import now as clock_now
from srd.config.durations import Duration
from srd.config.types import SecretRef, Strict


class BackupLocation(Strict):
    """Where one kind of backup lands: ``s3://{bucket}/{prefix}{pattern}``.

    The timestamp in the object name is the time of the data (UTC, as the platform's backup
    job names its files); it ages a backup, not the upload time (see ``backups``)."""

    bucket: str = Field(description="May use {environment}, e.g. vilokanam-backups-{environment}.")
    prefix: str = Field(description="Key prefix, e.g. database/.")
    pattern: str = Field(
        description="Object name after the prefix, with {timestamp} where the time goes."
    )
    timestamp_format: str = Field("%Y%m%d-%H%M%S", description="strptime format of {timestamp}.")
    retention_count: int = Field(gt=0, description="How many backups the platform keeps.")

    @field_validator("bucket")
    @classmethod
    def _bucket_template(cls, value: str) -> str:
        try:
            value.format(environment="env")
        except (KeyError, IndexError, ValueError):
            raise ValueError("the bucket may use only the placeholder {environment}") from None
        return value

    @field_validator("pattern")
    @classmethod
    def _one_timestamp(cls, value: str) -> str:
        if value.count("{timestamp}") != 1:
            raise ValueError("the pattern must contain {timestamp} exactly once")
        return value

    def bucket_name(self, environment: str) -> str:
        return self.bucket.format(environment=environment)

    def url(self, environment: str) -> str:
        """``s3://bucket/prefix``: how reports and metric labels name the location."""
        return f"s3://{self.bucket_name(environment)}/{self.prefix}"


class S3Settings(Strict):
    """How srd reaches S3. Credentials come from the standard AWS chain unless both keys are
    given here as secrets ({env: …} or {file: …})."""

    endpoint_url: AnyHttpUrl | None = Field(None, description="For S3-compatible stores, moto.")
    region: str = "us-east-1"
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    timeout: Duration = Field(
        20.0,
        description="Budget for listing one location, all pages included. A 30-object prefix "
        "lists in one page well under a second; the rest absorbs a slow endpoint.",
    )
    interval: Duration = Field(
        300.0, description="How often to check. Backups run hourly at most; 5 m is plenty."
    )

    @model_validator(mode="after")
    def _both_keys_or_none(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if not 0 < self.timeout <= self.interval:
            raise ValueError("timeout must be greater than 0 and at most the interval")
        return self


@dataclass(frozen=True, slots=True)
class LocationStatus:
    """What one backup location holds at ``checked_at``.

    ``reason`` non-empty is the no-data state (listing failed or timed out): the other fields
    are then None and nothing may be concluded from them."""

    location: str
    checked_at: float
    retention_count: int
    reason: str = ""
    count: int | None = None
    """Objects whose name matches the pattern, empty ones included."""
    newest_good_key: str | None = None
    newest_good_at: float | None = None
    """Time of the newest non-empty backup's data (Unix seconds)."""
    notes: tuple[str, ...] = ()

    @property
    def age(self) -> float | None:
        return None if self.newest_good_at is None else self.checked_at - self.newest_good_at

    @property
    def retention(self) -> Literal["ok", "too_few", "too_many"] | None:
        """Too few means backups are missing; too many means pruning stopped."""
        if self.count is None:
            return None
        if self.count < self.retention_count:
            return "too_few"
        return "too_many" if self.count > self.retention_count else "ok"


SKEW_TOLERANCE = 300.0
"""Seconds a name's timestamp may be after the upload before it is reported: backup hosts'
clocks drift, but by minutes, not more."""

PAGE_SIZE = 1000
"""Keys per listing request: S3's maximum, so the platform's 30 backups take one request."""


class BackupLister:
    """Lists backup locations in S3 and summarises each (``LocationStatus``); judging them
    against an RPO is evaluation's job (``srd.evaluation.backups``)."""

    def __init__(
        self,
        settings: S3Settings,
        environment: str,
        *,
        clock: Callable[[], float] = clock_now,
        session: AioSession | None = None,
    ) -> None:
        self.settings = settings
        self.environment = environment
        self._clock = clock
        self._session = session or get_session()

    async def list(
        self, locations: Iterable[BackupLocation]
    ) -> dict[BackupLocation, LocationStatus]:
        """Each location's status; listed concurrently, each within its own timeout, a
        location given twice listed once."""
        unique = list(dict.fromkeys(locations))
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._check_location(loc)) for loc in unique]
        return {loc: task.result() for loc, task in zip(unique, tasks, strict=True)}

    async def _check_location(self, location: BackupLocation) -> LocationStatus:
        settings = self.settings
        environment = self.environment
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
