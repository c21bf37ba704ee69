"""The journal's contract: its records, the protocols of its parts (``Receipts``,
``Executions``, ``Controls``, ``Fencing``) and of the whole (``Journal``), the fence and the
errors. Users take the narrowest part they need; the backends implement the whole.

Rules every implementation keeps:
- append-only: rows are never updated in place; the state of an execution is its last event;
- every step is written *before* it starts (with its idempotency key and the prior state) and
  *after* it ends (with its result), so a restart knows what was done and what was interrupted;
- idempotency keys are unique: recording an alert (fingerprint + startsAt + status) or
  starting an execution twice returns False/None instead of a duplicate;
- fenced writes: a step or state write that carries a ``Fence`` is refused (``FencedError``,
  nothing written) when the journal has recorded a higher term, or another holder at the
  same term. The check and the write are one transaction.

What ``recovery_records`` reads (the executor writes it into the execution's ``alert``): the
scenario is ``alert["scenario"]`` (set from the runbook) or else the alert label ``scenario``;
the kind is ``alert["kind"]`` (``"drill"`` for game days) and ``"real"`` when absent. Only
``armed`` executions that ``succeeded`` count; detection is the alert's ``startsAt`` (RFC 3339,
as Alertmanager sends it) or else the execution's creation, recovery is the ``succeeded`` event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from srd.model import RecoveryRecord

ExecutionState = Literal[
    "planned",  # decided, not started (cancellable by a resolved alert)
    "running",
    "succeeded",
    "failed",  # a step failed and could not be compensated
    "rolled_back",
    "escalated",  # health not restored by the deadline; paged, stopped
    "blocked",  # a guard refused
    "dry_run",  # a dry run ended: every step planned and journaled, nothing changed
    "cancelled",  # resolved before it started
]
StepPhase = Literal["started", "ended"]
StepResult = Literal["ok", "failed", "skipped", "blocked", "planned", "compensated"]


@dataclass(frozen=True)
class ExecutionRecord:
    id: str
    runbook: str
    key: str
    """Idempotency key of the decision: runbook + alert fingerprint + startsAt."""
    mode: str
    state: ExecutionState
    correlation_id: str
    alert: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class StepRecord:
    execution_id: str
    index: int
    name: str
    phase: StepPhase
    key: str
    """Idempotency key of the step: execution id + index."""
    at: float
    result: StepResult | None = None
    prior: dict[str, Any] | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class StateChange:
    """One event of an execution's state history (``set_state`` and the initial ``planned``)."""

    execution_id: str
    state: ExecutionState
    at: float
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class GuardBlock:
    """A guard's refusal; ``execution_id`` None when it refused before an execution existed."""

    execution_id: str | None
    guard: str
    reason: str
    at: float


@dataclass(frozen=True)
class KillSwitchState:
    """The kill switch as last set in the journal (through any replica's API)."""

    on: bool
    by: str
    at: float
    reason: str


@dataclass(frozen=True)
class Approval:
    """A step waiting for a human, as the journal holds it: ``id`` is
    ``<execution id>-<step index>``; ``approved_by`` is set once someone approved it."""

    id: str
    execution_id: str
    description: str
    requested_at: float
    approved_by: str | None = None
    approved_at: float | None = None


NO_TERM = -1
"""The term of a replica that does not lead: below every real term, refused by every journal."""


@dataclass(frozen=True)
class Fence:
    """Who writes, and under which term of leadership (the Lease's ``leaseTransitions`` when
    the holder acquired it: larger for every new holder)."""

    holder: str
    term: int


class JournalError(Exception):
    """The journal cannot be used as asked: missing, an unsupported or malformed URL, a
    schema from a newer srd, or a server that cannot be reached. The message names the
    journal (never its password), what failed and what to do."""


class FencedError(JournalError):
    """A fenced write was refused: another holder leads at a higher (or the same) term.
    Nothing was written; the writer must stop acting, the new leader reconciles."""


class AlertReceipt(NamedTuple):
    """One received alert, as ``record_alerts`` records it."""

    fingerprint: str
    starts_at: str
    status: str
    alert: dict[str, Any]


class Receipts(Protocol):
    """The intake's record of alerts received: every replica records what Alertmanager sends
    and recognises its resends."""

    async def record_alert(
        self, fingerprint: str, starts_at: str, status: str, alert: dict[str, Any]
    ) -> bool:
        """Record one received alert; False when this (fingerprint, startsAt, status) was
        already recorded (an Alertmanager resend or an HA duplicate)."""
        ...

    async def record_alerts(self, receipts: Sequence[AlertReceipt]) -> list[bool]:
        """``record_alert`` for many in one transaction (the dispatcher's batches): whether
        each was new, in order; a receipt repeated within the batch is new only once."""
        ...

    async def mark_decided(self, receipts: Sequence[AlertReceipt]) -> None:
        """Record that the alerts of ``receipts`` were decided on (executions planned, or
        none matched): ``undecided`` no longer lists them."""
        ...

    async def undecided(self, limit: int = 1000) -> Sequence[AlertReceipt]:
        """Receipts recorded and not yet marked decided, oldest first: the alerts a crash
        interrupted between their receipt (answered 2xx) and their decision."""
        ...

    async def receipts(self, fingerprint: str, starts_at: str) -> Sequence[tuple[str, float]]:
        """(status, received at) of the receipts of one alert firing, oldest first: what
        Alertmanager said of it (firing, resolved), as far as ``prune`` kept it."""
        ...

    async def forget_alert(self, fingerprint: str, starts_at: str) -> None:
        """Delete the firing receipt of (fingerprint, startsAt), so its next resend is taken
        as new: for an execution a guard blocked before anything acted."""
        ...

    async def prune(self, older_than: float) -> int:
        """Delete alert receipts older than ``older_than`` seconds (executions, steps and
        guard blocks are kept); return how many were deleted. Keep well above Alertmanager's
        ``repeat_interval``: a pruned receipt lets a resend through to the execution-key check."""
        ...


