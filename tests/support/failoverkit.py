"""Builds the failover pipeline for tests: real SqliteJournal, fake actuator and checks."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config import Mode
from srd.config.failover import WebhookAuth
from srd.failover.dispatch import Dispatcher, DispatchJournal
from srd.failover.executor import ACTUATOR_RETRY, Executor
from srd.failover.guards import Guards, KillSwitch, Limits
from srd.failover.intake import Intake
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Runbook, parse_runbooks
from srd.http.alertmanager import add_routes
from srd.http.auth import Authenticator
from srd.http.failover_api import add_api_routes
from srd.journal import ExecutionRecord, Fence, SqliteJournal
from srd.journal.sql import SqlJournal
from srd.model import Alert
from srd.testing import FakeActuator, FakeChecks
from tests.support.clock import Clock
from tests.support.eventually import eventually
from tests.support.servers import running

OPERATORS = {"ann": "ann-secret-token", "bob": "bob-secret-token"}
"""Two operators' named tokens (``operators``)."""


def operators(directory: Path) -> WebhookAuth:
    """``failover.auth`` with the named tokens of ann and bob (their secrets in files)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokens = []
    for name, secret in OPERATORS.items():
        (directory / f"{name}.token").write_text(secret)
        tokens.append({"name": name, "token": {"file": str(directory / f"{name}.token")}})
    return WebhookAuth.model_validate({"tokens": tokens})


def as_operator(name: str) -> dict[str, str]:
    """The headers of a request with ``name``'s token."""
    return {"Authorization": f"Bearer {OPERATORS[name]}"}


LOOSE = Limits(cooldown=0, flap_window=0, flap_max=100, execution_window=0, max_executions=100)


class Leader:
    def __init__(self) -> None:
        self.leader = True
        self.fenced_as: Fence | None = None
        """What ``fence()`` answers: None (unfenced, as a single srd) unless a test sets it."""

    def is_leader(self) -> bool:
        return self.leader

    def fence(self) -> Fence | None:
        return self.fenced_as


@dataclass
class Kit:
    journal: SqlJournal
    actuator: FakeActuator
    checks: FakeChecks
    guards: Guards
    executor: Executor
    metrics: FailoverMetrics
    clock: Clock
    leader: Leader
    mode: list[Mode]
    escalations: list[Alert] = field(default_factory=list)

    def runbook(self, text: str) -> Runbook:
        [runbook] = parse_runbooks(textwrap.dedent(text), "test.yaml", {"fake": self.actuator})
        return runbook

    async def execution(
        self,
        runbook: Runbook,
        fingerprint: str = "fp1",
        starts_at: str = "2024-01-01T00:00Z",
        labels: dict[str, str] | None = None,
    ) -> ExecutionRecord:
        alert = {"fingerprint": fingerprint, "startsAt": starts_at, "labels": labels or {}}
        key = f"{runbook.name}/{fingerprint}/{starts_at}"
        record = await self.journal.start_execution(
            runbook.name, key, self.mode[0].value, "corr", alert
        )
        assert record is not None
        return record

    async def state(self, execution_id: str) -> str:
        record = await self.journal.execution(execution_id)
        assert record is not None
        return record.state

    async def reaches(self, execution_id: str, state: str, *, within: float) -> None:
        """Until the execution's journalled state is ``state``; the test fails after ``within``."""

        async def reached() -> bool:
            return await self.state(execution_id) == state

        await eventually(reached, within=within, what=f"{execution_id} {state}")

    async def guards_blocked(self, execution_id: str) -> list[str]:
        return [b.guard for b in await self.journal.guard_blocks(execution_id)]

    async def run_blocked(self, runbook: Runbook, execution: ExecutionRecord) -> list[str]:
        """Run ``execution``, which must end blocked: the guards the journal says blocked it."""
        assert await self.executor.run(runbook, execution) == "blocked"
        return await self.guards_blocked(execution.id)

    def dispatcher(
        self,
        intake: Intake,
        runbooks: Sequence[Runbook],
        mode: Mode,
        journal: DispatchJournal | None = None,
    ) -> Dispatcher:
        """A dispatcher in ``mode`` over the kit's journal (or ``journal``, standing in for
        it), its executor, leadership and clock."""
        return Dispatcher(
            intake=intake,
            journal=journal or self.journal,
            executor=self.executor,
            runbooks=runbooks,
            mode=lambda: mode,
            metrics=self.metrics,
            leadership=self.leader,
            poll=1.0,
            clock=self.clock,
        )

    @asynccontextmanager
    async def api(self, auth: WebhookAuth | None = None) -> AsyncIterator[str]:
        """The kit's webhook and failover API (kill switch, approvals), behind ``auth`` (by
        default none: every caller is ``anonymous``), served on a free port: its base URL."""
        app = web.Application()
        add_routes(app, Intake(10), Authenticator(auth), self.metrics, 1024)
        add_api_routes(app, self.guards.kill_switch, self.guards.approvals)
        async with running(app) as server:
            yield server.url


@asynccontextmanager
async def kit(
    tmp_path: Path,
    mode: Mode = Mode.ARMED,
    limits: Limits = LOOSE,
    *,
    journal_of: Callable[[Clock], Awaitable[SqlJournal]] | None = None,
    **healthy: bool,
) -> AsyncIterator[Kit]:
    """``journal_of``: opens the journal (another backend, or one file several kits share —
    replicas); by default a SQLite journal in ``tmp_path``."""
    clock = Clock()
    if journal_of is None:
        journal: SqlJournal = await SqliteJournal.open(tmp_path / "journal.sqlite3", clock=clock)
    else:
        journal = await journal_of(clock)
    metrics = FailoverMetrics(CollectorRegistry())
    actuator = FakeActuator()
    checks = FakeChecks(**healthy)
    leader = Leader()
    modes = [mode]
    guards = Guards(
        mode=lambda: modes[0],
        kill_switch=KillSwitch(tmp_path / "killswitch", journal),
        leadership=leader,
        journal=journal,
        limits=limits,
        checks=checks,
        metrics=metrics,
        clock=clock,
    )
    escalations: list[Alert] = []
    executor = Executor(
        journal=journal,
        actuators={"fake": actuator},
        guards=guards,
        checks=checks,
        metrics=metrics,
        escalate=escalations.append,
        poll_interval=0.01,
        retry=replace(ACTUATOR_RETRY, initial=0.01),
    )
    try:
        yield Kit(
            journal, actuator, checks, guards, executor, metrics, clock, leader, modes, escalations
        )
    finally:
        await journal.close()


def on_down(name: str, *steps: str) -> str:
    """A runbook file of one runbook, ``name``, that acts on alertname="Down" with ``steps``
    (each one step in YAML flow style)."""
    items = "".join(f"      - {step}\n" for step in steps)
    return f'\nrunbooks:\n  - name: {name}\n    match: [alertname="Down"]\n    steps:\n{items}'


def set_step(key: str, value: int, timeout: str = "1s", extra: str = "") -> str:
    """Step ``key``: the fake actuator sets ``key`` to ``value``."""
    action = f"{{actuator: fake, action: set, params: {{key: {key}, value: {value}}}}}"
    return f"{{name: {key}, action: {action},{extra} timeout: {timeout}}}"


ONE_STEP = on_down("one", set_step("a", 1))
APPROVAL = on_down(
    "restore", '{name: ask, approval: "restore the database", timeout: 20s}', set_step("a", 1)
)
FLAGGED = on_down("flagged", set_step("a", 1, "20s", extra=" requires_approval: true,"))
THREE_STEPS = on_down("swap", *(set_step(key, n, "2s") for n, key in enumerate("abc", 1)))
