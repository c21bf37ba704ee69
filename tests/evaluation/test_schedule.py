"""Rules are evaluated at the scheduled tick, not at the moment the run happened to start, so
a window sees the same samples every time (as Prometheus does)."""

from __future__ import annotations

import random

from srd.evaluation.engine import Schedule
from srd.evaluation.rules import Selector
from srd.evaluation.series import SeriesStore

SEL = Selector("srd_chain_best_block")


def test_a_1m_window_with_30s_evaluations_always_sees_the_same_sample_count() -> None:
    rng = random.Random(7)  # noqa: S311 - lag, not a secret
    schedule = Schedule(30.0)
    store = SeriesStore(fine_window=3600)
    counts = set()
    start = 1_700_000_000.0
    for k in range(200):
        # A run starts late by up to a third of the interval (a busy loop, a slow probe).
        now = start + 30.0 * k + rng.uniform(0, 10.0)
        at = schedule.at(now)
        store.ingest("srd_chain_best_block", {}, at, float(k))
        if k >= 2:
            [points] = store.range(SEL, at, 60.0).values()
            counts.add(len(points))
    assert len(counts) == 1


def test_ticks_never_repeat_even_when_the_wall_clock_steps_back() -> None:
    schedule = Schedule(30.0)
    ticks = [schedule.at(now) for now in (100.0, 130.5, 130.2, 160.1, 250.0)]
    assert ticks == [100.0, 130.0, 160.0, 190.0, 250.0]
