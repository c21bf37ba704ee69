"""Fake time for the code that takes a ``clock`` callable."""

from __future__ import annotations


class Clock:
    """Answers ``now`` until the test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
