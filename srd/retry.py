"""Retry with exponential backoff: one policy for every place that tries again.

A ``Backoff`` says how long to wait before each retry; ``retrying`` runs a call until it
succeeds or fails with an error its caller's classifier calls permanent. Nothing here bounds
the number of tries by time: callers wrap the retries in their own ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays that grow by ``factor`` from ``initial`` up to ``maximum``, optionally jittered."""

    initial: float = 1.0
    """Delay before the first retry, seconds."""
    maximum: float = 60.0
    """Cap of the delay, seconds."""
    factor: float = 2.0
    """Growth of the delay from one retry to the next."""
    jitter: float = 0.0
    """Part of each delay drawn at random: the delay is between ``1 - jitter`` and all of its
    base, so many waiters that failed together do not retry together."""

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (0 for the first)."""
        try:
            base = min(self.maximum, self.initial * self.factor**attempt)
        except OverflowError:  # a long run of retries, far past the cap
            base = self.maximum
        if not self.jitter:
            return base
        return base * random.uniform(1.0 - self.jitter, 1.0)  # noqa: S311 - not for security

    def delays(self) -> Iterator[float]:
        """The delays of one run of retries, endless: a fresh iterator starts over."""
        return (self.delay(attempt) for attempt in itertools.count())


async def retrying(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retryable: Callable[[Exception], bool],
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """Await ``call()`` until it returns; an error ``retryable`` accepts is retried after the
    next delay (``on_retry(error, delay)`` is told first), any other error propagates."""
    delays = backoff.delays()
    while True:
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc):
                raise
            delay = next(delays)
            if on_retry is not None:
                on_retry(exc, delay)
        await asyncio.sleep(delay)
