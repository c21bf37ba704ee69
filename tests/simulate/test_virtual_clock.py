"""The drills' virtual clock (srd.simulate.clock): time jumps to the next timer when every task
waits, stands still while a thread works, and is what srd's own clock reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import ClientSession, web

from srd import clock
from srd.http.app import serving
from srd.journal import SqliteJournal
from srd.simulate.clock import VirtualLoop

T = TypeVar("T")


def on_virtual_time(main: Callable[[], Awaitable[T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        return runner.run(main())  # type: ignore[arg-type]


def test_a_day_of_timers_passes_in_no_wall_time_and_ends_exactly_on_time() -> None:
    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        start, woke = loop.time(), []

        async def sleeper(seconds: float) -> None:
            await asyncio.sleep(seconds)
            woke.append(loop.time() - start)

        await asyncio.gather(sleeper(86400), sleeper(3600.5), sleeper(0.25))
        return loop.time() - start, woke

    wall = time.monotonic()
    elapsed, woke = on_virtual_time(main)
    assert time.monotonic() - wall < 2
    assert elapsed == 86400
    assert woke == [0.25, 3600.5, 86400]


def test_virtual_time_stands_still_while_a_thread_call_is_pending() -> None:
    async def main() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        timer = asyncio.create_task(asyncio.sleep(0.01))
        await asyncio.to_thread(time.sleep, 0.2)  # 0.2 s of wall time, in a thread
        during = loop.time() - start
        done_during = timer.done()
        await timer
        return during, done_during

    during, done_during = on_virtual_time(main)
    assert during == 0
    assert done_during is False


def test_a_loopback_http_exchange_on_the_loop_takes_no_virtual_time() -> None:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        app = web.Application()
        app.router.add_get("/", hello)
        # A timer a second away: a reply the loop did not see at once would jump to it.
        later = asyncio.create_task(asyncio.sleep(1))
        async with serving(app, "127.0.0.1", 0) as port, ClientSession() as session:
            start = loop.time()
            texts = []
            for _ in range(20):
                async with session.get(f"http://127.0.0.1:{port}/") as reply:
                    texts.append(await reply.text())
            took = loop.time() - start
        await later
        return texts[-1], took

    text, took = on_virtual_time(main)
    assert (text, took) == ("hello", 0)


def test_the_journal_stamps_its_rows_with_virtual_time_from_its_own_thread(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[float, float]:
        journal = await SqliteJournal.open(tmp_path / "journal.sqlite3")
        try:
            await asyncio.sleep(7200)
            expected = clock.now()
            record = await journal.start_execution("r", "key", "armed", "c", {})
            assert record is not None
            return record.created_at, expected
        finally:
            await journal.close()

    created, expected = on_virtual_time(main)
    assert created == expected
    assert created > time.time() + 7000  # two hours ahead of the wall clock
