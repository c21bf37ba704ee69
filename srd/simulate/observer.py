"""What a drill watches: the steady state and its symptoms, the stop conditions and the
drill's alerts on the daemon's registry; the executions and steps in the journal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from srd import clock
from srd.config.durations import format_duration
from srd.evaluation.metrics import EvaluationMetrics
from srd.journal import ExecutionRecord, Journal
from srd.model import Sample
from srd.simulate.drill import Condition, Drill
from srd.simulate.progress import Progress
from srd.simulate.result import Recorder

TICK = 0.1
"""Seconds between looks at the registry and the journal on a real environment (on the
sandbox: the drill's probe interval)."""
MIN_STEADY_WAIT = 20.0
"""Wall seconds at least to reach the steady state: the chain probes need a few blocks."""
JOURNAL_LOOK = 0.25
"""Wall seconds at least between looks at the journal."""


@dataclass
class Health:
    """What the observer has seen since the first fault."""

    symptom_at: float | None = None
    healthy_at: float | None = None
    alerts_seen: set[tuple[str, str]] = field(default_factory=set)


class Observer:
    """The drill's steady state, stop conditions and alerts, read from the daemon's registry."""

    def __init__(
        self,
        drill: Drill,
        read: Callable[[], Iterable[Sample]],
        recorder: Recorder,
        scale: float,
        tick: float,
    ) -> None:
        self.drill = drill
        self._read = read
        self.recorder = recorder
        self.scale = scale
        self.tick = tick
        self.steady_state = [Condition.parse(t) for t in drill.steady_state.probes]
        self.stop_conditions = [(Condition.parse(s.expr), s.for_) for s in drill.stops()]
        self.holding_since: dict[int, float] = {}
        """Since when each stop condition (by index) has held without a break."""
        self.samples: list[Sample] = list(read())
        self.drill_alerts = {a.name for a in drill.alerts}
        self.health = Health()

    def refresh(self) -> None:
        """Read the daemon's samples: the conditions are judged on what it held at this look."""
        self.samples = list(self._read())

    def steady(self) -> tuple[bool, str]:
        for condition in self.steady_state:
            ok, why = condition.all_hold(self.samples)
            if not ok:
                return False, why
        return True, ""

    async def wait_steady(self, what: str, interrupted: asyncio.Event) -> bool:
        budget = max(self.drill.steady_state.within / self.scale, MIN_STEADY_WAIT)
        deadline = clock.now() + budget
        why = ""
        while clock.now() < deadline:
            self.refresh()
            ok, why = self.steady()
            if ok:
                return True
            if interrupted.is_set() and what == "before":
                return False
            self.recorder.progress.status(f"waiting for the steady state ({what}): {why}")
            await asyncio.sleep(self.tick)
        self.recorder.note(
            "steady_state_missing", f"steady state not reached {what} the faults: {why}"
        )
        return False

    def tripped(self, now: float) -> str | None:
        """The first stop condition that has held for its ``for``, described; else None."""
        for i, (condition, for_) in enumerate(self.stop_conditions):
            found = condition.any_holds(self.samples)
            if found is None:
                self.holding_since.pop(i, None)
                continue
            since = self.holding_since.setdefault(i, now)
            if now - since >= for_ / self.scale:
                return found if not for_ else f"{found} for {format_duration(for_)}"
        return None

    def look(self, now: float, injected_at: float) -> None:
        """Symptoms, recovery and relapse of the steady state; the drill's alerts."""
        health = self.health
        ok, why = self.steady()
        if not ok and health.symptom_at is None:
            health.symptom_at = now
            self.recorder.note("first_symptom", f"first symptom: {why}", "registry")
        # A drill with no runbook to expect may cause no symptom at all (a backup fault):
        # then it has recovered once the sustain window passes without one.
        unharmed = (
            self.drill.expect.runbook is None
            and now - injected_at > self.drill.sustain / self.scale
        )
        if ok and health.healthy_at is None and (health.symptom_at is not None or unharmed):
            health.healthy_at = now
            self.recorder.note("service_healthy", "steady state holds again", "registry")
        elif not ok and health.healthy_at is not None:
            health.healthy_at = None
            self.recorder.note("relapse", f"steady state lost again: {why}", "registry")
        self._alerts()

    def sustained(self, now: float) -> bool:
        healthy_at = self.health.healthy_at
        return healthy_at is not None and now - healthy_at >= self.drill.sustain / self.scale

    def status(self, now: float, injected: float | None) -> str:
        if injected is None:
            return "steady state holds; faults pending"
        t = format_duration((now - injected) * self.scale)
        health = self.health
        phase = (
            "recovering" if health.healthy_at else ("degraded" if health.symptom_at else "watching")
        )
        return f"T+{t} (drill time) {phase}"

    def drill_alert_firing(self) -> bool:
        """One of the drill's own alerts fires, at this look."""
        return any(
            s.name == EvaluationMetrics.ALERT_STATE
            and s.value > 0
            and s.label("state") == "firing"
            and s.label("alertname") in self.drill_alerts
            for s in self.samples
        )

    def _alerts(self) -> None:
        seen = self.health.alerts_seen
        for sample in self.samples:
            if sample.name != EvaluationMetrics.ALERT_STATE or sample.value <= 0:
                continue
            name, state = sample.label("alertname") or "", sample.label("state") or ""
            # Other rules' pending alerts are noise in a drill's timeline; firing is not.
            if name not in self.drill_alerts and state != "firing":
                continue
            if state in ("pending", "firing") and (name, state) not in seen:
                seen.add((name, state))
                self.recorder.note(
                    f"alert_{state}", f"alert {name} {state}", "registry", alertname=name
                )


@dataclass
class JournalFollower:
    """The executions and steps the journal shows while the drill runs, each told once."""

    expected: str | None
    """The runbook the drill expects to run; None: any."""
    progress: Progress
    looked_at: float = 0.0
    settled: bool = False
    """The expected runbook's execution has ended (or, expecting none, none has started)."""
    runbook_of: dict[str, str] = field(default_factory=dict)
    steps_seen: set[tuple[str, int, str]] = field(default_factory=set)
    states_seen: set[tuple[str, str]] = field(default_factory=set)

    def due(self, now: float) -> bool:
        if now - self.looked_at < JOURNAL_LOOK:
            return False
        self.looked_at = now
        return True

    async def follow(
        self,
        journal: Journal,
        executions: Sequence[ExecutionRecord],
        step_ok: Callable[[str], Awaitable[None]],
    ) -> None:
        """Tell new states and steps; ``step_ok`` each step that ended ok, as it is told."""
        for execution in executions:
            for change in await journal.states(execution.id):
                if (execution.id, change.state) not in self.states_seen:
                    self.states_seen.add((execution.id, change.state))
                    label = "decision" if change.state == "planned" else f"execution {change.state}"
                    self.progress.event(f"{label}: {execution.runbook}")
            for step in await journal.steps(execution.id):
                key = (execution.id, step.index, f"{step.key}/{step.phase}")
                if key in self.steps_seen:
                    continue
                self.steps_seen.add(key)
                result = f" → {step.result}" if step.result else ""
                self.progress.event(f"step {step.name} {step.phase}{result}")
                if step.phase == "ended" and step.result == "ok":
                    await step_ok(step.name)
        for execution in executions:
            self.runbook_of[execution.id] = execution.runbook
        self.settled = self._settled(executions)

    def _settled(self, executions: Sequence[ExecutionRecord]) -> bool:
        relevant = [e for e in executions if self.expected is None or e.runbook == self.expected]
        if self.expected is None and not relevant:
            return True
        return any(e.state not in ("planned", "running") for e in relevant)

    def planned(self, executions: Sequence[ExecutionRecord]) -> bool:
        """A dry run's plan for the expected runbook is journaled."""
        return any(
            e.state == "dry_run" and (self.expected is None or e.runbook == self.expected)
            for e in executions
        )
