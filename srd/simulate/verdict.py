"""A drill's verdict: its outcome, whether it passed, and the exit code ``srd simulate`` gives.

Exit codes (documented in docs/simulate.md):
0 objectives met; 2 invalid drill; 3 an objective breached (or the expected runbook did not
run and succeed); 4 steady state not restored after rollback; 5 aborted (a stop condition
tripped, or the steady state did not hold before the faults); 6 interrupted (SIGINT; the
rollback still runs); 7 the preflight of a real environment failed (nothing ran).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

EXIT_MET = 0
EXIT_INVALID = 2
EXIT_BREACHED = 3
EXIT_NOT_RESTORED = 4
EXIT_ABORTED = 5
EXIT_INTERRUPTED = 6
EXIT_PREFLIGHT = 7
Outcome = Literal["met", "breached", "not_restored", "aborted", "interrupted", "preflight_failed"]
Halt = Literal["aborted", "interrupted", "preflight_failed"]
"""How a drill ended before its objectives could decide: the outcome whatever they say."""
EXIT_CODES: dict[Outcome, int] = {
    "met": EXIT_MET,
    "breached": EXIT_BREACHED,
    "not_restored": EXIT_NOT_RESTORED,
    "aborted": EXIT_ABORTED,
    "interrupted": EXIT_INTERRUPTED,
    "preflight_failed": EXIT_PREFLIGHT,
}


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    passed: bool
    """Met, or breached when the drill expects a breach (``expect_breach``)."""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def judge(
    halted: Halt | None,
    objectives: Sequence[Mapping[str, Any]],
    restored: bool | None,
    *,
    expect_breach: bool,
) -> Verdict:
    """``restored``: whether the steady state held after rollback (None: no rollback ran)."""
    outcome: Outcome
    if halted is not None:
        outcome = halted
    elif restored is False:
        outcome = "not_restored"
    elif not all(o["met"] for o in objectives):
        outcome = "breached"
    else:
        outcome = "met"
    return Verdict(outcome, outcome == "met" or (expect_breach and outcome == "breached"))
