"""The failover stage assembled: journal, intake, guards, executor and dispatcher. The runtime
builds one per daemon, mounts the HTTP routes that feed and steer its parts (the http layer,
above this one) and swaps its runbooks and actuators on reload; the journal and the intake
queue live as long as the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import urlsplit

import aiohttp
import structlog

from srd.actuators.base import Actuator
from srd.config import Config, Mode
from srd.config.journal import POSTGRES_SCHEMES, postgres_target
from srd.failover.checks import Checks
from srd.failover.dispatch import Dispatcher
from srd.failover.escalation import Pager
from srd.failover.executor import Executor
from srd.failover.guards import BudgetReader, Guards, KillSwitch, Limits
from srd.failover.intake import Intake, from_rule_alert
from srd.failover.leader import Leadership, base_identity
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Runbook
from srd.journal import Journal, JournalError, JournalHealth, journal_path, open_journal
from srd.journal.faults import KINDS
from srd.model import Alert, Observation

log = structlog.get_logger("srd.failover")


class AuthRequired(Exception):
    """An armed replica sharing this replica's journal requires every replica on it to
    authenticate its callers, and this one has no ``failover.auth``: it must not run, or
    anyone could steer the armed one's shared state (kill switch, approvals, executions)
    through it."""

    def __init__(self, journal: str, armed: str) -> None:
        super().__init__(
            f"the journal {journal} is shared with an armed replica ({armed}) that requires "
            "authentication; set failover.auth on this replica too (the same credentials)"
        )


async def share_auth(config: Config, journal: Journal, where: str) -> None:
    """Record that this armed replica requires auth of everyone on ``journal`` (armed implies
    ``failover.auth``), or raise AuthRequired when this replica has none and an armed one
    has recorded it."""
    if config.mode is Mode.ARMED:
        await journal.require_auth(base_identity(config.ha.identity))
    elif config.failover.auth is None and (armed := await journal.auth_required()) is not None:
        raise AuthRequired(where, armed)


class StageParts(TypedDict):
    """What the runtime hands the failover stage besides its config and journal."""

    actuators: Mapping[str, Actuator]
    runbooks: Sequence[Runbook]
    probe_status: Callable[[str], Observation | None]
    leadership: Leadership
    budget: BudgetReader


class FailoverStage:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        session: aiohttp.ClientSession,
        metrics: FailoverMetrics,
        **parts: Unpack[StageParts],
    ) -> None:
        actuators, runbooks = parts["actuators"], parts["runbooks"]
        leadership, budget = parts["leadership"], parts["budget"]
        self.config = config
        self.journal = journal
        failover = config.failover
        self.intake = Intake(failover.queue_size, failover.queue_bytes)
        metrics.intake_alerts.set_function(lambda: self.intake.alerts)
        metrics.intake_bytes.set_function(lambda: self.intake.bytes)
        self.kill_switch = KillSwitch(
            failover.kill_switch_file or config.state_dir / "killswitch", journal
        )
        self.actuators = dict(actuators)
        checks = Checks(session, probe_status=parts["probe_status"])
        self.pager = Pager(session, metrics, lambda: self.config.failover.escalation)
        self.guards = Guards(
            mode=lambda: self.config.mode,
            kill_switch=self.kill_switch,
            leadership=leadership,
            journal=journal,
            limits=Limits.of(failover),
            checks=checks,
            metrics=metrics,
            budget=budget,
        )
        executor = Executor(
            journal=journal,
            # The same dict object: a reload updates it in place for executions to come.
            actuators=self.actuators,
            guards=self.guards,
            checks=checks,
            metrics=metrics,
            escalate=self.pager.page,
        )
        self.dispatcher = Dispatcher(
            intake=self.intake,
            journal=journal,
            executor=executor,
            runbooks=runbooks,
            mode=lambda: self.config.mode,
            metrics=metrics,
            leadership=leadership,
            poll=config.ha.retry_period,
        )

    @classmethod
    async def open(
        cls,
        config: Config,
        session: aiohttp.ClientSession,
        metrics: FailoverMetrics,
        **parts: Unpack[StageParts],
    ) -> FailoverStage:
        failover = config.failover
        password = failover.journal_password.value if failover.journal_password else None
        health = JournalHealth()
        for kind in KINDS:  # the webhook's write, at 0 from the start
            metrics.journal_errors.labels("record_alerts", kind)
        health.listen(lambda op, kind: metrics.journal_errors.labels(op, kind).inc())
        metrics.journal_writable.set_function(lambda: 0 if health.outage else 1)
        target = failover.journal or config.state_dir
        journal = await open_journal(target, create=True, password=password, health=health)
        try:
            await share_auth(config, journal, _shown(target))
        except BaseException:
            await journal.close()
            raise
        return cls(config, journal, session, metrics, **parts)

    def not_ready(self) -> list[str]:
        """Why failover cannot take alerts now (for ``/readyz``); empty when it can."""
        # Every SqlJournal has one; a stand-in journal (tests) may not.
        health: JournalHealth | None = getattr(self.journal, "health", None)
        return health.reasons() if health is not None else []

    async def run(self, stop: asyncio.Event) -> None:
        """The dispatcher task: take alerts; while leading, run what the journal holds
        unfinished (what a previous run or leader left, what followers planned)."""
        await self.dispatcher.run(stop)

    def acquired(self) -> None:
        """This replica leads now: claim the term in the journal and reconcile at once."""
        self.dispatcher.acquired()

    async def deposed(self) -> None:
        """This replica no longer leads: cancel executions in flight, their actuator calls
        with them (the guards alone would stop them only at their next step)."""
        await self.dispatcher.stand_down()

    async def submit(self, alert: Alert) -> None:
        """An alert transition of srd's own rules enters the same path as Alertmanager's."""
        incoming = from_rule_alert(alert)
        if incoming is not None:
            await self.intake.put(incoming)

    def reload(
        self, config: Config, actuators: Mapping[str, Actuator], runbooks: Sequence[Runbook]
    ) -> list[Actuator]:
        """Apply a new config's mode, runbooks, actuators and guard limits to executions still
        to come; returns the replaced actuators, to close once nothing uses them. The queue
        (and its size) lives on, with what it holds. (The routes' credentials and body limit:
        ``FailoverRoutes.reload``.)"""
        self.config = config
        self.guards.limits = Limits.of(config.failover)
        replaced = [old for name, old in self.actuators.items() if actuators.get(name) is not old]
        self.actuators.clear()
        self.actuators.update(actuators)
        self.dispatcher.runbooks = list(runbooks)
        return replaced

    async def prune(self) -> None:
        """Apply ``failover.journal_retention`` to alert receipts (the runtime runs this
        hourly). Executions — finished or not — steps and guard blocks are never pruned."""
        retention = self.config.failover.journal_retention
        try:
            deleted = await self.journal.prune(retention)
        except JournalError as exc:
            log.warning("journal not pruned; trying again later", error=str(exc))
            return
        log.info("journal pruned", receipts_deleted=deleted, older_than_seconds=retention)

    async def close(self) -> None:
        await self.pager.close(self.config.runtime.shutdown_grace)
        for actuator in self.actuators.values():
            await actuator.close()
        await self.journal.close()


def _shown(target: str | Path) -> str:
    """The journal as errors name it: its file, or its URL without the password."""
    text = str(target)
    if urlsplit(text).scheme in POSTGRES_SCHEMES:
        return postgres_target(text).shown
    return str(journal_path(target))
