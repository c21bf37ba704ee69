"""The failover stage assembled: journal, intake, guards, executor and dispatcher, and the
HTTP routes that feed and steer them. The runtime builds one per daemon and swaps its
runbooks and actuators on reload; the journal and the intake queue live as long as the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import aiohttp
import structlog
from aiohttp import web

from srd.actuators.base import Actuator
from srd.api import add_routes as add_journal_routes
from srd.config import Config
from srd.failover import control, webhook
from srd.failover.checks import Checks
from srd.failover.dispatch import Dispatcher
from srd.failover.executor import Executor
from srd.failover.guards import Guards, KillSwitch, Leadership, Limits, budget_from_registry
from srd.failover.intake import Intake, from_rule_alert
from srd.failover.runbooks import Runbook
from srd.journal import Journal, open_journal
from srd.metrics import Metrics
from srd.model import Alert, Observation

log = structlog.get_logger("srd.failover")


class FailoverStage:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        actuators: Mapping[str, Actuator],
        runbooks: Sequence[Runbook],
        probe_status: Callable[[str], Observation | None],
        leadership: Leadership,
    ) -> None:
        self.config = config
        self.journal = journal
        self._metrics = metrics
        failover = config.failover
        self.intake = Intake(failover.queue_size)
        self.auth = webhook.Authenticator(failover.auth)
        self.kill_switch = KillSwitch(failover.kill_switch_file or config.state_dir / "killswitch")
        self.actuators = dict(actuators)
        checks = Checks(session, probe_status=probe_status)
        self.guards = Guards(
            mode=lambda: self.config.mode,
            kill_switch=self.kill_switch,
            leadership=leadership,
            journal=journal,
            limits=Limits.of(failover),
            checks=checks,
            metrics=metrics,
            budget=budget_from_registry(metrics.registry),
        )
        executor = Executor(
            journal=journal,
            # The same dict object: a reload updates it in place for executions to come.
            actuators=self.actuators,
            guards=self.guards,
            checks=checks,
            metrics=metrics,
            escalate=self._escalated,
        )
        self.dispatcher = Dispatcher(
            intake=self.intake,
            journal=journal,
            executor=executor,
            runbooks=runbooks,
            mode=lambda: self.config.mode,
            metrics=metrics,
        )

    @classmethod
    async def open(
        cls,
        config: Config,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        actuators: Mapping[str, Actuator],
        runbooks: Sequence[Runbook],
        probe_status: Callable[[str], Observation | None],
        leadership: Leadership,
    ) -> FailoverStage:
        failover = config.failover
        password = failover.journal_password.value if failover.journal_password else None
        journal = await open_journal(
            failover.journal or config.state_dir, create=True, password=password
        )
        return cls(
            config,
            journal,
            session,
            metrics,
            actuators=actuators,
            runbooks=runbooks,
            probe_status=probe_status,
            leadership=leadership,
        )

    def add_routes(self, app: web.Application) -> None:
        webhook.add_routes(
            app, self.intake, self.auth, self._metrics, self.config.failover.max_body_bytes
        )
        control.add_api_routes(app, self.kill_switch, self.guards.approvals)
        add_journal_routes(app, self.journal)

    async def run(self, stop: asyncio.Event) -> None:
        """The dispatcher task: reconcile what a previous run left, then take alerts."""
        await self.dispatcher.run(stop)

    async def submit(self, alert: Alert) -> None:
        """An alert transition of srd's own rules enters the same path as Alertmanager's."""
        incoming = from_rule_alert(alert)
        if incoming is not None:
            await self.intake.put(incoming)

    def reload(
        self, config: Config, actuators: Mapping[str, Actuator], runbooks: Sequence[Runbook]
    ) -> list[Actuator]:
        """Apply a new config's mode, runbooks and actuators to executions still to come;
        returns the replaced actuators, to close once nothing uses them. Limits, credentials
        and the queue size keep their start-up values until a restart."""
        self.config = config
        replaced = [old for name, old in self.actuators.items() if actuators.get(name) is not old]
        self.actuators.clear()
        self.actuators.update(actuators)
        self.dispatcher.runbooks = list(runbooks)
        return replaced

    async def close(self) -> None:
        for actuator in self.actuators.values():
            await actuator.close()
        await self.journal.close()

    def _escalated(self, alert: Alert) -> None:
        log.error(
            "runbook escalated: health not restored, a human is needed",
            alertname=alert.name,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
        )
