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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from srd import clock
from srd.config import Mode
from srd.config.failover import FailoverConfig
from srd.failover.checks import CheckRunner
from srd.failover.leader import Leadership
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Runbook, Step
from srd.journal import Controls, ExecutionRecord, Executions, JournalError, KillSwitchState

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


def _at_limit(
    guard: str,
    counted: Sequence[ExecutionRecord],
    now: float,
    window: float,
    limit: int,
    reason: Callable[[int], str],
) -> Refusal | None:
    """Refuse once ``limit`` of the ``counted`` executions were created in the last ``window``
    seconds; ``reason`` says so, given how many were."""
    recent = sum(1 for e in counted if now - e.created_at < window)
    return Refusal(guard, reason(recent)) if recent >= limit else None


class GuardsJournal(Executions, Controls, Protocol):
    """What the guards read and write: the executions' history (admission), refusals, the
    kill switch and approvals."""


@dataclass(frozen=True)
class KillSwitchReading:
    """The kill switch as the guard sees it: on when the journal says so (set through any
    replica's API) or this replica's file exists, or when the journal cannot be read."""

    on: bool
    journal: KillSwitchState | None
    """As last set in the journal; None when never set (or unreadable: see ``error``)."""
    file: bool
    """This replica's file exists."""
    path: Path
    error: str | None = None
    """Why the journal could not be read: the switch counts as on (fail safe)."""

    @property
    def sources(self) -> list[str]:
        """Where ``on`` comes from: ``journal``, ``file``, ``unreadable``."""
        found = []
        if self.journal is not None and self.journal.on:
            found.append("journal")
        if self.file:
            found.append("file")
        if self.error is not None:
            found.append("unreadable")
        return found

    def describe(self) -> str:
        parts = []
        if self.journal is not None and self.journal.on:
            j = self.journal
            parts.append(f"set in the journal by {j.by} at {j.at:.0f}: {j.reason}")
        if self.file:
            parts.append(f"file {self.path} exists")
        if self.error is not None:
            parts.append(
                f"the journal cannot be read ({self.error}): not acting until it can"
                " (a kill switch that cannot be read counts as on)"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        j = self.journal
        journal = None if j is None else {"on": j.on, "by": j.by, "at": j.at, "reason": j.reason}
        return {
            "on": self.on,
            "sources": self.sources,
            "journal": journal,
            "file": {"on": self.file, "path": str(self.path)},
            "error": self.error,
        }


class KillSwitch:
    """While it is on nothing acts, on any replica. Two switches, either enough:

    - the journal's (``engage``: ``POST /api/killswitch`` on any replica), shared by every
      replica of the journal, surviving restarts;
    - this replica's file ``path`` (``touch`` it; ``set`` writes it): for one replica, and for
      when the API or the journal is out of reach.

    ``read`` is called before every step (one indexed read of the journal's last row): a
    journal that cannot be read counts as on — a stop that cannot be seen must not be missed.
    """

    def __init__(self, path: Path, journal: Controls | None = None) -> None:
        self.path = path
        self._journal = journal

    def file_on(self) -> bool:
        return self.path.exists()

    def set(self, on: bool, by: str) -> None:
        """Create or remove this replica's file."""
        if on:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"kill switch set by {by} at {clock.now():.0f}\n")
        else:
            self.path.unlink(missing_ok=True)
        log.warning("kill switch file " + ("on" if on else "off"), by=by, file=str(self.path))

    async def engage(self, on: bool, by: str, reason: str = "") -> None:
        """Set the journal's switch, for every replica. Off also removes this replica's file
        (as the API always did); other replicas' files stay. JournalError: nothing written
        (with ``on``, this replica's file is set all the same)."""
        reason = reason or ("set through the API" if on else "cleared through the API")
        try:
            if self._journal is None:
                raise JournalError("no journal")
            await self._journal.set_kill_switch(on, by, reason)
        except JournalError:
            if on:
                self.set(True, by)
            raise
        if not on:
            self.set(False, by)
        log.warning("kill switch " + ("on" if on else "off"), by=by, reason=reason, where="journal")

    async def read(self) -> KillSwitchReading:
        file = self.file_on()
        if self._journal is None:
            return KillSwitchReading(file, None, file, self.path)
        try:
            state = await self._journal.kill_switch()
        except (JournalError, OSError, RuntimeError) as exc:
            return KillSwitchReading(True, None, file, self.path, str(exc) or type(exc).__name__)
        return KillSwitchReading(file or (state is not None and state.on), state, file, self.path)


