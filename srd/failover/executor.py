"""Runs one execution of a runbook: plan → apply → verify → compensate, every step journaled.

Each step is written to the journal *before* it starts (idempotency key, actuator snapshot)
and *after* it ends. A step failure rolls back, in reverse, exactly the steps that ran, and
pages. When every step of a remedy ran but the runbook's health is not back by its deadline,
the next remedy is tried, and after the last one srd escalates and stops — it never loops.
``resume`` reconciles an execution a crash interrupted; done steps are never repeated. A step
is done only when its ``ended ok`` is journaled, which is written only after its verify passed.
The action step that was running is finished within what is left of its timeout: when the
live state still equals the recorded prior state the action never reached the actuator (the
crash fell between ``started`` and the call), so it is applied again (idempotent); then it must
converge and its verify pass again, or the runbook rolls back and pages as for any failed step.
A ``delay`` step journals its due time, and a resumed one (after a restart, or on the next
leader) waits only what is left; the variables a step ``bind``s are read back from its
journaled snapshot.

Every step and state write carries the leadership's fence (holder and term). When the journal
refuses one (``FencedError``: another replica has led since), this replica stops acting on the
execution at once — no further step, no rollback: the new leader reconciles it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import structlog

from srd import clock
from srd.actuators.base import Actuator, ActuatorError, State
from srd.clock import now as clock_now
from srd.config.durations import format_duration
from srd.failover.checks import CheckResult, CheckRunner, wait_for
from srd.failover.guards import Guards, Refusal
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import ActionSpec, Check, Runbook, Step, input_issues, resolve
from srd.journal import (
    ExecutionRecord,
    Executions,
    ExecutionState,
    Fence,
    FencedError,
    Fencing,
    StepRecord,
    StepResult,
)
from srd.model import Alert
from srd.retry import Backoff, retrying

log = structlog.get_logger("srd.failover.executor")

Escalate = Callable[[Alert], None]
"""Receives the escalation alert (``SrdRunbookEscalated``) a stopped runbook raises."""
Outcome = Literal["ok", "failed", "blocked"]
T = TypeVar("T")

ACTUATOR_RETRY = Backoff(initial=0.5, maximum=30.0)
"""Waits after a retryable actuator error, within the step's timeout."""
RESUME_GRACE = 30.0
"""Seconds a resumed step gets at least (its timeout when shorter), however much of its
timeout the crash and the restart used: one snapshot, apply, convergence poll and verify."""


class ExecutorJournal(Executions, Fencing, Protocol):
    """What the executor writes: the execution's states and steps, under its term."""


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
    bound: dict[str, str] = field(default_factory=dict)
    """The run-time variables: the runbook's inputs (from the execution's labels) and those
    steps bound so far (``bind``), from their snapshots."""
    due: dict[int, float] = field(default_factory=dict)
    """Per delay step index, the journaled time (``clock``) its wait ends."""

    @property
    def dry(self) -> bool:
        return self.execution.mode == "dry-run"


CONVERGE_POLL_MAX = 30.0
"""Seconds at most between polls of an action that has not converged yet."""


