"""The executor under fencing: a replica whose journal writes are refused (another leads at a
higher term) stops acting on the execution at once — no further step, no rollback — counts
it and leaves the execution to the leader. Two journal instances on one file play the two
replicas (the journal tests show the same fence on PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from srd.journal import NO_TERM, Fence, FencedError, SqliteJournal, StepRecord
from tests.support.eventually import eventually
from tests.support.failoverkit import THREE_STEPS, kit


async def test_a_leader_deposed_inside_a_step_writes_nothing_more_and_rolls_nothing_back(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        k.leader.fenced_as = Fence("a", 1)

        def slow_b(key: str) -> None:
            # Step b converges after 200 polls (2 s): the new leader takes over meanwhile.
            k.actuator.lag = 200 if key == "b" else 0

        k.actuator.before_apply = slow_b
        runbook = k.runbook(THREE_STEPS)
        execution = await k.execution(runbook)
        running = asyncio.create_task(k.executor.run(runbook, execution))

        async def b_started() -> bool:
            return any(s.name == "b" for s in await k.journal.steps(execution.id))

        await eventually(b_started, within=5, what="step b started")
        async with await SqliteJournal.open(tmp_path / "journal.sqlite3") as new_leader:
            await new_leader.lead(Fence("b", 2))

        assert await asyncio.wait_for(running, 10) is None
        steps = [(s.name, s.phase) for s in await k.journal.steps(execution.id)]
        assert steps == [("a", "started"), ("a", "ended"), ("b", "started")]
        assert [call[0] for call in k.actuator.calls] == ["apply", "apply"]  # no restore
        assert await k.state(execution.id) == "running"  # for the new leader to reconcile
        assert k.escalations == []
        fenced = k.metrics.registry.get_sample_value("srd_journal_fenced_writes_total")
        assert fenced == 1


async def test_a_new_leader_claims_its_term_before_it_reconciles(tmp_path: Path) -> None:
    async with kit(tmp_path) as old, kit(tmp_path) as new:
        old.leader.fenced_as = Fence("a", 1)
        new.leader.fenced_as = Fence("b", 2)
        runbook = new.runbook(THREE_STEPS)
        execution = await old.execution(runbook)
        await old.journal.set_state(execution.id, "running", fence=Fence("a", 1))
        interrupted = StepRecord(
            execution.id, 0, "a", "started", f"{execution.id}:0", 0.0, prior={"value": None}
        )
        await old.journal.step(interrupted, fence=Fence("a", 1))
        new.actuator.state["a"] = 1  # the old leader's action took effect

        record = await new.journal.execution(execution.id)
        assert record is not None
        assert await new.executor.resume(runbook, record) == "succeeded"

        late = StepRecord(execution.id, 0, "a", "ended", f"{execution.id}:0", 0.0, result="ok")
        with pytest.raises(FencedError, match="a at term 1 is deposed; b leads at term 2"):
            await old.journal.step(late, fence=Fence("a", 1))
        first_end = next(s for s in await new.journal.steps(execution.id) if s.phase == "ended")
        assert first_end.detail == {"reconciled": True}
        assert first_end.key == interrupted.key  # it ends the interrupted attempt


async def test_a_follower_is_fenced_before_it_marks_an_execution_running(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        k.leader.leader = False
        k.leader.fenced_as = Fence("f", NO_TERM)
        runbook = k.runbook(THREE_STEPS)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) is None
        assert await k.state(execution.id) == "planned"  # still the leader's to run
        assert k.actuator.calls == []
        assert k.metrics.registry.get_sample_value("srd_journal_fenced_writes_total") == 1