@dataclass
class _Pending:
    description: str
    decided: asyncio.Future[str]


class Approvals:
    """Steps waiting for a human. The id is ``<execution id>-<step index>``: the same after a
    restart or a leader change, so ``srd approve ID`` printed in a log stays valid.

    With a journal, a wait is recorded there (``pending_all`` lists it on any replica) and an
    approval recorded there by any replica (``record``) ends it: the waiter reads the journal
    every ``poll`` seconds, and an approval that reaches the waiting replica itself wakes it at
    once. An approval recorded before a leader change is found by the new leader's wait.
    ``pending`` and ``approve`` are this replica's waiters only (the drill operator's)."""

    def __init__(self, journal: Controls | None = None, *, poll: float = 0.5) -> None:
        """``poll``: seconds between the waiter's journal reads (0.5 s: a human's approval
        need not be faster; a read costs well under a millisecond)."""
        self._journal = journal
        self.poll = poll
        self._pending: dict[str, _Pending] = {}

    def pending(self) -> dict[str, str]:
        return {key: item.description for key, item in self._pending.items()}

    def approve(self, approval_id: str, by: str) -> bool:
        """Approve a wait of this replica; False when nothing waits here under the id."""
        item = self._pending.get(approval_id)
        if item is None or item.decided.done():
            return False
        item.decided.set_result(by)
        return True

    async def pending_all(self) -> dict[str, str]:
        """Every replica's waits (the journal's) and this replica's; JournalError when the
        journal cannot be read."""
        found = self.pending()
        if self._journal is not None:
            for approval in await self._journal.pending_approvals():
                found.setdefault(approval.id, approval.description)
        return found

    async def record(self, approval_id: str, by: str) -> bool:
        """Approve, whichever replica waits: False when nothing waits under the id. When the
        journal cannot be written, a wait of this replica is still approved (its waiter
        journals it later); otherwise the JournalError is raised."""
        if self._journal is None:
            return self.approve(approval_id, by)
        try:
            recorded = await self._journal.approve(approval_id, by)
        except JournalError:
            if self.approve(approval_id, by):
                return True
            raise
        if recorded:
            self.approve(approval_id, by)  # the waiter is here: wake it now
        return recorded

    async def wait(
        self, approval_id: str, description: str, seconds: float, execution_id: str | None = None
    ) -> str | None:
        """Who approved, or None when nobody did within ``seconds``."""
        loop = asyncio.get_running_loop()
        journal = self._journal if execution_id is not None else None
        if journal is not None and execution_id is not None:
            await journal.request_approval(approval_id, execution_id, description)
        decided: asyncio.Future[str] = loop.create_future()
        self._pending[approval_id] = _Pending(description, decided)
        log.warning(
            "approval needed",
            approval_id=approval_id,
            description=description,
            how=f"srd approve {approval_id}",
        )
        deadline = loop.time() + seconds
        try:
            while True:
                if journal is not None and (by := await self._approved(journal, approval_id)):
                    return by
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.wait({decided}, timeout=min(self.poll, left) if journal else left)
                if decided.done():
                    by = decided.result()
                    if journal is not None:
                        await self._journal_approval(journal, approval_id, by)
                    return by
            if journal is None:
                return None
            # An approval recorded (on any replica) before this expiry still counts.
            try:
                return await journal.expire_approval(approval_id)
            except JournalError as exc:
                log.error("approval expiry not journaled", approval_id=approval_id, error=str(exc))
                return None
        finally:
            del self._pending[approval_id]

    @staticmethod
    async def _approved(journal: Controls, approval_id: str) -> str | None:
        try:
            approval = await journal.approval(approval_id)
        except JournalError as exc:
            # This replica's own API still approves (the fast path); the next poll retries.
            log.warning("cannot read approvals from the journal", error=str(exc))
            return None
        return None if approval is None else approval.approved_by

    @staticmethod
    async def _journal_approval(journal: Controls, approval_id: str, by: str) -> None:
        try:
            await journal.approve(approval_id, by)  # False: the API recorded it already
        except JournalError as exc:
            log.error("approval not journaled", approval_id=approval_id, by=by, error=str(exc))


