"""A second process's hold on a SQLite journal, as a backup tool or a stray ``sqlite3`` shell
would take it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def held_lock(path: Path, seconds: float) -> Iterator[threading.Event]:
    """A second connection holding SQLite's write lock (``BEGIN IMMEDIATE``) for ``seconds``
    from when the returned event is set."""
    taken = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        taken.set()
        threading.Event().wait(seconds)
        db.execute("ROLLBACK")
        db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        taken.wait(5)
        yield taken
    finally:
        thread.join()
