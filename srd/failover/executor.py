"""Runs one execution of a runbook: plan → apply → verify → compensate, every step journaled.

Each step is written to the journal *before* it starts (idempotency key, actuator snapshot)
and *after* it ends. A step failure rolls back, in reverse, exactly the steps that ran, and
pages. When every step of a remedy ran but the runbook's health is not back by its deadline,
the next remedy is tried, and after the last one srd escalates and stops — it never loops.
``resume`` reconciles an execution a crash interrupted: the step that was running is judged
by the actuator's ``converged``; done steps are never repeated.

Every step and state write carries the leadership's fence (holder and term). When the journal
refuses one (``FencedError``: another replica has led since), this replica stops acting on the
execution at once — no further step, no rollback: the new leader reconciles it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from srd import clock
from srd.actuators.base import Actuator, ActuatorError, State
from srd.failover.checks import CheckResult, CheckRunner, wait_for
from srd.failover.guards import Guards, Refusal
from srd.failover.runbooks import ActionSpec, Check, Runbook, Step
from srd.journal import (
    ExecutionRecord,
    ExecutionState,
    Fence,
    FencedError,
    Journal,
    StepRecord,
    StepResult,
)
from srd.metrics import Metrics
from srd.model import Alert

log = structlog.get_logger("srd.failover.executor")

Escalate = Callable[[Alert], None]
"""Receives the escalation alert (``SrdRunbookEscalated``) a stopped runbook raises."""
Outcome = Literal["ok", "failed", "blocked"]


class StepFailed(Exception):
    pass


@dataclass(frozen=True)
class _Done:
    """An action step that ran (or began to): what rollback undoes."""

    index: int
    step: Step
    prior: State


@dataclass
class _Run:
    runbook: Runbook
    execution: ExecutionRecord
    done: list[_Done]
    completed: set[int]
    attempts: dict[int, int] = field(default_factory=dict)
    """Per step index, how many earlier runs the journal holds (a crash interrupted them)."""
    fence: Fence | None = None
    """Taken when the run begins and carried by all its writes: a replica that lost the lead
    and won it back (a new term) must not continue a run the leader in between reconciled."""

    @property
    def dry(self) -> bool:
        return self.execution.mode == "dry-run"


CONVERGE_POLL_MAX = 30.0
"""Seconds at most between polls of an action that has not converged yet."""


class Executor:
    def __init__(
        self,
        *,
        journal: Journal,
        actuators: Mapping[str, Actuator],
        guards: Guards,
        checks: CheckRunner,
        metrics: Metrics,
        escalate: Escalate,
        poll_interval: float = 2.0,
        retry_backoff: float = 0.5,
    ) -> None:
        """``poll_interval``: seconds between ``converged`` and probe-check polls (2 s: DNS
        and rollouts take tens of seconds; finer polling only loads the APIs).
        ``retry_backoff``: first wait after a retryable error, doubled up to 30 s."""
        self._journal = journal
        self._actuators = actuators
        self._guards = guards
        self._checks = checks
        self._metrics = metrics
        self._escalate = escalate
        self._poll = poll_interval
        self._backoff = retry_backoff

    async def run(self, runbook: Runbook, execution: ExecutionRecord) -> ExecutionState | None:
        """Carry out a ``planned`` execution. None: fenced off, this replica stopped and the
        execution's state is the new leader's to decide."""
        return await self._carry_out(runbook, execution, resume=False)

    async def resume(self, runbook: Runbook, execution: ExecutionRecord) -> ExecutionState | None:
        """Reconcile an execution left ``planned`` or ``running`` by a crash (or by a leader
        that was deposed). None: fenced off, as ``run``."""
        return await self._carry_out(runbook, execution, resume=execution.state != "planned")

    async def _carry_out(
        self, runbook: Runbook, execution: ExecutionRecord, *, resume: bool
    ) -> ExecutionState | None:
        run = _Run(runbook, execution, [], set(), fence=self._guards.leadership.fence())
        with _bound(execution):
            try:
                if resume:
                    if run.fence is not None:
                        # Claim the term before judging what the previous leader left, so
                        # that leader can write nothing more while this one reconciles.
                        await self._journal.lead(run.fence)
                    return await self._reconcile(run, await self._journal.steps(execution.id))
                return await self._start(run)
            except FencedError as exc:
                self._metrics.journal_fenced_writes.inc()
                log.error(
                    "fenced off: another replica leads; this one stops acting on the execution"
                    " and leaves it to the leader to reconcile",
                    reason=str(exc),
                )
                return None

    async def _start(self, run: _Run) -> ExecutionState:
        if refusal := await self._guards.admit(run.runbook, run.execution):
            return await self._blocked(run, refusal)
        await self._journal.set_state(run.execution.id, "running", fence=run.fence)
        log.info("runbook started", mode=run.execution.mode)
        return await self._remedies(run, 0)

    async def _reconcile(self, run: _Run, records: Sequence[StepRecord]) -> ExecutionState:
        runbook = run.runbook
        # The last attempt of a step wins: records come oldest first.
        started = {r.index: r for r in records if r.phase == "started" and _main(r)}
        ended = {r.index: r for r in records if r.phase == "ended" and _main(r)}
        ended = {i: r for i, r in ended.items() if r.key == started[i].key}
        for r in records:
            if r.phase == "started" and _main(r):
                run.attempts[r.index] = run.attempts.get(r.index, 0) + 1
        for index, record in started.items():
            if _step_name(runbook, index) != record.name:
                reason = f"runbook {runbook.name} changed since step {index} ran; not guessing"
                return await self._finish(run, "failed", reason, page=True)
        position = runbook.step_at(max(started))[0] if started else 0
        first = runbook.first_index(position)
        for index, record in sorted(started.items()):
            step = runbook.step_at(index)[1]
            end = ended.get(index)
            if end is not None and end.result in ("ok", "planned"):
                run.completed.add(index)
            ran = end is None or end.result in ("ok", "failed")
            if index >= first and step.action is not None and record.prior is not None and ran:
                run.done.append(_Done(index, step, record.prior))
        compensated = {
            r.index for r in records if r.key.endswith(":compensate") and r.phase == "ended"
        }
        if compensated or any(e.result == "failed" for e in ended.values()):
            log.warning("resuming an interrupted rollback")
            run.done = [d for d in run.done if d.index not in compensated]
            return await self._rollback(run, "interrupted during rollback")
        interrupted = [i for i in started if i not in ended]
        if interrupted and not run.dry:
            index = interrupted[0]
            step = runbook.step_at(index)[1]
            applied = step.action is not None and started[index].prior is not None
            if applied and not await self._settled(run, index, step):
                return await self._rollback(run, f"step {step.name} did not converge")
        log.info("resuming runbook", completed=sorted(run.completed))
        return await self._remedies(run, position)

    async def _settled(self, run: _Run, index: int, step: Step) -> bool:
        """Did the action interrupted at ``index`` take effect? Journal the verdict."""
        spec = _action(step)
        try:
            async with asyncio.timeout(step.timeout):
                await self._converge(spec)
            ok = True
        except (TimeoutError, ActuatorError):
            ok = False
        result: StepResult = "ok" if ok else "failed"
        # The verdict ends the interrupted attempt, under its key (a later reconciliation
        # then finds the step ended); it is not a new attempt.
        attempt = run.attempts[index] - 1
        detail = {"reconciled": True}
        await self._record(run, index, step, "ended", result, detail=detail, attempt=attempt)
        if ok:
            run.completed.add(index)
        return ok

    async def _remedies(self, run: _Run, start: int) -> ExecutionState:
        plan = run.runbook.plan
        for position in range(start, len(plan)):
            remedy = plan[position]
            first = run.runbook.first_index(position)
            if position > start:
                run.done = []
            for offset, step in enumerate(remedy.steps):
                index = first + offset
                if index in run.completed:
                    continue
                outcome = await self._step(run, index, step)
                if outcome == "blocked":
                    return "blocked"
                if outcome == "failed":
                    return await self._rollback(run, f"step {step.name} failed")
            if run.dry:
                continue
            health = await self._health(run)
            if health.ok:
                return await self._finish(run, "succeeded", f"remedy {remedy.name} restored health")
            log.warning("health not restored", remedy=remedy.name, reason=health.reason)
        if run.dry:
            return await self._finish(run, "dry_run", "dry run: planned, nothing changed")
        reason = f"health not restored after remedies {[r.name for r in plan]}"
        return await self._finish(run, "escalated", reason, page=True)

    async def _health(self, run: _Run) -> CheckResult:
        check = run.runbook.health
        if check is None:
            return CheckResult(True)
        return await wait_for(self._checks, check, run.runbook.deadline, self._interval(check))

    async def _step(self, run: _Run, index: int, step: Step) -> Outcome:
        if refusal := await self._guards.before_step(step, run.execution):
            await self._blocked(run, refusal)
            return "blocked"
        if (step.approval is not None or step.requires_approval) and not run.dry:
            approval_id = f"{run.execution.id}-{index}"
            what = step.approval or f"run step {step.name} of {run.runbook.name}"
            # A flagged action journals its approval apart, so its own record keeps the snapshot.
            part = "" if step.approval is not None else ":approval"
            await self._record(
                run, index, step, "started", detail={"approval_id": approval_id}, part=part
            )
            by = await self._guards.approvals.wait(
                approval_id, what, step.timeout, run.execution.id
            )
            if by is None:
                refusal = Refusal("approval", f"step {step.name} not approved in {step.timeout:g}s")
                await self._record(run, index, step, "ended", "blocked", part=part)
                await self._blocked(run, refusal)
                return "blocked"
            await self._record(run, index, step, "ended", "ok", detail={"by": by}, part=part)
            if step.approval is not None:
                return "ok"
            # An approval says go, never "whatever the guards say": during the wait the kill
            # switch, the mode or the lead may have changed.
            if refusal := await self._guards.before_step(step, run.execution):
                await self._blocked(run, refusal)
                return "blocked"
        started = clock.monotonic()
        try:
            return (
                await self._dry(run, index, step) if run.dry else await self._wet(run, index, step)
            )
        finally:
            self._metrics.runbook_step_duration.labels(run.runbook.name, step.name).observe(
                clock.monotonic() - started
            )

    async def _dry(self, run: _Run, index: int, step: Step) -> Outcome:
        detail: dict[str, Any]
        if step.action is not None:
            spec = step.action
            actuator = self._actuators[spec.actuator]
            prior = await actuator.snapshot(spec.action, spec.params)
            plan = await actuator.plan(spec.action, spec.params)
            detail = {"target": plan.target, "changes": list(plan.changes)}
            await self._record(run, index, step, "started", prior=prior)
        else:
            detail = {"would": _describe(step)}
            await self._record(run, index, step, "started")
        log.info("dry run: step planned", step=step.name, **detail)
        await self._record(run, index, step, "ended", "planned", detail=detail)
        return "ok"

    async def _wet(self, run: _Run, index: int, step: Step) -> Outcome:
        log.info("step started", step=step.name, kind=step.kind)
        check = step.check or step.wait_until
        if check is not None:
            await self._record(run, index, step, "started", detail={"check": check.describe()})
            # A check gets one attempt within the timeout; a wait_until polls until it.
            every = self._interval(check) if step.wait_until is not None else step.timeout
            result = await wait_for(self._checks, check, step.timeout, every)
            return await self._ended(run, index, step, result.ok, result.reason)
        spec = _action(step)
        actuator = self._actuators[spec.actuator]
        try:
            async with asyncio.timeout(step.timeout):
                prior = await actuator.snapshot(spec.action, spec.params)
        except (TimeoutError, ActuatorError) as exc:
            await self._record(run, index, step, "started")
            return await self._ended(run, index, step, False, f"snapshot failed: {_why(exc)}")
        detail = {"actuator": spec.actuator, "action": spec.action, "params": spec.params}
        await self._record(run, index, step, "started", prior=prior, detail=detail)
        run.done.append(_Done(index, step, prior))
        try:
            async with asyncio.timeout(step.timeout):
                after = await self._retrying(lambda: actuator.apply(spec.action, spec.params))
                await self._converge(spec)
                if step.verify is not None:
                    result = await wait_for(
                        self._checks, step.verify, step.timeout, self._interval(step.verify)
                    )
                    if not result.ok:
                        raise StepFailed(f"verify {step.verify.describe()}: {result.reason}")
        except (TimeoutError, ActuatorError, StepFailed) as exc:
            return await self._ended(run, index, step, False, _why(exc))
        await self._record(run, index, step, "ended", "ok", detail={"after": after})
        log.info("step done", step=step.name)
        return "ok"

    async def _ended(self, run: _Run, index: int, step: Step, ok: bool, reason: str) -> Outcome:
        detail = {"reason": reason} if reason else None
        await self._record(run, index, step, "ended", "ok" if ok else "failed", detail=detail)
        if not ok:
            log.error("step failed", step=step.name, reason=reason)
        return "ok" if ok else "failed"

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        delay = self._backoff
        while True:
            try:
                return await call()
            except ActuatorError as exc:
                if not exc.retryable:
                    raise
                log.warning("retryable actuator error", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _converge(self, spec: ActionSpec) -> None:
        actuator = self._actuators[spec.actuator]
        # Polling is the actuator contract: there is no event to wait on. The wait doubles up
        # to CONVERGE_POLL_MAX: a change that takes hours (Route 53 PENDING) must not cost an
        # API call every couple of seconds all that time.
        wait = self._poll
        while True:
            if await self._retrying(lambda: actuator.converged(spec.action, spec.params)):
                return
            await asyncio.sleep(wait)
            wait = min(wait * 2, max(self._poll, CONVERGE_POLL_MAX))

    async def _rollback(self, run: _Run, reason: str) -> ExecutionState:
        """Undo, newest first, exactly the action steps that ran; then page."""
        log.warning("rolling back", reason=reason, steps=[d.step.name for d in run.done])
        state: ExecutionState = "rolled_back"
        for done in reversed(run.done):
            if refusal := await self._guards.acting(run.execution):
                await self._guards.refuse(run.execution.id, refusal)
                state = "failed"
                break
            if not await self._compensate(run, done):
                state = "failed"
        return await self._finish(run, state, reason, page=True)

    async def _compensate(self, run: _Run, done: _Done) -> bool:
        step, spec = done.step, _action(done.step)
        key = f"{run.execution.id}:{done.index}:compensate"
        name = f"{step.name}:compensate"
        await self._journal.step(
            StepRecord(
                run.execution.id,
                done.index,
                name,
                "started",
                key,
                clock.now(),
                prior=done.prior,
                detail={"compensate": _compensation(step)},
            ),
            fence=run.fence,
        )
        try:
            async with asyncio.timeout(step.timeout):
                if isinstance(step.compensate, ActionSpec):
                    other = self._actuators[step.compensate.actuator]
                    c = step.compensate
                    await self._retrying(lambda: other.apply(c.action, c.params))
                elif step.compensate == "restore":
                    actuator = self._actuators[spec.actuator]
                    await self._retrying(
                        lambda: actuator.restore(spec.action, spec.params, done.prior)
                    )
            ok, detail = True, None
        except (TimeoutError, ActuatorError) as exc:
            ok, detail = False, {"reason": _why(exc)}
            log.error("compensation failed", step=step.name, reason=_why(exc))
        await self._journal.step(
            StepRecord(
                run.execution.id,
                done.index,
                name,
                "ended",
                key,
                clock.now(),
                result="compensated" if ok else "failed",
                detail=detail,
            ),
            fence=run.fence,
        )
        return ok

    async def _blocked(self, run: _Run, refusal: Refusal) -> ExecutionState:
        await self._guards.refuse(run.execution.id, refusal)
        # Half-done work needs a human; a runbook refused before its first step does not.
        return await self._finish(
            run, "blocked", f"{refusal.guard}: {refusal.reason}", page=bool(run.done)
        )

    async def _finish(
        self, run: _Run, state: ExecutionState, reason: str, *, page: bool = False
    ) -> ExecutionState:
        await self._journal.set_state(
            run.execution.id, state, {"reason": reason, "paged": page}, fence=run.fence
        )
        self._metrics.runbook_executions.labels(run.runbook.name, state).inc()
        (log.error if page else log.info)("runbook ended", state=state, reason=reason)
        if page:
            self._escalate(escalation(run.runbook, run.execution, state, reason))
        return state

    async def _record(
        self,
        run: _Run,
        index: int,
        step: Step,
        phase: Literal["started", "ended"],
        result: StepResult | None = None,
        *,
        prior: State | None = None,
        detail: dict[str, Any] | None = None,
        part: str = "",
        attempt: int | None = None,
    ) -> None:
        # A step re-run after a crash gets a new key: (key, phase) is unique in the journal.
        if attempt is None:
            attempt = run.attempts.get(index, 0)
        key = f"{run.execution.id}:{index}" + (f":retry{attempt}" if attempt else "") + part
        name = step.name + part
        record = StepRecord(
            run.execution.id, index, name, phase, key, clock.now(), result, prior, detail
        )
        await self._journal.step(record, fence=run.fence)

    def _interval(self, check: Check) -> float:
        return check.http.interval if check.http is not None else self._poll


def escalation(runbook: Runbook, execution: ExecutionRecord, state: str, reason: str) -> Alert:
    """The alert a stopped runbook raises, for the team's pager."""
    now = clock.now()
    labels = {
        "alertname": "SrdRunbookEscalated",
        "runbook": runbook.name,
        "execution": execution.id,
        "reason": state,
        "severity": "critical",
    }
    return Alert(
        name="SrdRunbookEscalated",
        labels=tuple(sorted(labels.items())),
        annotations=(("summary", f"{runbook.name} stopped ({state}): {reason}"),),
        state="firing",
        active_since=now,
        fired_at=now,
        resolved_at=None,
        fingerprint=f"escalation-{execution.id}",
    )


def _bound(execution: ExecutionRecord) -> Any:
    return structlog.contextvars.bound_contextvars(
        correlation_id=execution.correlation_id,
        execution=execution.id,
        runbook=execution.runbook,
    )


def _main(record: StepRecord) -> bool:
    return not record.key.endswith((":compensate", ":approval"))


def _step_name(runbook: Runbook, index: int) -> str | None:
    try:
        return runbook.step_at(index)[1].name
    except IndexError:
        return None


def _action(step: Step) -> ActionSpec:
    if step.action is None:
        raise TypeError(f"step {step.name} is not an action")
    return step.action


def _compensation(step: Step) -> str:
    comp = step.compensate
    return comp.describe() if isinstance(comp, ActionSpec) else comp


def _describe(step: Step) -> str:
    if step.check is not None:
        return f"check {step.check.describe()}"
    if step.wait_until is not None:
        return f"wait until {step.wait_until.describe()}"
    return f"ask for approval: {step.approval}"


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
