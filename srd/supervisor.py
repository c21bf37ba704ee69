"""Named, guarded asyncio tasks; periodic schedules with jitter; staged shutdown.

A task that crashes or exits early is logged at once and restarted with exponential backoff,
or, when it is essential, ends the daemon. Shutdown goes in stages: stop intake (periodic work
schedules nothing new), let in-flight work finish within a grace period, cancel the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from srd.retry import Backoff

log = structlog.get_logger("srd.supervisor")

TaskFactory = Callable[[asyncio.Event], Awaitable[None]]
"""A task body. It gets its stop event: set when the task should finish what it is doing and
return (it is cancelled if it has not returned by the end of the grace period)."""
Job = Callable[[], Awaitable[None]]


RESTART_BACKOFF = Backoff(initial=1.0, maximum=60.0, jitter=0.5)
"""Restarts of a failed task; a run that lasted ``maximum`` resets it. The jitter spreads
restarts of many tasks that failed together."""


class SupervisorMetrics:
    """The supervisor's metrics, created on ``registry``."""

    TASK_RESTARTS = "srd_task_restarts"
    SCHEDULE_LAG = "srd_schedule_lag_seconds"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.task_restarts = Counter(
            self.TASK_RESTARTS,
            "Restarts of supervised tasks after a crash or an early exit.",
            ["task"],
            registry=registry,
        )
        self.schedule_lag = Histogram(
            self.SCHEDULE_LAG,
            "How late periodic work (polls, evaluations) started against its schedule.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )


class EssentialTaskFailed(Exception):
    """An essential task crashed or exited: the daemon must stop (and its manager restart it)."""


class Supervisor:
    """Runs named tasks, restarts them when they fail, and stops them in stages."""

    def __init__(
        self,
        metrics: SupervisorMetrics,
        backoff: Backoff | None = None,
        on_lag: Callable[[str, float], None] | None = None,
    ) -> None:
        """``on_lag(task, seconds)`` also gets each periodic run's start delay (benchmarks)."""
        self._metrics = metrics
        self._backoff = backoff or RESTART_BACKOFF
        self._on_lag = on_lag
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop_events: dict[str, asyncio.Event] = {}
        self._essential: set[str] = set()
        self.stopping = False
        """True once shutdown began: intake has stopped."""
        self.failed = asyncio.Event()
        """Set when an essential task crashed or exited; ``failure`` says which."""
        self.failure: EssentialTaskFailed | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self._tasks)

    def essential_running(self) -> bool:
        return all(name in self._tasks and not self._tasks[name].done() for name in self._essential)

    def start(self, name: str, factory: TaskFactory, *, essential: bool = False) -> None:
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"a task named {name!r} is already running")
        if essential:
            self._essential.add(name)
        stop = self._stop_events[name] = asyncio.Event()
        self._tasks[name] = asyncio.create_task(
            self._guard(name, factory, essential, stop), name=name
        )

    def start_periodic(self, name: str, interval: float, job: Job, *, jitter: float = 0.1) -> None:
        """Run ``job`` every ``interval`` seconds at a fixed rate (no drift), the first run
        delayed by a random part of ``jitter × interval``. A run that overruns skips the
        ticks it missed instead of bursting to catch up."""
        self.start(name, lambda stop: self._periodic(name, interval, job, jitter, stop))

    async def _periodic(
        self, name: str, interval: float, job: Job, jitter: float, stop: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        next_run = loop.time() + random.uniform(0, jitter * interval)  # noqa: S311
        while True:
            if await _set_within(stop, next_run - loop.time()):
                return
            lag = loop.time() - next_run
            self._metrics.schedule_lag.observe(lag)
            if self._on_lag is not None:
                self._on_lag(name, lag)
            await job()
            next_run += interval
            now = loop.time()
            if now > next_run:
                missed = int((now - next_run) // interval) + 1
                log.warning("periodic run overran its interval", task=name, missed_runs=missed)
                next_run += missed * interval

    async def _guard(
        self, name: str, factory: TaskFactory, essential: bool, stop: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        bound = structlog.contextvars.bound_contextvars
        attempt = 0
        while True:
            started = loop.time()
            with bound(task=name):
                try:
                    await factory(stop)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("task crashed")
                    outcome = "crashed"
                else:
                    if stop.is_set():
                        return
                    log.error("task exited unexpectedly")
                    outcome = "exited"
                if essential:
                    if self.failure is None:
                        self.failure = EssentialTaskFailed(f"{name} {outcome}")
                    self.failed.set()
                    return
                if loop.time() - started >= self._backoff.maximum:
                    attempt = 0
                delay = self._backoff.delay(attempt)
                attempt += 1
                self._metrics.task_restarts.labels(name).inc()
                log.info("restarting task", delay_seconds=round(delay, 3), attempt=attempt)
            if await _set_within(stop, delay):
                return

    async def stop(self, names: list[str], grace: float) -> None:
        """Stop the named tasks: they may finish what they are doing within ``grace`` seconds
        (periodic work ends at its next tick); then whatever is left is cancelled."""
        tasks = [self._tasks.pop(name) for name in names if name in self._tasks]
        for name in names:
            self._essential.discard(name)
            if event := self._stop_events.pop(name, None):
                event.set()
        await _drain(tasks, grace)

    async def shutdown(self, grace: float, first: list[str] | None = None) -> None:
        """Stop intake, give in-flight work ``grace`` seconds, then cancel the rest.

        Tasks in ``first`` (the intake: polls, queues) stop before the others (the server),
        so /metrics and /healthz answer until the work has drained."""
        self.stopping = True
        await self.stop(first or [], grace)
        await self.stop(list(self._tasks), grace)


async def wait_first(*events: asyncio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def run_until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends (its exception propagates) or ``stop`` is set (it is
    cancelled): for loops that cannot watch the stop event themselves."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            pending.cancel()
        await asyncio.gather(stopped, return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it is set."""
    if not event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
    return event.is_set()


async def _drain(tasks: list[asyncio.Task[None]], grace: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        log.warning("task did not finish within the grace period; cancelling", task=task.get_name())
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
