"""The tests' one wait-until: what it returns, and how it fails."""

from __future__ import annotations

import time

import pytest

from tests.support.eventually import eventually


async def test_an_async_condition_is_awaited_and_its_first_truthy_value_returned() -> None:
    answers = iter([None, [], ["ready"]])

    async def next_answer() -> list[str] | None:
        return next(answers)

    assert await eventually(next_answer, within=1, what="ready") == ["ready"]


async def test_a_condition_that_never_holds_fails_naming_what_and_the_last_value() -> None:
    began = time.monotonic()
    with pytest.raises(AssertionError, match=r"not within 0.1s: the lease moved \(last: 0\)"):
        await eventually(lambda: 0, within=0.1, what="the lease moved")
    assert 0.1 <= time.monotonic() - began < 1


async def test_an_exception_from_the_condition_fails_at_once_not_at_the_deadline() -> None:
    def exited() -> bool:
        raise AssertionError("srd exited with 1")

    began = time.monotonic()
    with pytest.raises(AssertionError, match="srd exited with 1"):
        await eventually(exited, within=30, what="srd healthy")
    assert time.monotonic() - began < 1
