"""Where srd reads the time: from the running event loop's clock.

On asyncio's own loop that is the wall clock. A drill runs srd on a loop whose clock is
virtual (``srd.simulate.clock.VirtualLoop``): reading the time here, never ``time.time()``
directly, is what makes journal entries, samples and alerts carry drill time there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

_installed: Callable[[], float] | None = None


def install(clock: Callable[[], float] | None) -> None:
    """Make ``clock`` the process's clock for threads that have no loop of their own (the
    journal's writer thread); None: back to the wall clock. A virtual loop installs itself
    (one at a time)."""
    global _installed
    _installed = clock


def now() -> float:
    """Epoch seconds on the running loop's clock; in a thread without a loop, on the clock
    installed for the process; else on the wall clock."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _installed() if _installed is not None else time.time()
    wall_time = getattr(loop, "wall_time", None)
    return float(wall_time()) if wall_time is not None else time.time()


def monotonic() -> float:
    """Seconds on the running loop's monotonic clock (``time.monotonic()`` outside a loop)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
