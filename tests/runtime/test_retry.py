from __future__ import annotations

import itertools

import pytest

from srd.retry import Backoff, retrying


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    delays = Backoff(initial=0.2, maximum=5.0).delays()
    assert list(itertools.islice(delays, 7)) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_a_fresh_iterator_starts_over_from_the_first_delay() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, factor=3.0)
    used = backoff.delays()
    assert [next(used), next(used)] == [1.0, 3.0]
    assert next(backoff.delays()) == 1.0


def test_jittered_delays_lie_between_the_jitter_floor_and_the_base() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, jitter=0.25)
    drawn = [backoff.delay(2) for _ in range(200)]
    assert all(3.0 <= delay <= 4.0 for delay in drawn)
    assert len(set(drawn)) > 1


def test_a_retry_count_far_past_the_cap_waits_the_cap_instead_of_overflowing() -> None:
    assert Backoff(initial=1.0, maximum=60.0).delay(5000) == 60.0


async def test_retrying_retries_what_is_retryable_until_the_call_succeeds() -> None:
    calls = 0
    waits: list[float] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionError(f"refused {calls}")
        return "done"

    result = await retrying(
        flaky,
        Backoff(initial=0.001, maximum=0.002),
        retryable=lambda exc: isinstance(exc, ConnectionError),
        on_retry=lambda exc, delay: waits.append(delay),
    )
    assert (result, calls) == ("done", 4)
    assert waits == [0.001, 0.002, 0.002]


async def test_retrying_raises_a_permanent_error_at_the_first_failure() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PermissionError("forbidden")

    with pytest.raises(PermissionError, match="forbidden"):
        await retrying(
            refused,
            Backoff(initial=0.001),
            retryable=lambda exc: isinstance(exc, ConnectionError),
        )
    assert calls == 1
