"""Journal faults, typed: what a backend error means for the caller, and the journal's health.

Every SQLite or PostgreSQL error a journal call meets becomes a ``JournalFault`` with a
``kind`` from a small, fixed set (a metric label) and whether it is ``transient``:

- transient — ``locked`` (another connection holds SQLite's write lock), ``connection`` (the
  server cannot be reached or dropped the connection), ``timeout``: waiting may cure it, so
  writers retry with backoff;
- permanent — ``full`` (disk or ``max_page_count``), ``read_only``, ``corrupt`` (not a
  journal, truncated, or damaged), ``io``, ``error``: a human must act; writers surface it
  (the webhook answers 503, ``/readyz`` names it) and retry only slowly.

``JournalHealth`` remembers whether the last write failed, for ``/readyz``, and tells its
listeners of every fault, for ``srd_journal_errors_total{op,kind}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from srd.clock import now as clock_now
from srd.journal.base import JournalError

FaultKind = Literal[
    "locked", "connection", "timeout", "full", "read_only", "corrupt", "io", "error"
]  # fmt: skip
KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
TRANSIENT: frozenset[FaultKind] = frozenset({"locked", "connection", "timeout"})


class JournalFault(JournalError):
    """A backend error met by journal call ``op`` (a Journal method name, or ``open``)."""

    def __init__(self, message: str, *, kind: FaultKind, op: str) -> None:
        super().__init__(message)
        self.kind: FaultKind = kind
        self.op = op

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT


FaultListener = Callable[[str, FaultKind], None]


@dataclass(frozen=True)
class Outage:
    """Why the journal cannot be written, since when (Unix time)."""

    kind: FaultKind
    message: str
    since: float


class JournalHealth:
    """Whether the journal takes writes: failing from a write's fault until a write succeeds."""

    def __init__(self, clock: Callable[[], float] = clock_now) -> None:
        self._clock = clock
        self._listeners: list[FaultListener] = []
        self.outage: Outage | None = None

    def listen(self, listener: FaultListener) -> None:
        self._listeners.append(listener)

    def fault(self, fault: JournalFault, *, write: bool) -> None:
        for listener in self._listeners:
            listener(fault.op, fault.kind)
        if write:
            since = self.outage.since if self.outage is not None else self._clock()
            self.outage = Outage(fault.kind, str(fault), since)

    def wrote(self) -> None:
        self.outage = None

    def reasons(self) -> list[str]:
        """For ``/readyz``: empty while the journal takes writes."""
        if self.outage is None:
            return []
        return [f"journal cannot be written ({self.outage.kind}): {self.outage.message}"]
