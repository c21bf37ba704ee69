"""From queued alert to execution: dedup, match runbooks, settle, run one at a time per
runbook; a resolved alert cancels executions that have not started.

Every replica records the alerts it receives and plans their executions in the journal (the
keys let one replica win); only the leader runs them. While it leads, a replica takes up every
``poll`` what the journal holds unfinished and nobody here runs: executions a previous leader
left (reconciled) and executions followers planned (started). On gaining the lead it first
claims its term, so a deposed leader can write nothing more.

An execution a fault interrupts (a journal write that failed, a crash of its code) is never
left ``running``: the leader resumes it from the journal after a backoff, again and again,
and meanwhile counts it in ``stuck`` (``srd_executions_stuck``, ``/readyz``). A replica that
stops leading meanwhile lets it go: the next leader takes it up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog

from srd import logs
from srd.clock import now as clock_now
from srd.config import Mode
from srd.failover.executor import Executor
from srd.failover.intake import IncomingAlert, Intake, iso_utc
from srd.failover.leader import Leadership
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Runbook
from srd.journal import (
    AlertReceipt,
    ExecutionRecord,
    Executions,
    ExecutionState,
    Fence,
    Fencing,
    JournalError,
    Receipts,
)
from srd.retry import Backoff

log = structlog.get_logger("srd.failover.dispatch")

T = TypeVar("T")
JOURNAL_RETRY = Backoff(initial=0.1, maximum=5.0)
"""Waits before retries of a journal write that failed."""
EXECUTION_RETRY = Backoff(initial=1.0, maximum=30.0, jitter=0.2)
"""Waits before the leader resumes an execution a fault interrupted: a journal outage of
seconds (a PostgreSQL restart) is bridged within a few tries, a long one costs a try per
half minute."""
BATCH = 256
"""New alerts decided per batch at most: their receipts are marked decided in one write."""


class DispatchJournal(Receipts, Executions, Fencing, Protocol):
    """What the dispatcher records: the alerts received and the executions decided on them,
    under its term."""


@dataclass
class _Entry:
    execution: ExecutionRecord
    runbook: Runbook
    task: asyncio.Task[None] | None = None
    started: bool = False


def execution_key(runbook: str, alert: IncomingAlert) -> str:
    """Idempotency of a decision: one execution per runbook, alert fingerprint and startsAt
    (``#2``, ``#3``… appended for the decisions after a released one)."""
    return f"{runbook}/{alert.fingerprint}/{alert.starts_at}"


BY_HAND = "manual"
"""The ``source`` of an execution's recorded alert when a person started it (``start``)."""


class StartRefused(Exception):
    """A start by hand that cannot be: no such runbook, or labels its matchers refuse."""


class UnknownRunbook(StartRefused):
    pass


def by_hand(execution: ExecutionRecord) -> bool:
    return execution.alert.get("source") == BY_HAND


_RELEASED = {
    "released": True,
    "reason": "blocked before anything acted: a resend of the alert may run it",
}


class Dispatcher:
    def __init__(
        self,
        *,
        intake: Intake,
        journal: DispatchJournal,
        executor: Executor,
        runbooks: Sequence[Runbook],
        mode: Callable[[], Mode],
        metrics: FailoverMetrics,
        leadership: Leadership,
        poll: float,
        clock: Callable[[], float] = clock_now,
    ) -> None:
        """``poll``: seconds between the leader's looks at the journal for executions to take
        up (the runtime passes ``ha.retry_period``: a follower's alert waits at most this).
        ``clock``: the journal's, which dates the executions (settle counts from then)."""
        self._intake = intake
        self._journal = journal
        self._executor = executor
        self.runbooks = list(runbooks)
        """Replace on reload; executions in flight keep the runbook they started with."""
        self._mode = mode
        self._metrics = metrics
        self.tags: dict[str, Any] = {}
        """Merged into every new execution's recorded alert: a drill sets ``kind: drill``
        so its recoveries are told apart from real ones (``Journal.recovery_records``)."""
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._leadership = leadership
        self._poll = poll
        self._clock = clock
        self._wake = asyncio.Event()
        self._fence: Fence | None = None
        """The term this replica has claimed in the journal; None: none claimed yet."""
        self._taken: set[str] = set()
        """Executions taken up in this term (running or done): a journal read that began
        before one of them ended must not take it up again."""
        self._stop = asyncio.Event()
        """``run``'s stop: once set, new executions are planned, not started."""
        self._catch_up_wanted = asyncio.Event()
        self.stuck: dict[str, str] = {}
        """Executions a fault interrupted, by id, with why, while they wait to be resumed."""

    async def run(self, stop: asyncio.Event) -> None:
        """The task body: commit what the intake admits (group commit: the webhook's 2xx
        waits for it), decide on each new alert until ``stop``, and (while leading) take up
        unfinished executions. First, alerts whose receipts were committed but not decided
        (a crash between the two) are decided. On stop, the intake closes (the webhook
        answers 503, so Alertmanager retries), what it still holds is committed and decided —
        executions planned in the journal, not started; executions that have not started are
        dropped (they stay ``planned``): both run at the next start. Running ones are awaited
        until the supervisor's grace period cancels them."""
        self._stop = stop
        committing = asyncio.create_task(
            self._intake.commit(self._journal, recovered=self._catch_up_wanted.set),
            name="failover-commit",
        )
        taking_up = asyncio.create_task(self._take_up(), name="failover-take-up")
        try:
            await self._catch_up()
            while (batch := await self._next(stop)) is not None:
                if batch:
                    try:
                        await self.decide(batch)
                    finally:
                        self._intake.done(len(batch))
                else:
                    await self._catch_up()
            self._intake.close()
            await committing
            left = self._intake.drain()
            try:
                await self.decide(left)
            finally:
                self._intake.done(len(left))
            taking_up.cancel()  # it must start nothing more
            await asyncio.gather(taking_up, return_exceptions=True)
            for entry in list(self._entries.values()):
                if not entry.started and entry.task is not None:
                    entry.task.cancel()
            await self.idle()
        finally:
            # The intake is not closed here: after a crash the supervisor runs this again on
            # it, and the webhook's requests wait for that run's group commit.
            for task in (committing, taking_up):
                task.cancel()
            await asyncio.gather(committing, taking_up, return_exceptions=True)
            await self.stand_down()

    async def _catch_up(self) -> None:
        """Decide on alerts the journal holds as received and not decided: a crash (or a
        journal call that failed after it committed) came between the two."""
        self._catch_up_wanted.clear()
        while receipts := await self._journaled(self._journal.undecided, []):
            alerts = [IncomingAlert.from_dict(r.alert) for r in receipts]
            log.info("deciding on alerts received before a crash", alerts=len(alerts))
            await self.decide(alerts, receipts)

    def acquired(self) -> None:
        """This replica now leads: take up unfinished executions now, not at the next poll."""
        self._wake.set()

    async def stand_down(self) -> None:
        """Cancel every execution in flight, its actuator calls with it; alerts are still
        taken. On a loss of the lead: the next leader reconciles them from the journal."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        if tasks:
            log.warning(
                "cancelling executions in flight; the leader reconciles them",
                executions=list(self._entries),
            )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fence = None  # leading again, even at the same term, takes them up again

    async def _take_up(self) -> None:
        while True:
            self._wake.clear()
            if self._leadership.is_leader():
                try:
                    await self._claim()
                    await self.reconcile()
                except JournalError as exc:
                    log.error(
                        "cannot take up unfinished executions; trying again",
                        error=str(exc),
                        retry_in=self._poll,
                    )
                except Exception:
                    # A child task: nobody awaits it until stop, so say it at once and go on.
                    log.exception("taking up unfinished executions crashed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _claim(self) -> None:
        """On a new term, record it in the journal before reading what the previous leader
        left: from then on that leader's writes are refused."""
        fence = self._leadership.fence()
        if fence is None or fence == self._fence:
            return
        await self._journal.lead(fence)
        log.info("claimed the journal for this term", holder=fence.holder, term=fence.term)
        self._fence = fence
        self._taken.clear()

    async def _next(self, stop: asyncio.Event) -> list[IncomingAlert] | None:
        """The next new alerts (``BATCH`` at most); [] when a catch-up is wanted; None once
        ``stop`` is set."""
        getter = asyncio.ensure_future(self._intake.get_batch(BATCH))
        stopped = asyncio.ensure_future(stop.wait())
        catch_up = asyncio.ensure_future(self._catch_up_wanted.wait())
        waiters = (getter, stopped, catch_up)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if not getter.cancelled():
            return getter.result()
        return None if stopped.done() and not stopped.cancelled() else []

    async def idle(self) -> None:
        """Wait until no execution is in flight."""
        while tasks := [e.task for e in self._entries.values() if e.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reconcile(self) -> None:
        """Run what the journal holds ``planned`` or ``running`` and this replica does not
        run already (while it leads)."""
        by_name = {r.name: r for r in self.runbooks}
        unfinished = await self._journal.unfinished()
        # Forget what has ended since: a read that began after its end cannot see it again.
        self._taken &= {e.id for e in unfinished} | self._entries.keys()
        for execution in unfinished:
            if execution.id in self._taken or not self._leadership.is_leader():
                continue
            runbook = by_name.get(execution.runbook)
            if runbook is None:
                reason = f"runbook {execution.runbook} no longer exists; reconcile by hand"
                log.error("cannot resume execution", execution=execution.id, reason=reason)
                await self._journal.set_state(execution.id, "failed", {"reason": reason})
                continue
            self._spawn(runbook, execution, resume=True)

    async def decide(
        self, alerts: Sequence[IncomingAlert], receipts: Sequence[AlertReceipt] | None = None
    ) -> None:
        """Decide on each of ``alerts`` (new, their receipts committed) in order, then mark
        their receipts decided. Deciding again is harmless: execution keys are unique."""
        if not alerts:
            return
        for alert in alerts:
            with structlog.contextvars.bound_contextvars(
                correlation_id=logs.new_correlation_id(), fingerprint=alert.fingerprint
            ):
                decide = self._resolved if alert.status == "resolved" else self._firing
                await self._journaled(partial(decide, alert), [alert])
        if receipts is None:
            receipts = [
                AlertReceipt(a.fingerprint, a.starts_at, a.status, a.to_dict()) for a in alerts
            ]
        await self._journaled(partial(self._journal.mark_decided, receipts), alerts)

    async def _journaled(
        self, write: Callable[[], Awaitable[T]], alerts: Sequence[IncomingAlert]
    ) -> T:
        """``write`` until the journal takes it. Alertmanager had its 200 for these alerts
        (their receipts are committed): a journal outage holds them (the queue fills, the
        webhook answers 503) rather than dropping them; a crash leaves them to ``_catch_up``.
        Each write is idempotent (receipts and execution keys are unique)."""
        attempt = 0
        while True:
            try:
                return await write()
            except JournalError as exc:
                attempt += 1
                delay = JOURNAL_RETRY.delay(attempt - 1)
                log.error(
                    "journal unavailable; holding the alerts and trying again",
                    error=str(exc),
                    alerts=len(alerts),
                    attempt=attempt,
                    retry_in=delay,
                )
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    lost = [a.fingerprint for a in alerts]
                    log.error("stopped before the journal took these alerts", fingerprints=lost)
                    raise

    async def _firing(self, alert: IncomingAlert) -> None:
        mode = self._mode()
        for runbook in self.runbooks:
            if not runbook.matches(alert.labels):
                continue
            key = execution_key(runbook.name, alert)
            data = alert.to_dict()
            if runbook.scenario is not None:
                data["scenario"] = runbook.scenario
            data.update(self.tags)
            correlation = structlog.contextvars.get_contextvars()["correlation_id"]
            execution = await self._journal.start_execution(
                runbook.name, key, mode.value, correlation, data
            )
            retry = 1
            while execution is None and await self._released(key):
                retry += 1
                key = f"{execution_key(runbook.name, alert)}#{retry}"
                execution = await self._journal.start_execution(
                    runbook.name, key, mode.value, correlation, data
                )
            if execution is None:
                log.info("execution already decided for this alert", runbook=runbook.name)
                continue
            if not self._leadership.is_leader():
                log.info(
                    "execution planned; the leader runs it",
                    runbook=runbook.name,
                    execution=execution.id,
                )
                continue
            if self._stop.is_set():
                log.info(
                    "execution planned while stopping; it runs at the next start",
                    runbook=runbook.name,
                    execution=execution.id,
                )
                continue
            log.info("execution planned", runbook=runbook.name, execution=execution.id)
            self._spawn(runbook, execution, resume=False)

    async def start(
        self,
        runbook_name: str,
        labels: Mapping[str, str],
        *,
        by: str,
        dry_run: bool,
        request: str,
    ) -> tuple[ExecutionRecord, bool]:
        """Plan an execution of ``runbook_name`` that no alert started, as ``srd execute``
        asks: (the execution, whether this call created it). Every guard applies as to any
        execution; only ``settle`` is not waited (a person decided, no alert may resolve).
        ``labels`` stand in for an alert's: the runbook's ``=`` matchers filled in, and
        each given one checked against the matchers on its label (a runbook for
        ``service="web"`` is not started with ``service=db``); those named like the runbook's
        ``inputs`` set them. ``dry_run`` can only lower the mode.
        ``request`` names the request: the same one again returns the same execution.
        StartRefused: no such runbook, or labels its matchers refuse."""
        runbook = next((r for r in self.runbooks if r.name == runbook_name), None)
        if runbook is None:
            loaded = sorted(r.name for r in self.runbooks)
            raise UnknownRunbook(f"no runbook named {runbook_name!r}; loaded: {loaded}")
        implied = {m.label: m.value for m in runbook.matchers if m.op == "="}
        full = implied | dict(labels)
        if refused := [
            text
            for text, m in zip(runbook.match, runbook.matchers, strict=True)
            if m.label in full and not m.matches(full)
        ]:
            raise StartRefused(f"{runbook.name} matches {refused}, which {dict(labels)} breaks")
        if bad := self._executor.input_issues(runbook, labels):
            raise StartRefused(f"{runbook.name}: {'; '.join(bad)}")
        mode = Mode.DRY_RUN.value if dry_run else self._mode().value
        key = f"{runbook.name}/{BY_HAND}/{request}"
        data: dict[str, Any] = {
            "source": BY_HAND,
            "status": "firing",
            "fingerprint": f"{BY_HAND}-{request}",
            "startsAt": iso_utc(self._clock()),
            "endsAt": None,
            "labels": full,
            "annotations": {"summary": f"started by hand by {by}"},
            "started_by": by,
        }
        if runbook.scenario is not None:
            data["scenario"] = runbook.scenario
        if runbook.inputs:
            # What the steps will use, defaults included: a resume or the next leader uses
            # these even if a reload has changed a default meanwhile.
            data["inputs"] = runbook.input_values(full)
        data.update(self.tags)
        correlation = logs.new_correlation_id()
        with structlog.contextvars.bound_contextvars(correlation_id=correlation):
            execution = await self._journal.start_execution(
                runbook.name, key, mode, correlation, data
            )
            if execution is None:
                existing = await self._journal.execution_by_key(key)
                if existing is None:  # the journal refused a key it does not hold
                    raise JournalError(f"execution {key} neither created nor found")
                return existing, False
            log.info(
                "execution started by hand",
                runbook=runbook.name,
                execution=execution.id,
                by=by,
                mode=mode,
            )
            if self._leadership.is_leader() and not self._stop.is_set():
                self._spawn(runbook, execution, resume=False)
        return execution, True

    async def _resolved(self, alert: IncomingAlert) -> None:
        for entry in list(self._entries.values()):
            recorded = entry.execution.alert
            if (recorded.get("fingerprint"), recorded.get("startsAt")) != (
                alert.fingerprint,
                alert.starts_at,
            ):
                continue
            if entry.started or entry.task is None:
                # Never act on resolved: the running runbook may be what resolved it.
                log.info(
                    "alert resolved while its runbook runs; recorded, not acted on",
                    execution=entry.execution.id,
                )
                continue
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.task
            await self._cancel(entry)

    async def _resolved_meanwhile(self, entry: _Entry) -> bool:
        """Whether the journal holds a resolve of the execution's alert, received by any
        replica (Alertmanager posts to any): then cancel it, as ``_resolved`` does here."""
        alert = entry.execution.alert
        receipts = await self._journal.receipts(
            str(alert.get("fingerprint")), str(alert.get("startsAt"))
        )
        if all(status != "resolved" for status, _ in receipts):
            return False
        await self._cancel(entry)
        return True

    async def _cancel(self, entry: _Entry) -> None:
        await self._journal.set_state(
            entry.execution.id,
            "cancelled",
            {"reason": "alert resolved before it started"},
            fence=self._leadership.fence(),
        )
        self._metrics.runbook_executions.labels(entry.runbook.name, "cancelled").inc()
        log.info("execution cancelled: alert resolved", execution=entry.execution.id)

    async def _release(self, execution: ExecutionRecord) -> None:
        """A guard blocked ``execution`` before anything acted (say the kill switch was on):
        nothing happened that a resend could repeat, so release the alert — the next resend
        (Alertmanager's repeat_interval) decides again, once the block may have lifted. Half
        done work stays blocked: it needs a human, not a rerun."""
        steps = await self._journal.steps(execution.id)
        if any(s.phase == "started" and s.prior is not None for s in steps):
            return
        await self._journal.set_state(execution.id, "blocked", _RELEASED)
        await self._journal.forget_alert(
            str(execution.alert.get("fingerprint")), str(execution.alert.get("startsAt"))
        )
        log.info("blocked before anything acted; a resend of the alert may run it")

    async def _released(self, key: str) -> bool:
        """Whether the execution decided under ``key`` was released (``_release``)."""
        previous = await self._journal.execution_by_key(key)
        if previous is None or previous.state != "blocked":
            return False
        states = await self._journal.states(previous.id)
        return bool(states) and states[-1].detail == _RELEASED

    def _spawn(self, runbook: Runbook, execution: ExecutionRecord, *, resume: bool) -> None:
        entry = _Entry(execution, runbook)
        self._entries[execution.id] = entry
        self._taken.add(execution.id)
        entry.task = asyncio.create_task(
            self._execute(entry, resume), name=f"execution-{execution.id}"
        )
        # A callback, not a finally: a task cancelled before it ran never enters its body.
        entry.task.add_done_callback(lambda _: self._entries.pop(execution.id, None))

    async def _execute(self, entry: _Entry, resume: bool) -> None:
        execution, runbook = entry.execution, entry.runbook
        try:
            if execution.state == "planned" and not by_hand(execution):
                # From the decision, not from this pickup: a follower may have planned it.
                # (Replicas' clocks may differ; the wait never exceeds ``settle``.)
                waited = max(0.0, self._clock() - execution.created_at)
                await asyncio.sleep(max(0.0, runbook.settle - waited))
            async with self._locks.setdefault(runbook.name, asyncio.Lock()):
                if execution.state == "planned" and await self._resolved_meanwhile(entry):
                    return
                entry.started = True
                state = await self._carry_out(entry, resume)
                if state == "blocked" and not by_hand(execution):
                    await self._release(execution)
        except Exception:
            # Before or after the executor (a journal read or the release): the next poll
            # takes it up again.
            log.exception("execution not taken up; the next poll tries again")
            self._taken.discard(execution.id)
        finally:
            self._unstuck(execution.id)

    async def _carry_out(self, entry: _Entry, resume: bool) -> ExecutionState | None:
        """Run (or resume) the execution until it ends; after a fault, resume it from the
        journal after a backoff, for as long as this replica leads."""
        execution, runbook = entry.execution, entry.runbook
        attempt = 0
        while True:
            try:
                if attempt == 0:
                    run = self._executor.resume if resume else self._executor.run
                    return await run(runbook, execution)
                current = await self._journal.execution(execution.id)
                if current is None or current.state not in ("planned", "running"):
                    # The write that failed had committed after all, and it was the last.
                    return current.state if current is not None else None
                return await self._executor.resume(runbook, current)
            except Exception as exc:
                delay = EXECUTION_RETRY.delay(attempt)
                reason = str(exc) if isinstance(exc, JournalError) else f"crashed: {exc!r}"
                self.stuck[execution.id] = reason
                self._metrics.executions_stuck.set(len(self.stuck))
                log.error(
                    "execution interrupted; resuming it from the journal",
                    error=reason,
                    attempt=attempt + 1,
                    retry_in=round(delay, 3),
                    exc_info=not isinstance(exc, JournalError),
                )
            await asyncio.sleep(delay)
            attempt += 1
            if not self._leadership.is_leader():
                log.warning("no longer leading: the execution is left to the next leader")
                self._taken.discard(execution.id)
                return None

    def _unstuck(self, execution_id: str) -> None:
        if self.stuck.pop(execution_id, None) is not None:
            self._metrics.executions_stuck.set(len(self.stuck))
