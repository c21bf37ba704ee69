"""The kill switch and approvals under HA: kept in the journal, so a request that reaches any
replica (a Service picks one) steers the leader. Two pipelines over one journal stand for two
replicas, on SQLite (one file) and on a real PostgreSQL server (tests/support/pgserver.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from srd.cli.approve import approve
from srd.failover.runbooks import Runbook
from srd.journal import (
    ExecutionRecord,
    ExecutionState,
    Fence,
    JournalError,
    PostgresJournal,
    SqliteJournal,
)
from srd.journal.sql import SqlJournal
from tests.support.clock import Clock
from tests.support.eventually import eventually
from tests.support.failoverkit import (
    APPROVAL,
    FLAGGED,
    ONE_STEP,
    Kit,
    as_operator,
    kit,
    operators,
)
from tests.support.pgserver import PgServer

Opener = Callable[[Clock], Any]


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the journal every replica of a test shares."""
    if request.param == "sqlite":
        path = tmp_path / "shared.sqlite3"
        return lambda clock: SqliteJournal.open(path, clock=clock)
    server: PgServer = request.getfixturevalue("pg_server")
    db = server.create_database()
    return lambda clock: PostgresJournal.open(db.url, password=db.password, clock=clock)


@asynccontextmanager
async def replicas(tmp_path: Path, opener: Opener, count: int) -> AsyncIterator[list[Kit]]:
    """``count`` pipelines, each with its own state directory (kill-switch file), one journal.
    The first leads (term 1); the others follow."""
    async with AsyncExitStack() as stack:
        kits = []
        for n in range(count):
            k = await stack.enter_async_context(kit(tmp_path / f"r{n}", journal_of=opener))
            k.clock.now = time.time()
            k.leader.leader = n == 0
            k.leader.fenced_as = Fence(f"r{n}", 1) if n == 0 else None
            k.guards.approvals.poll = 0.05
            kits.append(k)
        yield kits


def bearer(name: str) -> str:
    return as_operator(name)["Authorization"]


async def pending_on(base: str) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/approvals", headers=as_operator("ann")) as response,
    ):
        assert response.status == 200
        result: dict[str, str] = await response.json()
        return result


async def listed(base: str, approval_id: str) -> dict[str, str]:
    """The approvals ``base`` lists, once ``approval_id`` is among them."""

    async def pending_with() -> dict[str, str]:
        shown = await pending_on(base)
        return shown if approval_id in shown else {}

    return await eventually(pending_with, within=10, what="listed pending")


async def asking(
    k: Kit, text: str
) -> tuple[Runbook, ExecutionRecord, asyncio.Task[ExecutionState | None]]:
    """``k`` starts the runbook of ``text``, whose first step waits for an approval."""
    runbook = k.runbook(text)
    execution = await k.execution(runbook)
    return runbook, execution, asyncio.create_task(k.executor.run(runbook, execution))


async def test_a_kill_switch_set_through_one_replica_stops_the_step_on_another(
    tmp_path: Path, shared: Opener
) -> None:
    async with replicas(tmp_path, shared, 2) as (leader, follower):
        runbook = leader.runbook(ONE_STEP)
        auth = operators(tmp_path / "secrets")
        async with follower.api(auth) as base, aiohttp.ClientSession() as http:
            body = {"on": True, "reason": "incident 42"}
            headers = as_operator("ann")
            async with http.post(f"{base}/api/killswitch", json=body, headers=headers) as r:
                assert r.status == 200
            execution = await leader.execution(runbook, "fp1")
            assert await leader.run_blocked(runbook, execution) == ["kill_switch"]
            assert leader.actuator.calls == []
            [block] = await leader.journal.guard_blocks(execution.id)
            assert "set in the journal by ann" in block.reason
            assert "incident 42" in block.reason
            # Every replica reports it, from the journal.
            async with leader.api() as leader_base, http.get(f"{leader_base}/api/killswitch") as r:
                shown = await r.json()
            assert shown["on"] is True
            assert shown["sources"] == ["journal"]
            assert shown["file"]["on"] is False

            async with http.post(f"{base}/api/killswitch", json={"on": False}) as r:
                assert r.status == 401
            async with http.post(
                f"{base}/api/killswitch", json={"on": False}, headers=headers
            ) as r:
                assert (await r.json())["on"] is False
        execution = await leader.execution(runbook, "fp2")
        assert await leader.executor.run(runbook, execution) == "succeeded"
        assert leader.actuator.state == {"a": 1}


async def test_the_kill_switch_file_still_stops_only_its_own_replica(
    tmp_path: Path, shared: Opener
) -> None:
    async with replicas(tmp_path, shared, 2) as (leader, follower):
        follower.guards.kill_switch.set(True, "test")  # touch <state_dir>/killswitch there
        runbook = leader.runbook(ONE_STEP)
        execution = await leader.execution(runbook)
        assert await leader.executor.run(runbook, execution) == "succeeded"
        leader.guards.kill_switch.set(True, "test")
        execution = await leader.execution(runbook, "fp2")
        assert await leader.executor.run(runbook, execution) == "blocked"
        [block] = await leader.journal.guard_blocks(execution.id)
        assert f"file {leader.guards.kill_switch.path} exists" in block.reason


