"""The verdict of a drill, judged once from how it ended, its objectives and its rollback."""

from __future__ import annotations

import pytest

from srd.simulate.verdict import (
    EXIT_ABORTED,
    EXIT_BREACHED,
    EXIT_INTERRUPTED,
    EXIT_MET,
    EXIT_NOT_RESTORED,
    EXIT_PREFLIGHT,
    Halt,
    judge,
)

MET = [{"name": "RTO", "met": True}, {"name": "runbook", "met": True}]
BREACHED = [{"name": "RTO", "met": False}, {"name": "runbook", "met": True}]


def test_a_drill_that_met_every_objective_and_was_restored_passes_with_exit_0() -> None:
    verdict = judge(None, MET, True, expect_breach=False)
    assert (verdict.outcome, verdict.passed, verdict.exit_code) == ("met", True, EXIT_MET)


def test_a_breached_objective_fails_the_drill_unless_the_drill_expects_the_breach() -> None:
    plain = judge(None, BREACHED, True, expect_breach=False)
    expected = judge(None, BREACHED, True, expect_breach=True)
    assert (plain.outcome, plain.passed, plain.exit_code) == ("breached", False, EXIT_BREACHED)
    # Passing is the suite's view; the exit code still tells the breach.
    assert (expected.outcome, expected.passed, expected.exit_code) == (
        "breached",
        True,
        EXIT_BREACHED,
    )


def test_a_steady_state_not_restored_after_rollback_outweighs_the_objectives() -> None:
    verdict = judge(None, BREACHED, False, expect_breach=True)
    assert (verdict.outcome, verdict.passed, verdict.exit_code) == (
        "not_restored",
        False,
        EXIT_NOT_RESTORED,
    )


def test_a_drill_without_rollback_is_judged_by_its_objectives_alone() -> None:
    assert judge(None, MET, None, expect_breach=False).outcome == "met"
    assert judge(None, BREACHED, None, expect_breach=False).outcome == "breached"


@pytest.mark.parametrize(
    ("halted", "code"),
    [
        ("aborted", EXIT_ABORTED),
        ("interrupted", EXIT_INTERRUPTED),
        ("preflight_failed", EXIT_PREFLIGHT),
    ],
)
def test_a_halted_drill_fails_with_its_halt_whatever_its_objectives_say(
    halted: Halt, code: int
) -> None:
    for objectives, restored in ((MET, True), (BREACHED, False), ([], None)):
        verdict = judge(halted, objectives, restored, expect_breach=True)
        assert (verdict.outcome, verdict.passed, verdict.exit_code) == (halted, False, code)
