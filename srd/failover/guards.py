"""Guards: what must hold before a runbook step runs. Each refusal names its guard and reason,
in the journal (``guard_blocked``), the logs and ``srd_guard_blocks_total{guard}``.

Before every step: mode, kill switch, leadership, minimum healthy capacity (a step that takes
a side down runs only while the other side is healthy) and approvals. Before the first step
(admission; re-checking them half-way would stop a failover in the middle, worse than either
end): per-runbook cooldown, flap suppression, a cap on executions per window — derived from
the journal's history, so they survive a restart — and the error-budget gate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry

from srd.config import FailoverConfig, Mode
from srd.failover.checks import CheckRunner
from srd.failover.runbooks import Runbook, Step
from srd.journal import ExecutionRecord, Fence, Journal
from srd.metrics import Metrics

log = structlog.get_logger("srd.failover.guards")

GUARDS = (
    "mode",
    "kill_switch",
    "leadership",
    "cooldown",
    "flapping",
    "rate_limit",
    "min_healthy",
    "error_budget",
    "approval",
)
_ACTED = frozenset({"running", "succeeded", "failed", "rolled_back", "escalated", "dry_run"})
_HISTORY = 1000
"""Executions read back for cooldown, flap and cap: far more than any window holds."""


@dataclass(frozen=True)
class Refusal:
    guard: str
    reason: str


class Leadership(Protocol):
    """Whether this srd instance may act (``srd.leader``: a Kubernetes Lease)."""

    def is_leader(self) -> bool: ...

    def fence(self) -> Fence | None:
        """The holder and term the executor's journal writes carry, so the journal refuses
        them once another holder has led (``FencedError``); None: unfenced (one srd alone)."""
        ...


class SingleInstance:
    """Leadership of a single srd: always the leader, never fenced."""

    def is_leader(self) -> bool:
        return True

    def fence(self) -> None:
        return None


class KillSwitch:
    """While ``path`` exists nothing acts. The API creates and removes the file, so the file
    is the one truth and the switch survives a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_on(self) -> bool:
        return self.path.exists()

    def set(self, on: bool, by: str) -> None:
        if on:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"kill switch set by {by} at {time.time():.0f}\n")
        else:
            self.path.unlink(missing_ok=True)
        log.warning("kill switch " + ("on" if on else "off"), by=by, file=str(self.path))


@dataclass
class _Pending:
    description: str
    decided: asyncio.Future[str]


class Approvals:
    """Steps waiting for a human. The id is ``<execution id>-<step index>``: the same after a
    restart, so ``srd approve ID`` printed in a log stays valid."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def pending(self) -> dict[str, str]:
        return {key: item.description for key, item in self._pending.items()}

    def approve(self, approval_id: str, by: str) -> bool:
        """False when nothing waits under ``approval_id``."""
        item = self._pending.get(approval_id)
        if item is None or item.decided.done():
            return False
        item.decided.set_result(by)
        return True

    async def wait(self, approval_id: str, description: str, seconds: float) -> str | None:
        """Who approved, or None when nobody did within ``seconds``."""
        decided: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[approval_id] = _Pending(description, decided)
        log.warning(
            "approval needed",
            approval_id=approval_id,
            description=description,
            how=f"srd approve {approval_id}",
        )
        try:
            async with asyncio.timeout(seconds):
                return await decided
        except TimeoutError:
            return None
        finally:
            del self._pending[approval_id]


BudgetReader = Callable[[str], float | None]
"""The remaining error-budget ratio of the named SLO (None: unknown)."""


def budget_from_registry(registry: CollectorRegistry) -> BudgetReader:
    """Reads ``srd_slo_error_budget_remaining_ratio{slo}`` from srd's own registry."""

    def remaining(slo: str) -> float | None:
        value = registry.get_sample_value("srd_slo_error_budget_remaining_ratio", {"slo": slo})
        return None if value is None else float(value)

    return remaining


@dataclass(frozen=True)
class Limits:
    cooldown: float
    flap_window: float
    flap_max: int
    execution_window: float
    max_executions: int

    @classmethod
    def of(cls, config: FailoverConfig) -> Limits:
        return cls(
            config.cooldown,
            config.flap_window,
            config.flap_max,
            config.execution_window,
            config.max_executions,
        )


