from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from srd.cli.approve import approve
from srd.config import Mode
from srd.evaluation.metrics import EvaluationMetrics
from srd.failover.checks import CheckResult
from srd.failover.dispatch import _RELEASED
from srd.failover.guards import BudgetReader, Guards, Limits
from srd.failover.runbooks import Check
from tests.support.eventually import eventually
from tests.support.failoverkit import (
    APPROVAL,
    FLAGGED,
    LOOSE,
    ONE_STEP,
    Kit,
    as_operator,
    kit,
    operators,
)


def blocks(k: Kit, guard: str) -> float | None:
    return k.metrics.registry.get_sample_value("srd_guard_blocks_total", {"guard": guard})


async def test_observe_mode_blocks_and_the_journal_says_mode(tmp_path: Path) -> None:
    async with kit(tmp_path, mode=Mode.OBSERVE) as k:
        runbook = k.runbook(ONE_STEP)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "blocked"
        assert k.actuator.calls == []
        assert await k.guards_blocked(execution.id) == ["mode"]
        assert blocks(k, "mode") == 1


async def test_kill_switch_file_blocks_every_step(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        k.guards.kill_switch.set(True, "test")
        runbook = k.runbook(ONE_STEP)
        execution = await k.execution(runbook)
        assert await k.run_blocked(runbook, execution) == ["kill_switch"]
        assert k.actuator.calls == []


async def test_a_follower_does_not_act(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        k.leader.leader = False
        runbook = k.runbook(ONE_STEP)
        execution = await k.execution(runbook)
        assert await k.run_blocked(runbook, execution) == ["leadership"]


async def test_cooldown_blocks_a_second_run_even_after_a_restart(tmp_path: Path) -> None:
    limits = Limits(cooldown=600, flap_window=0, flap_max=9, execution_window=0, max_executions=9)
    async with kit(tmp_path, limits=limits) as k:
        runbook = k.runbook(ONE_STEP)
        assert await k.executor.run(runbook, await k.execution(runbook, "fp1")) == "succeeded"
    async with kit(tmp_path, limits=limits) as k:  # a new process on the same journal
        k.clock.now += 300
        second = await k.execution(runbook, "fp2")
        assert await k.run_blocked(runbook, second) == ["cooldown"]
        k.clock.now += 301
        third = await k.execution(runbook, "fp3")
        assert await k.executor.run(runbook, third) == "succeeded"


async def test_a_flapping_alert_is_not_acted_on_again(tmp_path: Path) -> None:
    limits = Limits(cooldown=0, flap_window=3600, flap_max=2, execution_window=0, max_executions=9)
    async with kit(tmp_path, limits=limits) as k:
        runbook = k.runbook(ONE_STEP)
        for n in range(2):
            execution = await k.execution(runbook, "fp", f"2024-01-01T00:0{n}Z")
            await k.journal.set_state(execution.id, "cancelled")
        third = await k.execution(runbook, "fp", "2024-01-01T00:09Z")
        assert await k.run_blocked(runbook, third) == ["flapping"]


async def test_executions_per_window_are_capped(tmp_path: Path) -> None:
    limits = Limits(cooldown=0, flap_window=0, flap_max=9, execution_window=3600, max_executions=2)
    async with kit(tmp_path, limits=limits) as k:
        runbook = k.runbook(ONE_STEP)
        for fp in ("x", "y"):
            assert await k.executor.run(runbook, await k.execution(runbook, fp)) == "succeeded"
        third = await k.execution(runbook, "z")
        assert await k.run_blocked(runbook, third) == ["rate_limit"]


async def test_the_last_healthy_side_is_never_taken_down(tmp_path: Path) -> None:
    async with kit(tmp_path, backup=False) as k:
        k.actuator.state.update(backup=3, primary=3)
        runbook = k.runbook("""
            runbooks:
              - name: failover
                match: [alertname="Down"]
                steps:
                  - name: backup_up
                    action: {actuator: fake, action: set, params: {key: backup, value: 3}}
                  - name: primary_down
                    action: {actuator: fake, action: set, params: {key: primary, value: 0}}
                    reduces_capacity: true
                    other_side: {probe: backup}
        """)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "blocked"
        assert k.actuator.state["primary"] == 3
        assert await k.guards_blocked(execution.id) == ["min_healthy"]
        assert len(k.escalations) == 1  # half-done: backup_up ran


def budget_gated(k: Kit, remaining: float) -> EvaluationMetrics:
    """Gives the kit's executor guards that read an SLO ``web`` with ``remaining`` budget;
    the budget, for the test to change."""
    budget = EvaluationMetrics(CollectorRegistry())
    budget.report_budget("web", remaining)
    k.executor._guards = Guards(  # the executor under test, with the gated guards
        mode=k.guards.mode,
        kill_switch=k.guards.kill_switch,
        leadership=k.guards.leadership,
        journal=k.journal,
        limits=LOOSE,
        checks=k.checks,
        metrics=k.metrics,
        budget=budget,
    )
    return budget


GATED_CHANGE = ONE_STEP.replace(
    '    match: [alertname="Down"]', "    kind: change\n    budget_gate: [web]"
)


async def test_an_exhausted_error_budget_blocks_a_gated_change(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        budget_gated(k, -0.1)
        runbook = k.runbook(GATED_CHANGE)
        execution = await k.execution(runbook)
        assert await k.run_blocked(runbook, execution) == ["error_budget"]


async def test_an_outage_that_exhausts_the_budget_does_not_block_its_own_remedy(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        budget = budget_gated(k, 0.5)
        k.actuator.state.update(a=0)
        health = "      - {name: health, check: {http: {url: 'http://web/', name: web}}}\n"
        deploy = k.runbook(GATED_CHANGE + health)

        async def outage(check: Check) -> CheckResult:
            # The deploy broke the site: by the health check the outage has burned the budget.
            budget.report_budget("web", -199.0)
            return CheckResult(False, "web answers 503")

        k.executor._checks = outage
        execution = await k.execution(deploy)
        assert await k.executor.run(deploy, execution) == "rolled_back"
        assert k.actuator.state == {"a": 0}, "the switch-back ran"
        assert await k.guards_blocked(execution.id) == []

        # The remedy of the outage (a failover, a remedy runbook) is not held back either.
        remedy = k.runbook(ONE_STEP)
        execution = await k.execution(remedy, fingerprint="outage")
        assert await k.executor.run(remedy, execution) == "succeeded"
        assert k.actuator.state == {"a": 1}
        assert await k.guards_blocked(execution.id) == []


async def test_an_approval_not_given_in_time_blocks(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        runbook = k.runbook(APPROVAL.replace("20s", "0.05s"))
        execution = await k.execution(runbook)
        assert await k.run_blocked(runbook, execution) == ["approval"]
        assert k.actuator.calls == []


async def test_srd_approve_lets_the_waiting_step_go_on(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        runbook = k.runbook(APPROVAL)
        execution = await k.execution(runbook)
        async with k.api(operators(tmp_path / "secrets")) as base:
            run = asyncio.create_task(k.executor.run(runbook, execution))
            await eventually(k.guards.approvals.pending, within=5, what="an approval asked")
            ann = as_operator("ann")["Authorization"]
            assert await approve(base, "nope", ann) == (
                False,
                "nothing waits for approval nope",
            )
            ok, message = await approve(base, f"{execution.id}-0", ann)
            assert (ok, message) == (True, f"approved {execution.id}-0 as ann")
            assert await run == "succeeded"
        assert k.actuator.state == {"a": 1}


async def test_the_kill_switch_api_sets_the_journals_switch_that_survives_a_restart(
    tmp_path: Path,
) -> None:
    auth = operators(tmp_path / "secrets")
    async with kit(tmp_path) as k, k.api(auth) as base, aiohttp.ClientSession() as http:
        url = f"{base}/api/killswitch"
        # Who sets it is the credential's name; what the request says of itself is ignored.
        headers = {**as_operator("ann"), "X-Srd-User": "mallory"}
        body = {"on": True, "reason": "db migration"}
        async with http.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            shown = await response.json()
        assert shown["on"] is True
        assert shown["sources"] == ["journal"]
        assert shown["journal"]["by"] == "ann"
        assert shown["journal"]["reason"] == "db migration"
        async with http.post(url, json={"on": "yes"}, headers=headers) as response:
            assert response.status == 400
        async with http.post(url, json={"on": False}) as response:
            assert response.status == 401
    async with kit(tmp_path) as k:  # a restart: the journal still holds it
        runbook = k.runbook(ONE_STEP)
        execution = await k.execution(runbook)
        assert await k.executor.run(runbook, execution) == "blocked"
        [block] = await k.journal.guard_blocks(execution.id)
        assert block.guard == "kill_switch"
        assert "set in the journal by ann" in block.reason
        assert "db migration" in block.reason
        k.guards.kill_switch.set(True, "test")  # a file as well: off through the API clears both
        async with k.api() as base, aiohttp.ClientSession() as http:
            url = f"{base}/api/killswitch"
            async with http.get(url) as response:
                assert (await response.json())["sources"] == ["journal", "file"]
            async with http.post(url, json={"on": False}) as response:
                assert (await response.json())["on"] is False
    assert not (tmp_path / "killswitch").exists()


def test_the_budget_gate_reads_the_budget_evaluation_exports() -> None:
    metrics = EvaluationMetrics(CollectorRegistry())
    budget: BudgetReader = metrics
    metrics.report_budget("web", -0.25)
    exported = metrics.registry.get_sample_value
    assert budget.remaining_budget("web") == exported(
        "srd_slo_error_budget_remaining_ratio", {"slo": "web"}
    )
    assert budget.remaining_budget("web") == -0.25
    assert budget.remaining_budget("unknown") is None
    metrics.report_budget("web", None)  # no data: the series goes, and the gate sees unknown
    assert exported("srd_slo_error_budget_remaining_ratio", {"slo": "web"}) is None
    assert budget.remaining_budget("web") is None


@pytest.mark.parametrize("change", ["kill_switch", "mode", "leadership"])
async def test_an_approval_given_after_a_guard_closed_does_not_make_the_step_act(
    tmp_path: Path, change: str
) -> None:
    async with kit(tmp_path) as k:
        runbook = k.runbook(FLAGGED)
        execution = await k.execution(runbook)
        run = asyncio.create_task(k.executor.run(runbook, execution))
        await eventually(k.guards.approvals.pending, within=5, what="an approval asked")
        if change == "kill_switch":
            k.guards.kill_switch.set(True, "test")
        elif change == "mode":
            k.mode[0] = Mode.OBSERVE
        else:
            k.leader.leader = False
        assert k.guards.approvals.approve(f"{execution.id}-0", "ann")
        assert await run == "blocked"
        assert k.actuator.calls == []
        assert await k.guards_blocked(execution.id) == [change]


async def test_released_blocks_count_neither_as_flaps_nor_toward_the_rate_limit(
    tmp_path: Path,
) -> None:
    limits = Limits(cooldown=0, flap_window=600, flap_max=2, execution_window=600, max_executions=1)
    async with kit(tmp_path, limits=limits) as k:
        runbook = k.runbook(ONE_STEP)
        # The kill switch was on: each resend of the alert was decided, blocked and released.
        for n in range(3):
            execution = await k.execution(runbook, "fp1", f"2024-01-01T00:0{n}Z")
            await k.journal.set_state(execution.id, "blocked", {"reason": "kill_switch: on"})
            await k.journal.set_state(execution.id, "blocked", _RELEASED)
        execution = await k.execution(runbook, "fp1", "2024-01-01T00:09Z")
        assert await k.guards.admit(runbook, execution) is None
        assert await k.executor.run(runbook, execution) == "succeeded"

        # Blocks that were not released (something acted) still count as flaps.
        for n in range(2):
            blocked = await k.execution(runbook, "fp2", f"2024-01-01T00:0{n}Z")
            await k.journal.set_state(blocked.id, "blocked", {"reason": "min_healthy: down"})
        execution = await k.execution(runbook, "fp2", "2024-01-01T00:09Z")
        refusal = await k.guards.admit(runbook, execution)
        assert refusal is not None
        assert refusal.guard == "flapping"
