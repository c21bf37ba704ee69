"""From queued alert to execution: dedup, match runbooks, settle, run one at a time per
runbook; a resolved alert cancels executions that have not started. Reconciles first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from srd import logs
from srd.config import Mode
from srd.failover.executor import Executor
from srd.failover.intake import IncomingAlert, Intake
from srd.failover.runbooks import Runbook
from srd.journal import ExecutionRecord, Journal
from srd.metrics import Metrics

log = structlog.get_logger("srd.failover.dispatch")


@dataclass
class _Entry:
    execution: ExecutionRecord
    runbook: Runbook
    task: asyncio.Task[None] | None = None
    started: bool = False


def execution_key(runbook: str, alert: IncomingAlert) -> str:
    """Idempotency of a decision: one execution per runbook, alert fingerprint and startsAt."""
    return f"{runbook}/{alert.fingerprint}/{alert.starts_at}"


class Dispatcher:
    def __init__(
        self,
        *,
        intake: Intake,
        journal: Journal,
        executor: Executor,
        runbooks: Sequence[Runbook],
        mode: Callable[[], Mode],
        metrics: Metrics,
    ) -> None:
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

    async def run(self, stop: asyncio.Event) -> None:
        """The task body: reconcile, then take alerts until ``stop``. On stop, executions
        that have not started are dropped (they stay ``planned`` and resume at the next
        start); running ones are awaited until the supervisor's grace period cancels them."""
        try:
            await self.reconcile()
            while (alert := await self._next(stop)) is not None:
                try:
                    await self.handle(alert)
                finally:
                    self._intake.done()
            for entry in list(self._entries.values()):
                if not entry.started and entry.task is not None:
                    entry.task.cancel()
            await self.idle()
        finally:
            tasks = [e.task for e in self._entries.values() if e.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _next(self, stop: asyncio.Event) -> IncomingAlert | None:
        """The next queued alert, or None once ``stop`` is set."""
        getter = asyncio.ensure_future(self._intake.get())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([getter, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (getter, stopped):
                if not waiter.done():
                    waiter.cancel()
            await asyncio.gather(getter, stopped, return_exceptions=True)
        return None if getter.cancelled() else getter.result()

    async def idle(self) -> None:
        """Wait until no execution is in flight."""
        while tasks := [e.task for e in self._entries.values() if e.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reconcile(self) -> None:
        by_name = {r.name: r for r in self.runbooks}
        for execution in await self._journal.unfinished():
            runbook = by_name.get(execution.runbook)
            if runbook is None:
                reason = f"runbook {execution.runbook} no longer exists; reconcile by hand"
                log.error("cannot resume execution", execution=execution.id, reason=reason)
                await self._journal.set_state(execution.id, "failed", {"reason": reason})
                continue
            self._spawn(runbook, execution, resume=True)

    async def handle(self, alert: IncomingAlert) -> None:
        with structlog.contextvars.bound_contextvars(
            correlation_id=logs.new_correlation_id(), fingerprint=alert.fingerprint
        ):
            fresh = await self._journal.record_alert(
                alert.fingerprint, alert.starts_at, alert.status, alert.to_dict()
            )
            if not fresh:
                log.debug("alert already received; nothing more to do", status=alert.status)
            elif alert.status == "resolved":
                await self._resolved(alert)
            else:
                await self._firing(alert)

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
            if execution is None:
                log.info("execution already decided for this alert", runbook=runbook.name)
                continue
            log.info("execution planned", runbook=runbook.name, execution=execution.id)
            self._spawn(runbook, execution, resume=False)

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
            await self._journal.set_state(
                entry.execution.id, "cancelled", {"reason": "alert resolved before it started"}
            )
            self._metrics.runbook_executions.labels(entry.runbook.name, "cancelled").inc()
            log.info("execution cancelled: alert resolved", execution=entry.execution.id)

    def _spawn(self, runbook: Runbook, execution: ExecutionRecord, *, resume: bool) -> None:
        entry = _Entry(execution, runbook)
        self._entries[execution.id] = entry
        entry.task = asyncio.create_task(
            self._execute(entry, resume), name=f"execution-{execution.id}"
        )
        # A callback, not a finally: a task cancelled before it ran never enters its body.
        entry.task.add_done_callback(lambda _: self._entries.pop(execution.id, None))

    async def _execute(self, entry: _Entry, resume: bool) -> None:
        execution, runbook = entry.execution, entry.runbook
        try:
            if execution.state == "planned" and runbook.settle > 0:
                await asyncio.sleep(runbook.settle)
            async with self._locks.setdefault(runbook.name, asyncio.Lock()):
                entry.started = True
                if resume:
                    await self._executor.resume(runbook, execution)
                else:
                    await self._executor.run(runbook, execution)
        except Exception:
            # Left running in the journal: the next start reconciles it.
            log.exception("execution crashed", execution=execution.id)
