"""A drill's record: what happened and when (the timeline), the faults, the journal's account,
the measurements and the verdict. The parts of a run fill it in; the reports render it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from srd import clock
from srd.evaluation.recovery import RpoStatus
from srd.simulate.drill import Drill, Targets
from srd.simulate.faults import Revert
from srd.simulate.preflight import PreflightCheck
from srd.simulate.progress import Progress
from srd.simulate.verdict import Halt, Verdict

TargetKind = Literal["sandbox", "real"]
Source = Literal["runner", "registry", "journal"]


@dataclass
class Event:
    at: float
    event: str
    label: str
    source: Source
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultRun:
    id: str
    kind: str
    params: dict[str, Any]
    at: float
    repaired_by: str | None
    injected_at: float | None = None
    reverted_at: float | None = None
    reverted_by: str | None = None
    error: str | None = None
    revert: Revert | None = None


@dataclass
class DrillResult:
    drill: Drill
    path: Path
    report_dir: Path
    scale: float
    mode: str
    rollback_policy: str
    targets: Targets
    started_at: float
    ended_at: float = 0.0
    halted: Halt | None = None
    verdict: Verdict | None = None
    events: list[Event] = field(default_factory=list)
    faults: list[FaultRun] = field(default_factory=list)
    stop: dict[str, Any] | None = None
    rollback: dict[str, Any] = field(default_factory=dict)
    rpo: RpoStatus | None = None
    executions: list[dict[str, Any]] = field(default_factory=list)
    rto: dict[str, Any] = field(default_factory=dict)
    objectives: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recorded_rto: float | None = None
    target: TargetKind = "sandbox"
    preflight: list[PreflightCheck] = field(default_factory=list)
    precision: float = 0.0
    """Drill seconds: how late the drill may see what happened (its looks' interval)."""
    wall_seconds: float = 0.0
    """What the drill took on the wall clock (on virtual time, far less than its span)."""

    @property
    def judged(self) -> Verdict:
        if self.verdict is None:
            raise RuntimeError(f"drill {self.drill.name} has no verdict yet")
        return self.verdict

    @property
    def exit_code(self) -> int:
        return self.judged.exit_code

    def add(self, event: Event) -> None:
        self.events.append(event)


@dataclass
class Recorder:
    """Where the parts of a run note what happened: the result's timeline and the operator's
    screen."""

    result: DrillResult
    progress: Progress

    def note(
        self,
        event: str,
        label: str,
        source: Source = "runner",
        at: float | None = None,
        **detail: Any,
    ) -> None:
        self.result.add(Event(at if at is not None else clock.now(), event, label, source, detail))
        self.progress.event(label)