class BudgetReader(Protocol):
    """Where the error-budget gate reads SLO budgets: evaluation's metrics implement it with
    the values they last exported, so the gate sees what /metrics shows."""

    def remaining_budget(self, slo: str) -> float | None:
        """The remaining error-budget ratio of the named SLO (None: unknown)."""


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


@dataclass(kw_only=True, eq=False)
class Guards:
    """Every guard an execution passes before it starts (``admit``) and before each step."""

    mode: Callable[[], Mode]
    kill_switch: KillSwitch
    leadership: Leadership
    journal: GuardsJournal
    limits: Limits
    """Replaced on reload (``FailoverStage.reload``): judged at each admission."""
    checks: CheckRunner
    metrics: FailoverMetrics
    budget: BudgetReader | None = None
    clock: Callable[[], float] = clock.now
    approvals: Approvals = field(init=False)

    def __post_init__(self) -> None:
        self.approvals = Approvals(self.journal)
        for guard in GUARDS:
            self.metrics.guard_blocks.labels(guard)

    async def refuse(self, execution_id: str | None, refusal: Refusal) -> None:
        self.metrics.guard_blocks.labels(refusal.guard).inc()
        log.warning("guard blocked", guard=refusal.guard, reason=refusal.reason)
        try:
            await self.journal.guard_blocked(execution_id, refusal.guard, refusal.reason)
        except JournalError as exc:
            # Journaled when possible: a refusal because the journal is down must still refuse.
            log.error("guard refusal not journaled", guard=refusal.guard, error=str(exc))

    async def acting(self, execution: ExecutionRecord) -> Refusal | None:
        """Mode, kill switch and leadership: whether anything may run now (rollback too)."""
        mode = self.mode()
        if mode is Mode.OBSERVE:
            return Refusal("mode", "srd is in observe mode: it watches and never acts")
        # A dry run acts on nothing whatever the mode now (one started by hand on an armed
        # srd is one); an armed execution stops when srd is no longer armed.
        if mode.value != execution.mode and execution.mode != Mode.DRY_RUN.value:
            return Refusal(
                "mode", f"mode changed from {execution.mode} to {mode.value} since it started"
            )
        switch = await self.kill_switch.read()
        if switch.on:
            return Refusal("kill_switch", f"the kill switch is on: {switch.describe()}")
        if not self.leadership.is_leader():
            return Refusal("leadership", "this srd instance is not the leader")
        return None

    async def before_step(self, step: Step, execution: ExecutionRecord) -> Refusal | None:
        if refusal := await self.acting(execution):
            return refusal
        if step.reduces_capacity and step.other_side is not None:
            result = await self.checks(step.other_side)
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
            for e in await self.journal.executions(_HISTORY)
            if e.id != execution.id and e.mode == execution.mode
        ]
        now = self.clock()
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
        states = await self.journal.states(execution.id)
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
        window, limit = self.limits.flap_window, self.limits.flap_max
        return _at_limit(
            "flapping",
            [
                e
                for e in history
                if e.runbook == runbook.name and e.alert.get("fingerprint") == fingerprint
            ],
            now,
            window,
            limit,
            lambda n: (
                f"alert {fingerprint} started {n} executions of {runbook.name} in "
                f"the last {window:g}s (limit {limit}): it is flapping"
            ),
        )

    def _rate_limit(self, history: Sequence[ExecutionRecord], now: float) -> Refusal | None:
        window, limit = self.limits.execution_window, self.limits.max_executions
        return _at_limit(
            "rate_limit",
            [e for e in history if e.state in _ACTED],
            now,
            window,
            limit,
            lambda n: f"{n} executions in the last {window:g}s (limit {limit})",
        )

    def _error_budget(self, runbook: Runbook) -> Refusal | None:
        if self.budget is None:
            return None
        for slo in runbook.budget_gate:
            remaining = self.budget.remaining_budget(slo)
            # Unknown is not exhausted: a gate must never fail everything closed on no data.
            if remaining is not None and remaining <= 0:
                return Refusal(
                    "error_budget",
                    f"the error budget of SLO {slo} is exhausted (remaining {remaining:.3f}); "
                    f"{runbook.name} is not urgent",
                )
        return None
