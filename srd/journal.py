"""The journal: the durable, append-only record of alerts received, decisions and steps.

Contract (this module's ``Journal`` Protocol) first; the SQLite implementation (WAL, in
``state_dir``) follows. A later issue adds PostgreSQL behind the same Protocol.

Rules every implementation keeps:
- append-only: rows are never updated in place; the state of an execution is its last event;
- every step is written *before* it starts (with its idempotency key and the prior state) and
  *after* it ends (with its result), so a restart knows what was done and what was interrupted;
- idempotency keys are unique: recording an alert (fingerprint + startsAt + status) or
  starting an execution twice returns False/None instead of a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from srd.model import RecoveryRecord

ExecutionState = Literal[
    "planned",  # decided, not started (cancellable by a resolved alert)
    "running",
    "succeeded",
    "failed",  # a step failed and could not be compensated
    "rolled_back",
    "escalated",  # health not restored by the deadline; paged, stopped
    "blocked",  # a guard refused
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


class Journal(Protocol):
    async def record_alert(
        self, fingerprint: str, starts_at: str, status: str, alert: dict[str, Any]
    ) -> bool:
        """Record one received alert; False when this (fingerprint, startsAt, status) was
        already recorded (an Alertmanager resend or an HA duplicate)."""
        ...

    async def start_execution(
        self, runbook: str, key: str, mode: str, correlation_id: str, alert: dict[str, Any]
    ) -> ExecutionRecord | None:
        """Create an execution in state ``planned``; None when ``key`` already exists."""
        ...

    async def set_state(
        self, execution_id: str, state: ExecutionState, detail: dict[str, Any] | None = None
    ) -> None: ...

    async def step(self, record: StepRecord) -> None:
        """Append a step event (started or ended)."""
        ...

    async def guard_blocked(self, execution_id: str | None, guard: str, reason: str) -> None: ...

    async def execution(self, execution_id: str) -> ExecutionRecord | None: ...

    async def executions(self, limit: int = 100) -> Sequence[ExecutionRecord]: ...

    async def steps(self, execution_id: str) -> Sequence[StepRecord]: ...

    async def unfinished(self) -> Sequence[ExecutionRecord]:
        """Executions left ``planned`` or ``running`` (a crash or kill): to reconcile at start."""
        ...

    async def recovery_records(self) -> Sequence[RecoveryRecord]:
        """Detected → recovered intervals of finished executions, for measured RTO."""
        ...

    async def close(self) -> None: ...
