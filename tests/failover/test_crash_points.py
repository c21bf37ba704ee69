"""Every journal write of one execution of the shipped platform failover runbook is a crash
point: srd dies right after the write commits, restarts on the same journal and resumes. The
execution must end as an uninterrupted one does, no actuator write may be repeated (reads
may), and no step may count as done without its verify.

The fault point is in the journal layer (a test-only subclass of the real ``SqliteJournal``):
the write commits, then ``Crash`` — a BaseException nothing in srd catches — unwinds the
executor as a SIGKILL would end it, and the restart builds everything anew on the file."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from srd.actuators.aws import AwsActuator
from srd.actuators.base import Params, Plan, State
from srd.actuators.kubernetes import KubernetesActuator
from srd.config import Mode
from srd.failover.checks import CheckResult
from srd.failover.executor import ACTUATOR_RETRY, Executor
from srd.failover.guards import Guards, KillSwitch
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Check, Runbook, parse_runbooks
from srd.journal import ExecutionState, Fence, SqliteJournal, StepRecord
from srd.journal.sql import Op
from tests.support.failoverkit import LOOSE, Leader

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "rules" / "runbooks" / "platform_failover.yaml").read_text()

Event = tuple[str, ...]


class Crash(BaseException):
    """srd dies here (a BaseException: no ``except Exception`` of srd's catches it)."""


class World:
    """What the actuators change (Kubernetes, AWS), outliving every srd process; and one log
    of actuator writes, checks and journal writes, in the order they happened."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.log: list[Event] = []

    def writes(self) -> list[Event]:
        return [e for e in self.log if e[0] in ("apply", "restore")]


class WorldActuator:
    """Any action of the shipped runbook over ``World``: the target is the action and its
    params; ``converged`` when the target holds them."""

    def __init__(self, name: str, world: World) -> None:
        self.name = name
        self._world = world

    def actions(self) -> frozenset[str]:
        # The real actuators' actions: the shipped runbook loads as it does in production.
        return frozenset(AwsActuator.models) | frozenset(KubernetesActuator.models)

    def validate(self, action: str, params: Params) -> None:
        return None

    def _target(self, action: str, params: Params) -> str:
        return f"{self.name}:{action}:{json.dumps(dict(params), sort_keys=True)}"

    async def snapshot(self, action: str, params: Params) -> State:
        return {"applied": self._world.state.get(self._target(action, params), False)}

    async def plan(self, action: str, params: Params) -> Plan:
        return Plan(action, self._target(action, params))

    async def apply(self, action: str, params: Params) -> State:
        target = self._target(action, params)
        self._world.log.append(("apply", target))
        self._world.state[target] = True
        return {"applied": True}

    async def converged(self, action: str, params: Params) -> bool:
        return bool(self._world.state.get(self._target(action, params), False))

    async def restore(self, action: str, params: Params, prior: State) -> None:
        target = self._target(action, params)
        self._world.log.append(("restore", target))
        self._world.state[target] = prior["applied"]

    async def close(self) -> None:
        return None


class PassingChecks:
    """Every check passes; each one is logged, so the test can tell a verify happened."""

    def __init__(self, world: World) -> None:
        self._world = world

    async def __call__(self, check: Check) -> CheckResult:
        self._world.log.append(("check", check.describe()))
        return CheckResult(True)


class CrashingJournal(SqliteJournal):
    """The real SQLite journal with a fault point after each write's commit: the
    ``crash_at``-th write (counted from ``armed``) commits, then srd dies."""

    world: World
    crash_at: int | None = None
    armed = False
    writes = 0

    async def _write(self, what: str, make: Callable[[], Op[T]], *, durable: bool = True) -> T:
        result = await super()._write(what, make, durable=durable)
        if self.armed:
            self.writes += 1
            if self.writes == self.crash_at:
                self.world.log.append(("crash", str(self.writes)))
                raise Crash
        return result

    async def step(self, record: StepRecord, *, fence: Fence | None = None) -> None:
        self.world.log.append(("step", record.name, record.phase, str(record.result)))
        await super().step(record, fence=fence)


@dataclass
class Srd:
    """One srd process's failover parts, on the journal file."""

    journal: CrashingJournal
    executor: Executor


@asynccontextmanager
async def srd(tmp_path: Path, world: World, crash_at: int | None) -> AsyncIterator[Srd]:
    journal = await CrashingJournal.open(tmp_path / "journal.sqlite3")
    assert isinstance(journal, CrashingJournal)
    journal.world, journal.crash_at = world, crash_at
    metrics = FailoverMetrics(CollectorRegistry())
    checks = PassingChecks(world)
    guards = Guards(
        mode=lambda: Mode.ARMED,
        kill_switch=KillSwitch(tmp_path / "killswitch", journal),
        leadership=Leader(),
        journal=journal,
        limits=LOOSE,
        checks=checks,
        metrics=metrics,
    )
    actuators = {name: WorldActuator(name, world) for name in ("kubernetes", "aws")}
    executor = Executor(
        journal=journal,
        actuators=actuators,
        guards=guards,
        checks=checks,
        metrics=metrics,
        escalate=lambda _: None,
        poll_interval=0.01,
        retry=replace(ACTUATOR_RETRY, initial=0.01),
    )
    try:
        yield Srd(journal, executor)
    finally:
        await journal.close()


def runbook_of(text: str, world: World) -> Runbook:
    actuators = {name: WorldActuator(name, world) for name in ("kubernetes", "aws")}
    return parse_runbooks(text, "platform_failover.yaml", actuators)[0]


def with_verify(text: str) -> str:
    """The shipped runbook with a verify on every action step (``verify-<step>``)."""
    return re.sub(
        r"(\n      - name: (\w+)\n        action:)",
        lambda m: (
            f"\n      - name: {m.group(2)}\n        verify: {{probe: verify-{m.group(2)}}}"
            "\n        action:"
        ),
        text,
    )


RUNBOOKS = {"shipped": SHIPPED, "verified": with_verify(SHIPPED)}


async def carry_out(
    tmp_path: Path, world: World, text: str, crash_at: int | None
) -> tuple[ExecutionState | None, int]:
    """Plan and run one execution, crash at ``crash_at``; then restart and resume whatever the
    journal holds unfinished. The execution's final state and the writes of the first run."""
    runbook = runbook_of(text, world)
    async with srd(tmp_path, world, crash_at) as first:
        alert = {"fingerprint": "fp", "startsAt": "2024-01-01T00:00:00Z", "labels": {}}
        execution = await first.journal.start_execution(
            runbook.name, f"{runbook.name}/fp", "armed", "corr", alert
        )
        assert execution is not None
        first.journal.armed = True
        try:
            await first.executor.run(runbook, execution)
        except Crash:
            world.log.append(("restart",))
        writes = first.journal.writes
    async with srd(tmp_path, world, None) as second:
        # The steps' timeouts are minutes: a resume that waits them out has failed already.
        async with asyncio.timeout(10):
            for unfinished in await second.journal.unfinished():
                await second.executor.resume(runbook, unfinished)
        final = await second.journal.execution(execution.id)
        assert final is not None
        return final.state, writes


def done_without_verify(log: list[Event], runbook: Runbook) -> list[str]:
    """Steps journaled ``ended ok`` with no passing check of theirs (an action's verify, a
    check step's check) since their last ``started``."""
    required = {}
    for remedy in runbook.plan:
        for step in remedy.steps:
            check = step.verify or step.check or step.wait_until
            if check is not None:
                required[step.name] = check.describe()
    unverified: list[str] = []
    passed: set[str] = set()
    for event in log:
        if event[0] == "step" and event[2] == "started":
            passed.discard(event[1])
        elif event[0] == "check":
            passed |= {name for name, check in required.items() if check == event[1]}
        elif event[0] == "step" and event[2:] == ("ended", "ok") and event[1] not in passed:
            unverified += [event[1]] if event[1] in required else []
    return unverified


@pytest.mark.parametrize("variant", RUNBOOKS)
async def test_an_uninterrupted_execution_of_the_platform_failover_makes_fourteen_writes(
    tmp_path: Path, variant: str
) -> None:
    world = World()
    state, writes = await carry_out(tmp_path, world, RUNBOOKS[variant], None)
    assert state == "succeeded"
    # running; a started and an ended for each of the six steps; succeeded
    assert writes == 14
    assert len(world.writes()) == 4
    assert done_without_verify(world.log, runbook_of(RUNBOOKS[variant], world)) == []


@pytest.mark.parametrize("variant", RUNBOOKS)
@pytest.mark.parametrize("crash_at", range(1, 15))
async def test_a_crash_right_after_any_journal_write_resumes_to_the_same_end_repeating_no_write(
    tmp_path: Path, variant: str, crash_at: int
) -> None:
    reference = World()
    expected, _ = await carry_out(tmp_path / "reference", reference, RUNBOOKS[variant], None)

    world = World()
    state, _ = await carry_out(tmp_path / "crashed", world, RUNBOOKS[variant], crash_at)

    assert ("crash", str(crash_at)) in world.log
    assert state == expected == "succeeded"
    assert world.state == reference.state
    # Each actuator write exactly once, as in the uninterrupted run; nothing rolled back.
    assert sorted(world.writes()) == sorted(reference.writes())
    assert done_without_verify(world.log, runbook_of(RUNBOOKS[variant], world)) == []
