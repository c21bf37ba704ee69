"""Shared fixtures. Every test builds its own registry; an async test that leaves tasks
running fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from srd.metrics import Metrics


@pytest_asyncio.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftover = [
        task for task in asyncio.all_tasks() - before if task is not current and not task.done()
    ]
    for task in leftover:
        task.cancel()
    assert not leftover, f"test left tasks running: {[t.get_name() for t in leftover]}"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()
