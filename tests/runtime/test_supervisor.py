from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from srd.supervisor import RESTART_BACKOFF, Supervisor, SupervisorMetrics, TaskFactory

FAST = replace(RESTART_BACKOFF, initial=0.01, maximum=0.05)


@pytest.mark.parametrize(("ending", "failures"), [("raises", 3), ("returns early", 1)])
async def test_a_task_that_raises_or_returns_early_is_restarted_and_counted(
    metrics: SupervisorMetrics, ending: str, failures: int
) -> None:
    supervisor = Supervisor(metrics, FAST)
    runs = 0
    healthy = asyncio.Event()

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs <= failures:
            if ending == "raises":
                raise RuntimeError("boom")
            return
        healthy.set()
        await stop.wait()

    supervisor.start("flaky", flaky)
    await asyncio.wait_for(healthy.wait(), timeout=5)
    assert runs == failures + 1
    restarts = metrics.registry.get_sample_value("srd_task_restarts_total", {"task": "flaky"})
    assert restarts == failures
    assert not supervisor.failed.is_set()
    await supervisor.shutdown(grace=1)


async def test_an_essential_task_that_crashes_fails_the_supervisor(
    metrics: SupervisorMetrics,
) -> None:
    supervisor = Supervisor(metrics, FAST)

    async def server(stop: asyncio.Event) -> None:
        raise OSError("address already in use")

    supervisor.start("server", server, essential=True)
    await asyncio.wait_for(supervisor.failed.wait(), timeout=5)
    assert str(supervisor.failure) == "server crashed"
    assert not supervisor.essential_running()
    assert metrics.registry.get_sample_value("srd_task_restarts_total", {"task": "server"}) is None
    await supervisor.shutdown(grace=1)


async def test_periodic_work_repeats_and_stops_at_its_next_tick(metrics: SupervisorMetrics) -> None:
    supervisor = Supervisor(metrics, FAST)
    ticks: list[float] = []
    loop = asyncio.get_running_loop()

    async def job() -> None:
        ticks.append(loop.time())

    supervisor.start_periodic("poll", 0.02, job, jitter=0)
    while len(ticks) < 5:
        await asyncio.sleep(0.01)
    await supervisor.shutdown(grace=1)
    count = len(ticks)
    await asyncio.sleep(0.06)
    assert len(ticks) == count, "no run may start after shutdown"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Fixed rate: the average gap is the interval, not interval + run time (no drift).
    assert sum(gaps) / len(gaps) == pytest.approx(0.02, rel=0.5)


async def test_shutdown_lets_in_flight_work_finish_within_the_grace(
    metrics: SupervisorMetrics,
) -> None:
    supervisor = Supervisor(metrics, FAST)
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow_poll() -> None:
        started.set()
        await asyncio.sleep(0.1)
        finished.set()

    supervisor.start_periodic("poll", 10, slow_poll, jitter=0)
    await started.wait()
    await supervisor.shutdown(grace=2)
    assert finished.is_set()


async def test_shutdown_cancels_work_that_overruns_the_grace(metrics: SupervisorMetrics) -> None:
    supervisor = Supervisor(metrics, FAST)
    started = asyncio.Event()
    cancelled = False

    async def stuck_poll() -> None:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled = True
            raise

    supervisor.start_periodic("poll", 10, stuck_poll, jitter=0)
    await started.wait()
    await supervisor.shutdown(grace=0.05)
    assert cancelled


async def test_intake_stops_before_the_server_on_shutdown(metrics: SupervisorMetrics) -> None:
    supervisor = Supervisor(metrics, FAST)
    order: list[str] = []

    def body(name: str, linger: float) -> TaskFactory:
        async def run(stop: asyncio.Event) -> None:
            await stop.wait()
            await asyncio.sleep(linger)
            order.append(name)

        return run

    supervisor.start("server", body("server", 0), essential=True)
    supervisor.start("intake", body("intake", 0.05))
    await asyncio.sleep(0)
    await supervisor.shutdown(grace=1, first=["intake"])
    assert order == ["intake", "server"]


def test_restart_backoff_doubles_up_to_its_cap() -> None:
    backoff = replace(RESTART_BACKOFF, initial=1, maximum=8)
    for attempt, base in enumerate([1, 2, 4, 8, 8, 8]):
        assert base / 2 <= backoff.delay(attempt) <= base


async def test_two_tasks_cannot_share_a_name(metrics: SupervisorMetrics) -> None:
    supervisor = Supervisor(metrics, FAST)

    async def idle(stop: asyncio.Event) -> None:
        await stop.wait()

    supervisor.start("probe", idle)
    with pytest.raises(ValueError, match="already running"):
        supervisor.start("probe", idle)
    await supervisor.shutdown(grace=1)
