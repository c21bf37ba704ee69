"""The one wait-until of the tests: poll a condition until it holds or time runs out."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]], *, within: float, what: str, every: float = ...
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None], *, within: float, what: str, every: float = ...
) -> T: ...


async def eventually(
    condition: Callable[[], Any], *, within: float, what: str, every: float = 0.02
) -> Any:
    """Poll ``condition`` (sync or async) every ``every`` seconds until it returns a truthy
    value, and return that value; fail the test after ``within`` seconds, naming ``what`` and
    the last value seen. An exception from ``condition`` fails the test at once. The result
    is never None, so a condition may answer "not yet" with None.

    ``every``: the default suits in-process state; a condition that asks a subprocess over
    HTTP polls less often, so as not to load the process it waits for."""
    started = time.monotonic()
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() - started >= within:
            raise AssertionError(f"not within {within:g}s: {what} (last: {value!r})")
        await asyncio.sleep(every)
