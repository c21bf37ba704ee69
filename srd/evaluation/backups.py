"""Backup freshness judged: each scenario's RPO from what the S3 probe lists
(``srd.probes.backups``), and the DR readiness that joins it with measured RTO."""

from __future__ import annotations

from collections.abc import Callable

from aiobotocore.session import AioSession

from srd.clock import now as clock_now
from srd.evaluation.recovery import (
    Readiness,
    RecoveryPack,
    RecoverySource,
    RpoStatus,
    judge_rpo,
    readiness,
)
from srd.probes.backups import BackupLister


class BackupChecker:
    """Checks every backup location of a DR pack and judges each scenario's RPO.

    Wire it as a periodic task every ``pack.srd.s3.interval``: ``await checker.check()``."""

    def __init__(
        self,
        pack: RecoveryPack,
        *,
        clock: Callable[[], float] = clock_now,
        session: AioSession | None = None,
    ) -> None:
        self.pack = pack
        self._lister = BackupLister(pack.srd.s3, pack.srd.environment, clock=clock, session=session)

    async def check(self) -> dict[str, RpoStatus]:
        """RPO status per scenario; a location shared by scenarios is listed once."""
        backups = self.pack.srd.backups
        by_location = await self._lister.list(loc for locs in backups.values() for loc in locs)
        return {
            s.scenario: judge_rpo(
                s.scenario, self.pack.rpo(s), [by_location[loc] for loc in backups[s.scenario]]
            )
            for s in self.pack.scenarios
        }


async def assess_readiness(checker: BackupChecker, source: RecoverySource) -> list[Readiness]:
    """Check backups, read recoveries and return the DR readiness of every scenario."""
    rpo = await checker.check()
    return readiness(checker.pack, rpo, await source.recovery_records())