class Guards:
    def __init__(
        self,
        *,
        mode: Callable[[], Mode],
        kill_switch: KillSwitch,
        leadership: Leadership,
        journal: Journal,
        limits: Limits,
        checks: CheckRunner,
        metrics: Metrics,
        budget: BudgetReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = mode
        self.kill_switch = kill_switch
        self.leadership = leadership
        self.approvals = Approvals()
        self._journal = journal
        self.limits = limits
        """Replaced on reload (``FailoverStage.reload``): judged at each admission."""
        self._checks = checks
        self._metrics = metrics
        self._budget = budget
        self._clock = clock
        for guard in GUARDS:
            metrics.guard_blocks.labels(guard)

    async def refuse(self, execution_id: str | None, refusal: Refusal) -> None:
        self._metrics.guard_blocks.labels(refusal.guard).inc()
        log.warning("guard blocked", guard=refusal.guard, reason=refusal.reason)
        await self._journal.guard_blocked(execution_id, refusal.guard, refusal.reason)

    def acting(self, execution: ExecutionRecord) -> Refusal | None:
        """Mode, kill switch and leadership: whether anything may run now (rollback too)."""
        mode = self.mode()
        if mode is Mode.OBSERVE:
            return Refusal("mode", "srd is in observe mode: it watches and never acts")
        if mode.value != execution.mode:
            return Refusal(
                "mode", f"mode changed from {execution.mode} to {mode.value} since it started"
            )
        if self.kill_switch.is_on():
            return Refusal("kill_switch", f"the kill switch is on ({self.kill_switch.path})")
        if not self.leadership.is_leader():
            return Refusal("leadership", "this srd instance is not the leader")
        return None

    async def before_step(self, step: Step, execution: ExecutionRecord) -> Refusal | None:
        if refusal := self.acting(execution):
            return refusal
        if step.reduces_capacity and step.other_side is not None:
            result = await self._checks(step.other_side)
            if not result.ok:
                return Refusal(
                    "min_healthy",
                    f"step {step.name} takes a side down but the other side "
                    f"({step.other_side.describe()}) is not healthy: {result.reason}",
                )
        return None

    async def admit(self, runbook: Runbook, execution: ExecutionRecord) -> Refusal | None:
        history = [
            e
            for e in await self._journal.executions(_HISTORY)
            if e.id != execution.id and e.mode == execution.mode
        ]
        now = self._clock()
        # Only the flap count takes blocked executions (the others count what acted): read the
        # state history of those it would count, to leave out released ones.
        flap_window = self.limits.flap_window
        released = {
            e.id
            for e in history
            if e.runbook == runbook.name
            and now - e.created_at < flap_window
            and await self._released(e)
        }
        history = [e for e in history if e.id not in released]
        return (
            self._cooldown(runbook, history, now)
            or self._flapping(runbook, execution, history, now)
            or self._rate_limit(history, now)
            or self._error_budget(runbook)
        )

    async def _released(self, execution: ExecutionRecord) -> bool:
        """A block the dispatcher released (nothing acted; a resend may decide the alert
        again): not a flap, not an execution that counts toward any limit."""
        if execution.state != "blocked":
            return False
        states = await self._journal.states(execution.id)
        detail = states[-1].detail if states else None
        return bool(detail and detail.get("released") is True)

    def _cooldown(
        self, runbook: Runbook, history: Sequence[ExecutionRecord], now: float
    ) -> Refusal | None:
        cooldown = runbook.cooldown if runbook.cooldown is not None else self.limits.cooldown
        for e in history:
            if e.runbook == runbook.name and e.state in _ACTED and now - e.updated_at < cooldown:
                left = cooldown - (now - e.updated_at)
                return Refusal(
                    "cooldown",
                    f"{runbook.name} ran {now - e.updated_at:.0f}s ago (execution {e.id}); "
                    f"cooldown {cooldown:g}s, {left:.0f}s left",
                )
        return None

    def _flapping(
        self,
        runbook: Runbook,
        execution: ExecutionRecord,
        history: Sequence[ExecutionRecord],
        now: float,
    ) -> Refusal | None:
        fingerprint = execution.alert.get("fingerprint")
        window = self.limits.flap_window
        recent = [
            e
            for e in history
            if e.runbook == runbook.name
            and e.alert.get("fingerprint") == fingerprint
            and now - e.created_at < window
        ]
        if len(recent) >= self.limits.flap_max:
            return Refusal(
                "flapping",
                f"alert {fingerprint} started {len(recent)} executions of {runbook.name} in "
                f"the last {window:g}s (limit {self.limits.flap_max}): it is flapping",
            )
        return None

    def _rate_limit(self, history: Sequence[ExecutionRecord], now: float) -> Refusal | None:
        window = self.limits.execution_window
        recent = [e for e in history if e.state in _ACTED and now - e.created_at < window]
        if len(recent) >= self.limits.max_executions:
            return Refusal(
                "rate_limit",
                f"{len(recent)} executions in the last {window:g}s "
                f"(limit {self.limits.max_executions})",
            )
        return None

    def _error_budget(self, runbook: Runbook) -> Refusal | None:
        if self._budget is None:
            return None
        for slo in runbook.budget_gate:
            remaining = self._budget(slo)
            # Unknown is not exhausted: a gate must never fail everything closed on no data.
            if remaining is not None and remaining <= 0:
                return Refusal(
                    "error_budget",
                    f"the error budget of SLO {slo} is exhausted (remaining {remaining:.3f}); "
                    f"{runbook.name} is not urgent",
                )
        return None