@pytest.mark.parametrize("text", [APPROVAL, FLAGGED])
async def test_an_approval_posted_to_a_follower_lets_the_leaders_step_go_on(
    tmp_path: Path, shared: Opener, text: str
) -> None:
    async with replicas(tmp_path, shared, 2) as (leader, follower):
        _, execution, run = await asking(leader, text)
        approval_id = f"{execution.id}-0"
        async with follower.api(operators(tmp_path / "secrets")) as base:
            shown = await listed(base, approval_id)
            assert shown[approval_id] in ("restore the database", "run step a of flagged")
            assert await approve(base, "nope-0", bearer("ann")) == (
                False,
                "nothing waits for approval nope-0",
            )
            assert await approve(base, approval_id, bearer("ann")) == (
                True,
                f"approved {approval_id} as ann",
            )
            async with asyncio.timeout(5):
                assert await run == "succeeded"
            assert leader.actuator.state == {"a": 1}
            # Approved and done: nothing waits any more, on any replica.
            assert await pending_on(base) == {}
            assert (await approve(base, approval_id, bearer("bob")))[0] is False
        ended = [s for s in await leader.journal.steps(execution.id) if s.phase == "ended"]
        assert ended[0].detail == {"by": "ann"}


async def test_an_approval_recorded_before_a_leader_change_is_honoured_by_the_new_leader(
    tmp_path: Path, shared: Opener
) -> None:
    async with replicas(tmp_path, shared, 2) as (old, new):
        runbook, execution, run = await asking(old, APPROVAL)
        approval_id = f"{execution.id}-0"
        async with new.api(operators(tmp_path / "secrets")) as base:
            await listed(base, approval_id)
            # The leader is lost while it waits (stand_down cancels its executions).
            old.leader.leader = False
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            # Nobody waits now, yet the approval still waits in the journal: give it.
            assert approval_id in await pending_on(base)
            assert await approve(base, approval_id, bearer("ann")) == (
                True,
                f"approved {approval_id} as ann",
            )
        new.leader.leader = True
        new.leader.fenced_as = Fence("r1", 2)
        record = await new.journal.execution(execution.id)
        assert record is not None
        assert record.state == "running"
        began = time.monotonic()
        assert await new.executor.resume(runbook, record) == "succeeded"
        assert time.monotonic() - began < 5  # not the 20 s timeout: it was approved already
        assert new.actuator.state == {"a": 1}
        assert old.actuator.calls == []
        approvals = [s for s in await new.journal.steps(execution.id) if s.index == 0]
        assert approvals[-1].phase == "ended"
        assert approvals[-1].detail == {"by": "ann"}


async def test_an_approval_timed_out_cannot_be_given_later(tmp_path: Path, shared: Opener) -> None:
    async with replicas(tmp_path, shared, 2) as (leader, follower):
        runbook = leader.runbook(APPROVAL.replace("20s", "0.3s"))
        execution = await leader.execution(runbook)
        assert await leader.run_blocked(runbook, execution) == ["approval"]
        async with follower.api(operators(tmp_path / "secrets")) as base:
            assert await pending_on(base) == {}
            assert (await approve(base, f"{execution.id}-0", bearer("ann")))[0] is False
        assert leader.actuator.calls == []


class UnreadableKillSwitch:
    """The journal, except that reading the kill switch fails as a lost server does."""

    def __init__(self, inner: SqlJournal) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def kill_switch(self) -> None:
        raise JournalError("journal postgresql://srd@db/srd: read failed: connection refused")


async def test_a_kill_switch_that_cannot_be_read_refuses_the_step_and_says_why(
    tmp_path: Path, shared: Opener
) -> None:
    async with replicas(tmp_path, shared, 1) as (k,):
        k.guards.kill_switch._journal = UnreadableKillSwitch(k.journal)
        runbook = k.runbook(ONE_STEP)
        execution = await k.execution(runbook)
        assert await k.run_blocked(runbook, execution) == ["kill_switch"]
        assert k.actuator.calls == []
        [block] = await k.journal.guard_blocks(execution.id)
        assert "the journal cannot be read" in block.reason
        assert "connection refused" in block.reason
        assert "counts as on" in block.reason
        async with (
            k.api() as base,
            aiohttp.ClientSession() as http,
            http.get(f"{base}/api/killswitch") as response,
        ):
            shown = await response.json()
        assert shown["on"] is True
        assert shown["sources"] == ["unreadable"]


async def test_a_postgresql_journal_that_is_down_makes_the_kill_switch_refuse(
    tmp_path: Path,
) -> None:
    with PgServer.running() as server:
        db = server.create_database()

        def opener(clock: Clock) -> Any:
            return PostgresJournal.open(db.url, password=db.password, clock=clock)

        async with replicas(tmp_path, opener, 1) as (k,):
            runbook = k.runbook(ONE_STEP)
            execution = await k.execution(runbook)
            await asyncio.to_thread(server.stop)
            refusal = await k.guards.acting(execution)
            assert refusal is not None
            assert refusal.guard == "kill_switch"
            assert "the journal cannot be read" in refusal.reason
            assert db.url.split("@")[1] in refusal.reason  # it names the journal
            # Journaled when possible: here it is not, and refusing must not fail.
            await k.guards.refuse(execution.id, refusal)
            await asyncio.to_thread(server.start)
