"""What a drill does to the system: injects its faults on schedule and reverts them (when a
runbook step repairs one, or at rollback), and plays the operator at approval steps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from srd import clock
from srd.config.durations import format_duration
from srd.failover.guards import Approvals
from srd.failover.runbooks import Runbook
from srd.simulate.drill import Drill
from srd.simulate.faults import KINDS, Target
from srd.simulate.result import FaultRun, Recorder


class FaultSchedule:
    """The drill's faults, injected at their offsets (drill time) after ``start``."""

    def __init__(
        self, faults: list[FaultRun], target: Target, recorder: Recorder, scale: float
    ) -> None:
        self.faults = faults
        self.target = target
        self.recorder = recorder
        self.scale = scale

    @property
    def injected_at(self) -> float | None:
        """When the first fault went in."""
        return min((f.injected_at for f in self.faults if f.injected_at), default=None)

    async def inject_due(self, start: float, now: float) -> None:
        for fault in self.faults:
            if (
                fault.injected_at is None
                and fault.error is None
                and now >= start + fault.at / self.scale
            ):
                await self._inject(fault)

    async def _inject(self, fault: FaultRun) -> None:
        kind = KINDS[fault.kind]
        try:
            fault.revert = await kind.apply(self.target, fault.params)
        except Exception as exc:  # a fault that cannot be injected is reported, not fatal
            fault.error = f"{type(exc).__name__}: {exc}"
            self.recorder.note(
                "fault_failed",
                f"fault {fault.id} ({fault.kind}) could not be injected: {fault.error}",
            )
            return
        fault.injected_at = clock.now()
        label = f"fault injected: {fault.id} ({kind.summary})"
        if fault.kind == "manual":
            label = f"operator, inject {fault.id} now: {fault.params['instructions']}"
        self.recorder.note("fault_injected", label, fault=fault.id)

    async def repaired(self, step: str) -> None:
        """Revert the faults the step ``step`` repairs."""
        for fault in self.faults:
            if fault.repaired_by == step:
                await self._revert(fault, f"repaired by step {step}")

    async def rollback(self) -> list[str]:
        """Revert, newest first, every injected fault not reverted yet; their ids."""
        reverted = []
        for fault in reversed([f for f in self.faults if f.injected_at is not None]):
            if fault.reverted_at is None:
                try:
                    await self._revert(fault, "rollback")
                    reverted.append(fault.id)
                except Exception as exc:  # keep undoing the rest
                    self.recorder.note("rollback_failed", f"reverting {fault.id} failed: {exc}")
        return reverted

    async def _revert(self, fault: FaultRun, by: str) -> None:
        if fault.revert is None or fault.reverted_at is not None:
            return
        await fault.revert()
        fault.reverted_at, fault.reverted_by = clock.now(), by
        label = f"fault {fault.id} reverted ({by})"
        if fault.kind == "manual":
            undo = fault.params.get("undo") or "repair what you broke"
            label = f"operator, undo {fault.id} now ({by}): {undo}"
        self.recorder.note("fault_reverted", label, fault=fault.id)


class SimulatedOperator:
    """Approves each pending approval after the drill's delay for its step, having first
    repaired what the step repairs (the approval says the work is done)."""

    def __init__(
        self,
        drill: Drill,
        recorder: Recorder,
        scale: float,
        repaired: Callable[[str], Awaitable[None]],
    ) -> None:
        self.operator = drill.operator
        self.recorder = recorder
        self.scale = scale
        self.repaired = repaired
        self.first_seen: dict[str, float] = {}

    async def approve(
        self,
        approvals: Approvals,
        runbooks: Sequence[Runbook],
        runbook_of: Mapping[str, str],
        now: float,
    ) -> None:
        by_name = {r.name: r for r in runbooks}
        for approval_id in approvals.pending():
            first = self.first_seen.setdefault(approval_id, now)
            execution_id, _, index = approval_id.rpartition("-")
            runbook = by_name.get(runbook_of.get(execution_id, ""))
            if runbook is None or not index.isdigit():
                continue
            step = runbook.step_at(int(index))[1]
            delay = self.operator.approvals.get(step.name, self.operator.default_approval)
            if now - first < delay / self.scale:
                continue
            await self.repaired(step.name)
            if approvals.approve(approval_id, "drill-operator"):
                self.recorder.progress.event(
                    f"operator approved {step.name} after {format_duration(delay)}"
                )
