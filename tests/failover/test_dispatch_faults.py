"""Liveness of executions under journal faults: an execution a failed journal write
interrupted is resumed by the leader, never left ``running`` (issue 16, defect 11). The
faults are real: a second SQLite connection holding ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from srd.config import Mode
from srd.failover import dispatch
from srd.failover.dispatch import Dispatcher
from srd.failover.intake import IncomingAlert, Intake
from srd.failover.runbooks import Runbook
from srd.journal import AlertReceipt
from srd.journal import sqlite as sqlite_journal
from tests.support.eventually import eventually
from tests.support.failoverkit import THREE_STEPS, Kit, kit


class Blocker:
    """Another process's connection to the journal file that holds its write lock."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)

    def hold(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self._db.close()


@contextmanager
def blocker(path: Path) -> Iterator[Blocker]:
    held = Blocker(path)
    try:
        yield held
    finally:
        held.close()


@pytest.fixture(autouse=True)
def quick_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    # A locked journal fails a write after a fraction of a second, and the leader tries again
    # soon: the test is about what happens, not about the production waits.
    monkeypatch.setattr(sqlite_journal, "BUSY_TIMEOUT", 0.2)
    monkeypatch.setattr(
        dispatch, "EXECUTION_RETRY", replace(dispatch.EXECUTION_RETRY, initial=0.2, maximum=0.5)
    )


def dispatcher_of(k: Kit, runbook: Runbook) -> Dispatcher:
    return Dispatcher(
        intake=Intake(10),
        journal=k.journal,
        executor=k.executor,
        runbooks=[runbook],
        mode=lambda: Mode.ARMED,
        metrics=k.metrics,
        leadership=k.leader,
        poll=0.1,
        clock=k.clock,
    )


async def received(k: Kit, dispatcher: Dispatcher, alert: IncomingAlert) -> None:
    """As the webhook and the intake hand it over: the receipt committed, then decided."""
    receipt = AlertReceipt(alert.fingerprint, alert.starts_at, alert.status, alert.to_dict())
    await k.journal.record_alerts([receipt])
    await dispatcher.decide([alert], [receipt])


def firing(fingerprint: str = "fp1") -> IncomingAlert:
    return IncomingAlert(
        source="alertmanager",
        status="firing",
        fingerprint=fingerprint,
        starts_at="2024-01-01T00:00:00.000Z",
        labels={"alertname": "Down"},
    )


def stuck_gauge(k: Kit) -> float | None:
    return k.metrics.registry.get_sample_value("srd_executions_stuck")


@asynccontextmanager
async def stuck_on_step_b(k: Kit, tmp_path: Path) -> AsyncIterator[tuple[Dispatcher, Blocker]]:
    """A running dispatcher whose execution is stuck: the journal locks up while step b acts,
    so b's "ended" write fails. The dispatcher and the lock (``release()`` it to recover)."""
    dispatcher = dispatcher_of(k, k.runbook(THREE_STEPS))
    with blocker(tmp_path / "journal.sqlite3") as lock:
        k.actuator.before_apply = lambda key: lock.hold() if key == "b" else None
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            await received(k, dispatcher, firing())

            async def stuck() -> bool:
                return bool(dispatcher.stuck)

            await eventually(stuck, within=10, what="the execution counted as stuck")
            yield dispatcher, lock
        finally:
            stop.set()
            await task


async def test_an_execution_whose_step_write_failed_is_resumed_once_the_journal_is_back(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k, stuck_on_step_b(k, tmp_path) as (dispatcher, lock):
        [why] = dispatcher.stuck.values()
        assert "locked" in why
        assert stuck_gauge(k) == 1
        lock.release()

        async def succeeded() -> bool:
            executions = await k.journal.executions()
            return [e.state for e in executions] == ["succeeded"]

        await eventually(succeeded, within=10, what="the execution succeeded")
        assert dispatcher.stuck == {}
        assert stuck_gauge(k) == 0
        # Resumed from the journal: b was not applied again, and ended only when verified.
        assert k.actuator.calls == [("apply", "a", 1), ("apply", "b", 2), ("apply", "c", 3)]
        [execution] = await k.journal.executions()
        ended = [s for s in await k.journal.steps(execution.id) if s.phase == "ended"]
        assert [(s.name, s.result) for s in ended] == [("a", "ok"), ("b", "ok"), ("c", "ok")]


async def test_a_stuck_execution_is_let_go_on_losing_the_lead_and_taken_up_on_regaining_it(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k, stuck_on_step_b(k, tmp_path) as (dispatcher, lock):
        k.leader.leader = False

        async def let_go() -> bool:
            return not dispatcher.stuck

        await eventually(let_go, within=10, what="the execution let go")
        lock.release()
        [execution] = await k.journal.unfinished()
        assert execution.state == "running"
        k.leader.leader = True
        dispatcher.acquired()
        await k.reaches(execution.id, "succeeded", within=10)  # taken up again
        assert [c for c in k.actuator.calls if c[0] == "apply"] == [
            ("apply", "a", 1),
            ("apply", "b", 2),
            ("apply", "c", 3),
        ]
