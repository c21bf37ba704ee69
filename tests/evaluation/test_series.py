from __future__ import annotations

import pytest

from srd.evaluation.rules import Selector, SeriesNeed
from srd.evaluation.series import SeriesStore
from srd.model import Sample

SEL = Selector.parse('c_total{job="a"}')


def store_with(values: list[float], step: float = 60.0) -> SeriesStore:
    store = SeriesStore(fine_window=3600)
    for i, value in enumerate(values):
        store.ingest("c_total", {"job": "a"}, i * step, value)
    return store


def test_increase_over_aligned_points_extrapolates_like_prometheus() -> None:
    # 0+10x10 at 1m: increase[5m] at 10m sees 6 points, 50 raw, boundaries on points.
    store = store_with([10.0 * i for i in range(11)])
    assert store.increase(SEL, 600, 300) == {(("job", "a"),): pytest.approx(50.0)}


def test_counter_reset_adds_the_value_before_the_reset() -> None:
    store = store_with([0, 10, 20, 5, 15])
    # last - first + pre-reset value = 15 - 0 + 20, no extrapolation needed (on the bounds).
    assert store.increase(SEL, 240, 240)[(("job", "a"),)] == pytest.approx(35.0)


def test_extrapolation_never_goes_below_a_zero_counter() -> None:
    store = store_with([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2])
    store2 = SeriesStore()
    for i, value in enumerate([1.0, 2.0]):
        store2.ingest("c_total", {"job": "a"}, 540 + i * 60, value)
    # Two points 1 apart, counter 1 at the first: zero point lies 60 s before, inside threshold.
    assert store2.increase(SEL, 600, 600)[(("job", "a"),)] == pytest.approx(2.0)
    assert store.rate(SEL, 600, 600)[(("job", "a"),)] == pytest.approx(2.0 * 1.0 / 600)


def test_a_series_with_one_point_in_the_window_is_absent() -> None:
    store = store_with([1.0, 2.0])
    assert store.increase(SEL, 600, 300) == {}
    assert store.sum_increase(SEL, 600, 300) is None


def test_memory_stays_flat_with_thinned_history_beyond_the_fine_window() -> None:
    store = SeriesStore(fine_window=3600, coarse_step=600)
    store.watch([SeriesNeed(SEL, 86400)])
    for i in range(3 * 86400 // 30):
        store.ingest("c_total", {"job": "a"}, i * 30.0, float(i))
    # 1 h at 30 s (120) plus 1 d at 10 min (144), plus the lookback margin.
    assert store.point_count() < 120 + 144 + 20
    assert store.increase(SEL, 3 * 86400 - 30, 86400)[(("job", "a"),)] == pytest.approx(
        2880, rel=0.01
    )


def test_sampling_keeps_only_the_watched_series() -> None:
    store = SeriesStore()
    store.watch([SeriesNeed(SEL, 600)])
    for i in range(3):
        value = 5.0 * (i + 1)
        store.sample(
            [
                Sample("c_total", (("job", "a"),), value),
                Sample("c_total", (("job", "b"),), value),
                Sample("c_created", (("job", "a"),), 1.0),
            ],
            i * 60.0,
        )
    assert list(store.last(Selector.parse("c_total"), 120)) == [(("job", "a"),)]
