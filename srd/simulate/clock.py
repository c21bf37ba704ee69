"""The drills' virtual clock: an event loop whose time advances only when every task waits.

``VirtualLoop`` is asyncio's selector loop with two changes:

- ``time()`` is virtual. It starts where the loop was made and moves only in the selector
  wait: when no callback is ready and no socket has data (the selector polled with timeout
  0), the loop would sleep until its next timer; instead, virtual time jumps to that timer
  and the loop runs on at once. A drill of hours runs in seconds of wall time, and what it
  measures is what the faults, probes, rules, settle timers and steps explain: scheduling
  noise and CPU load on the machine cannot move a timer, because no timer runs on wall time.
- work outside the loop holds the clock: while a call handed to a thread is pending
  (``run_in_executor``, ``asyncio.to_thread``: the SQLite journal, DNS lookups), the loop
  waits for it in wall time and virtual time stands still. So a journal write takes no drill
  time, however slow the disk.

Sockets between tasks of the same loop need nothing special: on loopback, data sent is
readable by the peer as soon as ``send()`` returns, so the zero-timeout poll sees it before
time moves. A peer served by another thread or process would answer in wall time while the
loop has already jumped ahead; the sandbox therefore runs every fake on the loop (moto too,
see ``sandbox.cloud``). The limits of this are written down in docs/simulate.md.

``wall_time()`` is the virtual clock as epoch seconds; ``srd.clock.now()`` reads it, which is
where srd takes its timestamps from (journal, samples, alerts), so drills see virtual time
throughout.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple

from srd import clock as srd_clock

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

THREAD_WAIT = 1.0
"""Wall seconds the loop waits at most in one go for a pending thread call before it looks
again (a thread's result wakes it at once; this bounds a wait nothing would end)."""
IDLE_POLLS = 3
"""Zero-timeout polls that must find nothing before virtual time jumps. Between two looks the
loop yields the CPU (``sched_yield``): under CPU load the kernel may hand a loopback packet
to a softirq thread that needs the CPU to deliver it, and the clock must not move before."""


class _VirtualSelector(selectors.BaseSelector):
    """The loop's real selector, whose waits advance virtual time instead of sleeping."""

    def __init__(self, loop: VirtualLoop, real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        for look in range(IDLE_POLLS):
            if look:
                os.sched_yield()
            events = self._real.select(0)
            if events or timeout == 0:
                return events
        if self._loop.threads_pending:
            # Virtual time stands still until the thread's result comes back.
            wait = THREAD_WAIT if timeout is None else min(timeout, THREAD_WAIT)
            return self._real.select(wait)
        if self._loop.wall is not None:
            return self._real.select(timeout)
        if timeout is None:
            # No timer at all: only the outside world (a signal, a thread) can wake the loop.
            return self._real.select(None)
        self._loop.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._selector: selectors.BaseSelector = _VirtualSelector(self, self._selector)
        self._virtual = 0.0
        self._epoch = float(int(time.time()))
        self.threads_pending = 0
        """Calls handed to threads and not yet back: while any is, virtual time stands."""
        self.wall: float | None = None
        """Set by ``realtime()``: virtual time minus wall time, from then on."""
        # The journal stamps its rows in its writer thread: it must read this clock too.
        srd_clock.install(self.wall_time)

    def close(self) -> None:
        srd_clock.install(None)
        super().close()

    def time(self) -> float:
        if self.wall is not None:
            return time.monotonic() + self.wall
        return self._virtual

    def realtime(self) -> None:
        """From now on, time passes as on the wall clock (a sandbox held for a person to
        study), continuing from the virtual time reached."""
        self.wall = self._virtual - time.monotonic()

    def wall_time(self) -> float:
        """The virtual clock as epoch seconds: the whole second the loop was made, plus the
        virtual time since."""
        return self._epoch + self.time()

    def advance(self, seconds: float) -> None:
        self._virtual += max(0.0, seconds)

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*_Ts], _T], *args: *_Ts
    ) -> asyncio.Future[_T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads_pending += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self.threads_pending -= 1