class Executions(Protocol):
    """Executions, their state history and their steps: what the dispatcher decides and the
    executor does, and what drills, the journal API and the admission guards read back."""

    async def start_execution(
        self, runbook: str, key: str, mode: str, correlation_id: str, alert: dict[str, Any]
    ) -> ExecutionRecord | None:
        """Create an execution in state ``planned``; None when ``key`` already exists."""
        ...

    async def set_state(
        self,
        execution_id: str,
        state: ExecutionState,
        detail: dict[str, Any] | None = None,
        *,
        fence: Fence | None = None,
    ) -> None:
        """Append a state event; with ``fence``, only while it holds (else FencedError)."""
        ...

    async def step(self, record: StepRecord, *, fence: Fence | None = None) -> None:
        """Append a step event (started or ended); with ``fence``, only while it holds."""
        ...

    async def execution(self, execution_id: str) -> ExecutionRecord | None: ...

    async def executions(self, limit: int = 100) -> Sequence[ExecutionRecord]: ...

    async def execution_by_key(self, key: str) -> ExecutionRecord | None:
        """The execution decided under idempotency ``key``; None when there is none."""
        ...

    async def steps(self, execution_id: str) -> Sequence[StepRecord]: ...

    async def states(self, execution_id: str) -> Sequence[StateChange]:
        """The execution's state history, oldest first (empty for an unknown id)."""
        ...

    async def unfinished(self) -> Sequence[ExecutionRecord]:
        """Executions left ``planned`` or ``running`` (a crash or kill): to reconcile at start."""
        ...

    async def recovery_records(self) -> Sequence[RecoveryRecord]:
        """Detected → recovered intervals of finished executions, for measured RTO."""
        ...


class Controls(Protocol):
    """What the guards and operators record: guard refusals, the kill switch and approvals."""

    async def guard_blocked(self, execution_id: str | None, guard: str, reason: str) -> None: ...

    async def guard_blocks(
        self, execution_id: str | None = None, limit: int = 100
    ) -> Sequence[GuardBlock]:
        """Guard refusals, newest first: of one execution, or of all when ``execution_id`` is
        None."""
        ...

    async def set_kill_switch(self, on: bool, by: str, reason: str) -> None:
        """Record the kill switch on or off, for every replica sharing the journal."""
        ...

    async def kill_switch(self) -> KillSwitchState | None:
        """The kill switch as last set; None when it was never set."""
        ...

    async def require_auth(self, replica: str) -> None:
        """Record that ``replica`` runs armed with auth: every replica sharing the journal must
        authenticate its callers too (a shared control; it is never lifted)."""
        ...

    async def auth_required(self) -> str | None:
        """The armed replica that last recorded ``require_auth``; None: none ever did."""
        ...

    async def request_approval(self, approval_id: str, execution_id: str, description: str) -> None:
        """Record that a step waits for approval (again after a leader change: ignored)."""
        ...

    async def approve(self, approval_id: str, by: str) -> bool:
        """Record ``by``'s approval; False when nothing waits under ``approval_id`` (never
        requested, already approved, expired, or its execution has ended)."""
        ...

    async def approval(self, approval_id: str) -> Approval | None:
        """The approval as recorded; None when it was never requested."""
        ...

    async def expire_approval(self, approval_id: str) -> str | None:
        """The wait for ``approval_id`` ended unapproved: refuse later approvals. Returns who
        approved it when an approval was recorded first (it counts), else None."""
        ...

    async def pending_approvals(self) -> Sequence[Approval]:
        """Approvals requested, neither approved nor expired, of unfinished executions; oldest
        first."""
        ...


class Fencing(Protocol):
    """Terms of leadership: a new leader claims its term before it acts, so the writes of a
    deposed one are refused (``FencedError``)."""

    async def lead(self, fence: Fence) -> None:
        """Record ``fence`` as the current term (a new leader claims it before it acts), so
        a deposed holder's next fenced write is refused; FencedError when it does not hold.
        Every fenced write claims its term the same way."""
        ...


class Journal(Receipts, Executions, Controls, Fencing, Protocol):
    """The whole journal, as the backends implement it and its owner (the failover stage,
    ``srd journal``) holds it; each user takes the part it needs."""

    async def close(self) -> None: ...