class Executor:
    def __init__(
        self,
        *,
        journal: ExecutorJournal,
        actuators: Mapping[str, Actuator],
        guards: Guards,
        checks: CheckRunner,
        metrics: FailoverMetrics,
        escalate: Escalate,
        poll_interval: float = 2.0,
        retry: Backoff = ACTUATOR_RETRY,
        clock: Callable[[], float] = clock_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``poll_interval``: seconds between ``converged`` and probe-check polls (2 s: DNS
        and rollouts take tens of seconds; finer polling only loads the APIs).
        ``retry``: the waits after retryable actuator errors. ``clock`` (wall time, as the
        journal outlives the process) and ``sleep``: how delay steps wait."""
        self._journal = journal
        self._actuators = actuators
        self._guards = guards
        self._checks = checks
        self._metrics = metrics
        self._escalate = escalate
        self._poll = poll_interval
        self._retry = retry
        self._clock = clock
        self._sleep = sleep

    def input_issues(self, runbook: Runbook, labels: Mapping[str, str]) -> list[str]:
        """What is wrong with the inputs ``labels`` give ``runbook``, for these actuators."""
        return input_issues(runbook, labels, self._actuators)

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
        fence = self._guards.leadership.fence()
        run = _Run(runbook, execution, [], set(), fence=fence, bound=_inputs(runbook, execution))
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
        for r in records:
            if r.phase == "started" and r.detail and isinstance(r.detail.get("due"), int | float):
                run.due[r.index] = float(r.detail["due"])
        for index, record in sorted(started.items()):
            step = runbook.step_at(index)[1]
            if step.bind and record.prior is not None and _bind(run, step, record.prior):
                reason = f"step {step.name}: its journaled snapshot lacks what it binds"
                return await self._finish(run, "failed", reason, page=True)
        for index, record in sorted(started.items()):
            step = self._resolved(run, runbook.step_at(index)[1])
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
            step = self._resolved(run, runbook.step_at(index)[1])
            applied = step.action is not None and started[index].prior is not None
            if applied and not await self._settled(run, index, step, started[index]):
                return await self._rollback(run, f"step {step.name} failed when resumed")
        log.info("resuming runbook", completed=sorted(run.completed))
        return await self._remedies(run, position)

    async def _settled(self, run: _Run, index: int, step: Step, started: StepRecord) -> bool:
        """Finish the action interrupted at ``index``: apply it again when the live state is
        still the recorded prior, then wait for convergence and verify, within what is left
        of the step's timeout. Journal the verdict; True only when verified."""
        spec = _action(step)
        actuator = self._actuators[spec.actuator]
        detail: dict[str, Any] = {"reconciled": True}
        try:
            async with asyncio.timeout(self._left(step, started)):
                live = await self._retrying(lambda: actuator.snapshot(spec.action, spec.params))
                if live == started.prior:
                    log.warning(
                        "the interrupted step's action never reached the actuator; applying it",
                        step=step.name,
                    )
                    detail["reapplied"] = True
                    detail["after"] = await self._retrying(
                        lambda: actuator.apply(spec.action, spec.params)
                    )
                await self._converge(spec)
                await self._verify(step)
            ok = True
        except (TimeoutError, ActuatorError, StepFailed) as exc:
            ok = False
            detail["reason"] = _why(exc)
        result: StepResult = "ok" if ok else "failed"
        # The verdict ends the interrupted attempt, under its key (a later reconciliation
        # then finds the step ended); it is not a new attempt.
        attempt = run.attempts[index] - 1
        await self._record(run, index, step, "ended", result, detail=detail, attempt=attempt)
        if ok:
            run.completed.add(index)
        else:
            log.error("resumed step failed", step=step.name, reason=detail["reason"])
        return ok

    def _left(self, step: Step, started: StepRecord) -> float:
        """What is left of the step's timeout since its ``started`` record, and at least
        ``RESUME_GRACE``: a crash may have used it all up, and the verdict needs one look."""
        elapsed = min(max(0.0, self._clock() - started.at), step.timeout)
        return max(step.timeout - elapsed, min(step.timeout, RESUME_GRACE))

    async def _verify(self, step: Step) -> None:
        """Raise StepFailed unless the step's verify (if any) passes within its timeout."""
        if step.verify is None:
            return
        result = await wait_for(
            self._checks, step.verify, step.timeout, self._interval(step.verify)
        )
        if not result.ok:
            raise StepFailed(f"verify {step.verify.describe()}: {result.reason}")

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
        try:
            step = self._resolved(run, step)
        except ValueError as exc:
            await self._record(run, index, step, "started")
            return await self._ended(run, index, step, False, str(exc))
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
            if reason := _bind(run, step, prior):
                return await self._ended(run, index, step, False, reason)
        else:
            detail = {"would": _describe(step)}
            await self._record(run, index, step, "started")
        log.info("dry run: step planned", step=step.name, **detail)
        await self._record(run, index, step, "ended", "planned", detail=detail)
        return "ok"

    async def _wet(self, run: _Run, index: int, step: Step) -> Outcome:
        log.info("step started", step=step.name, kind=step.kind)
        if step.delay is not None:
            return await self._delay(run, index, step, step.delay)
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
        if reason := _bind(run, step, prior):
            return await self._ended(run, index, step, False, reason)
        run.done.append(_Done(index, step, prior))
        try:
            async with asyncio.timeout(step.timeout):
                after = await self._retrying(lambda: actuator.apply(spec.action, spec.params))
                await self._converge(spec)
                await self._verify(step)
        except (TimeoutError, ActuatorError, StepFailed) as exc:
            return await self._ended(run, index, step, False, _why(exc))
        await self._record(run, index, step, "ended", "ok", detail={"after": after})
        log.info("step done", step=step.name)
        return "ok"

    async def _delay(self, run: _Run, index: int, step: Step, seconds: float) -> Outcome:
        # The due time is journaled before the wait: whoever resumes the execution (this
        # process after a restart, or the next leader) ends the wait at the same moment.
        due = run.due.setdefault(index, self._clock() + seconds)
        await self._record(run, index, step, "started", detail={"due": due})
        log.info("waiting", step=step.name, seconds=round(due - self._clock(), 3))
        while (left := due - self._clock()) > 0:
            await self._sleep(left)
        return await self._ended(run, index, step, True, "")

    def _resolved(self, run: _Run, step: Step) -> Step:
        return resolve(step, run.bound) if run.runbook.variables else step

    async def _ended(self, run: _Run, index: int, step: Step, ok: bool, reason: str) -> Outcome:
        detail = {"reason": reason} if reason else None
        await self._record(run, index, step, "ended", "ok" if ok else "failed", detail=detail)
        if not ok:
            log.error("step failed", step=step.name, reason=reason)
        return "ok" if ok else "failed"

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retrying(call, self._retry, retryable=_retryable, on_retry=_retried)

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
    if step.delay is not None:
        return f"wait {format_duration(step.delay)}"
    return f"ask for approval: {step.approval}"


def _inputs(runbook: Runbook, execution: ExecutionRecord) -> dict[str, str]:
    """The inputs journaled with ``execution`` (a start by hand records them); else those
    the labels of the alert that started it give, with the runbook's defaults."""
    recorded, labels = execution.alert.get("inputs"), execution.alert.get("labels")
    if isinstance(recorded, dict):
        return {str(k): str(v) for k, v in recorded.items()}
    given = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    return runbook.input_values(given)


def _bind(run: _Run, step: Step, prior: State) -> str:
    """Bind ``step``'s variables from its snapshot; why not, or "" when bound."""
    if missing := sorted(key for key in step.bind.values() if key not in prior):
        return f"step {step.name} binds {missing}, which its snapshot lacks: {sorted(prior)}"
    run.bound |= {name: str(prior[key]) for name, key in step.bind.items()}
    return ""


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, ActuatorError) and exc.retryable


def _retried(exc: Exception, delay: float) -> None:
    log.warning("retryable actuator error", error=str(exc), retry_in=delay)
