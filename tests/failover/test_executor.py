from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from srd.actuators.base import ActuatorError
from srd.config import Mode
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Runbook
from srd.journal import ExecutionRecord, StepRecord
from tests.support.failoverkit import THREE_STEPS, Kit, kit


def sample(metrics: FailoverMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_armed_runbook_journals_each_step_before_and_after_with_its_snapshot(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        k.actuator.state["a"] = 0
        runbook = k.runbook(THREE_STEPS)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "succeeded"
        assert k.actuator.state == {"a": 1, "b": 2, "c": 3}
        steps = await k.journal.steps(execution.id)
        assert [(s.name, s.phase, s.result) for s in steps] == [
            ("a", "started", None), ("a", "ended", "ok"),
            ("b", "started", None), ("b", "ended", "ok"),
            ("c", "started", None), ("c", "ended", "ok"),
        ]  # fmt: skip
        assert steps[0].prior == {"value": 0}
        assert steps[0].key == f"{execution.id}:0"
        assert (
            sample(
                k.metrics,
                "srd_runbook_executions_total",
                {"runbook": "swap", "result": "succeeded"},
            )
            == 1
        )


async def test_dry_run_plans_every_step_and_changes_nothing(tmp_path: Path) -> None:
    async with kit(tmp_path, mode=Mode.DRY_RUN) as k:
        k.actuator.state["a"] = 0
        runbook = k.runbook(THREE_STEPS)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "dry_run"
        assert k.actuator.state == {"a": 0}
        assert k.actuator.calls == []
        ended = [s for s in await k.journal.steps(execution.id) if s.phase == "ended"]
        assert [s.result for s in ended] == ["planned"] * 3
        assert ended[0].detail == {"target": "a", "changes": ["- a: 0", "+ a: 1"]}


async def test_step_failure_rolls_back_what_ran_in_reverse_and_pages(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        k.actuator.state.update(a=0, b=0)
        k.actuator.errors["c"] = [ActuatorError("forbidden", retryable=False)]
        runbook = k.runbook(THREE_STEPS)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "rolled_back"
        assert k.actuator.state == {"a": 0, "b": 0}
        restores = [call for call in k.actuator.calls if call[0] == "restore"]
        assert restores == [("restore", "c", None), ("restore", "b", 0), ("restore", "a", 0)]
        names = [s.name for s in await k.journal.steps(execution.id) if s.phase == "ended"]
        assert names[-3:] == ["c:compensate", "b:compensate", "a:compensate"]
        [page] = k.escalations
        assert dict(page.labels)["execution"] == execution.id


async def test_retryable_errors_are_retried_within_the_step_timeout(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        k.actuator.errors["b"] = [ActuatorError("throttled", retryable=True)] * 2
        k.actuator.lag = 2
        runbook = k.runbook(THREE_STEPS)
        assert await k.executor.run(runbook, await k.execution(runbook)) == "succeeded"
        assert [c for c in k.actuator.calls if c[1] == "b"] == [("apply", "b", 2)] * 3


HEAL = """
runbooks:
  - name: heal
    match: [alertname="Down"]
    health: {probe: svc}
    remedies:
      - name: restart
        steps: [{name: r, action: {actuator: fake, action: set, params: {key: r, value: 1}}}]
      - name: failover
        steps: [{name: f, action: {actuator: fake, action: set, params: {key: f, value: 1}}}]
"""
"""Two remedies, each one step; health is the ``svc`` probe."""


async def test_unhealthy_after_every_remedy_escalates_once_and_stops(tmp_path: Path) -> None:
    async with kit(tmp_path, svc=False) as k:
        runbook = k.runbook(HEAL.replace("    remedies:", "    deadline: 0.05s\n    remedies:"))
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "escalated"
        assert k.actuator.state == {"r": 1, "f": 1}
        assert len(k.escalations) == 1
        assert dict(k.escalations[0].labels)["alertname"] == "SrdRunbookEscalated"


async def test_next_remedy_is_not_tried_once_health_is_back(tmp_path: Path) -> None:
    async with kit(tmp_path, svc=True) as k:
        runbook = k.runbook(HEAL)
        assert await k.executor.run(runbook, await k.execution(runbook)) == "succeeded"
        assert k.actuator.state == {"r": 1}


def b_timing_out_after(timeout: str) -> str:
    """``THREE_STEPS`` with step b converging within ``timeout``."""
    return THREE_STEPS.replace("value: 2}}, timeout: 2s", f"value: 2}}}}, timeout: {timeout}")


async def crash_after_a_started_b(k: Kit, text: str, *, b: int) -> tuple[Runbook, ExecutionRecord]:
    """The runbook ``text`` holds, and the journal and the actuator as a kill during its step b
    leaves them: a done (``a`` at 1), b started (``b`` at the given value); the unfinished
    execution, as a restart reads it."""
    runbook = k.runbook(text)
    execution = await k.execution(runbook)
    journal = k.journal
    await journal.set_state(execution.id, "running")
    eid = execution.id
    await journal.step(StepRecord(eid, 0, "a", "started", f"{eid}:0", 1.0, prior={"value": 0}))
    await journal.step(StepRecord(eid, 0, "a", "ended", f"{eid}:0", 2.0, result="ok"))
    await journal.step(StepRecord(eid, 1, "b", "started", f"{eid}:1", 3.0, prior={"value": 0}))
    k.actuator.state.update(a=1, b=b)
    [unfinished] = await journal.unfinished()
    return runbook, unfinished


async def b_ended(k: Kit, execution_id: str) -> StepRecord:
    """How step b ended on resume."""
    [end] = [s for s in await k.journal.steps(execution_id) if s.name == "b" and s.phase == "ended"]
    return end


async def test_resume_continues_after_the_done_step_without_repeating_it(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        # b's apply landed before the kill.
        runbook, execution = await crash_after_a_started_b(k, THREE_STEPS, b=2)
        assert await k.executor.resume(runbook, execution) == "succeeded"
        assert k.actuator.calls == [("apply", "c", 3)]
        ended = [
            (s.name, s.detail) for s in await k.journal.steps(execution.id) if s.phase == "ended"
        ]
        assert ("b", {"reconciled": True}) in ended


async def test_resume_rolls_back_a_step_whose_changed_state_never_converges(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        # Neither the prior nor the target: not ours to redo.
        runbook, execution = await crash_after_a_started_b(k, b_timing_out_after("0.05s"), b=5)
        assert await k.executor.resume(runbook, execution) == "rolled_back"
        assert k.actuator.calls == [("restore", "b", 0), ("restore", "a", 0)]
        assert ("apply", "a", 1) not in k.actuator.calls


async def test_resume_applies_again_a_step_interrupted_before_its_action_reached_the_actuator(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        # A 10-minute step: the old resume polled "converged" for all of it, then rolled back;
        # b is still its recorded prior: never applied.
        runbook, execution = await crash_after_a_started_b(k, b_timing_out_after("600s"), b=0)
        async with asyncio.timeout(5):
            assert await k.executor.resume(runbook, execution) == "succeeded"
        assert k.actuator.calls == [("apply", "b", 2), ("apply", "c", 3)]
        b_end = await b_ended(k, execution.id)
        assert b_end.result == "ok"
        assert b_end.detail == {"reconciled": True, "reapplied": True, "after": {"value": 2}}


VERIFIED = """
runbooks:
  - name: verified
    match: [alertname="Down"]
    steps:
      - {name: a, action: {actuator: fake, action: set, params: {key: a, value: 1}}, timeout: 2s}
      - name: b
        action: {actuator: fake, action: set, params: {key: b, value: 2}}
        verify: {probe: svc}
        timeout: 0.3s
      - {name: c, action: {actuator: fake, action: set, params: {key: c, value: 3}}, timeout: 2s}
"""


@pytest.mark.parametrize(
    ("verify_passes", "outcome", "calls", "b_result"),
    [
        (False, "rolled_back", [("restore", "b", 0), ("restore", "a", 0)], "failed"),
        (True, "succeeded", [("apply", "c", 3)], "ok"),
    ],
    ids=["rolls-back-if-not-verified", "goes-on-once-verified"],
)
async def test_a_step_killed_during_its_verify_is_verified_again_on_resume(
    tmp_path: Path,
    verify_passes: bool,
    outcome: str,
    calls: list[tuple[str, str, int]],
    b_result: str,
) -> None:
    async with kit(tmp_path, svc=verify_passes) as k:
        # b's action converged before the crash; its verify had not passed yet.
        runbook, execution = await crash_after_a_started_b(k, VERIFIED, b=2)
        assert await k.executor.resume(runbook, execution) == outcome
        assert k.actuator.calls == calls  # never c before b is verified; b not applied again
        b_end = await b_ended(k, execution.id)
        assert b_end.result == b_result
        if verify_passes:
            assert b_end.detail == {"reconciled": True}
            assert k.escalations == []
        else:
            assert b_end.detail is not None and "verify probe svc" in b_end.detail["reason"]
            [page] = k.escalations
            assert dict(page.labels)["reason"] == "rolled_back"


async def test_a_runbook_killed_mid_step_resumes_without_repeating_a_done_step(
    tmp_path: Path,
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.crash_child",
        str(tmp_path),
        cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    async with asyncio.timeout(30):
        while (await child.stdout.readline()).strip() != b"converging":
            pass
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert (tmp_path / "applies.log").read_text().split() == ["a", "b"]
    async with kit(tmp_path) as k:
        k.actuator.state.update(json.loads((tmp_path / "state.json").read_text()))
        [execution] = await k.journal.unfinished()
        assert await k.executor.resume(k.runbook(THREE_STEPS), execution) == "succeeded"
        assert k.actuator.calls == [("apply", "c", 3)]
        assert k.actuator.state == {"a": 1, "b": 2, "c": 3}


BOUND = """
runbooks:
  - name: bound
    kind: change
    steps:
      - {name: read, bind: {was: value}, action: {actuator: fake, action: set, params: {key: a, value: 1}}}
      - {name: wait, delay: 1h}
      - {name: use, action: {actuator: fake, action: set, params: {key: "b-${was}", value: 2}}}
"""  # noqa: E501


async def test_a_dry_run_plans_with_the_values_bound_and_describes_a_delay_without_waiting(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path, mode=Mode.DRY_RUN) as k:
        k.actuator.state["a"] = "blue"
        runbook = k.runbook(BOUND)
        execution = await k.execution(runbook)
        assert await asyncio.wait_for(k.executor.run(runbook, execution), 5) == "dry_run"
        steps = await k.journal.steps(execution.id)
        ended = {s.name: s.detail for s in steps if s.phase == "ended"}
        assert ended["wait"] == {"would": "wait 1h"}
        assert ended["use"] == {"target": "b-blue", "changes": ["- b-blue: None", "+ b-blue: 2"]}
        assert k.actuator.state == {"a": "blue"}


async def test_a_bound_variable_missing_from_the_snapshot_fails_the_step_and_rolls_back(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        runbook = k.runbook(BOUND.replace("{was: value}", "{was: colour}"))
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "rolled_back"
        steps = await k.journal.steps(execution.id)
        [read] = [s for s in steps if s.name == "read" and s.phase == "ended"]
        assert read.result == "failed"
        assert read.detail == {
            "reason": "step read binds ['colour'], which its snapshot lacks: ['value']"
        }
        assert k.actuator.calls == []
