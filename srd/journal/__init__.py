"""The journal: the durable, append-only record of alerts received, decisions and steps.

``base`` is the contract (a Protocol per part — ``Receipts``, ``Executions``, ``Controls``,
``Fencing`` — and ``Journal`` for the whole; its records; the fence); ``sql`` the
schema, statements and write logic both backends share; ``sqlite`` the default (one file in
``state_dir``, WAL) and ``postgres`` the journal several replicas share. ``open_journal``
picks one from a URL.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from srd.config.journal import JOURNAL_FILE, POSTGRES_SCHEMES, JournalUrlError, sqlite_path
from srd.journal.base import (
    NO_TERM,
    AlertReceipt,
    Approval,
    Controls,
    ExecutionRecord,
    Executions,
    ExecutionState,
    Fence,
    FencedError,
    Fencing,
    GuardBlock,
    Journal,
    JournalError,
    KillSwitchState,
    Receipts,
    StateChange,
    StepPhase,
    StepRecord,
    StepResult,
)
from srd.journal.faults import FaultKind, JournalFault, JournalHealth
from srd.journal.postgres import PostgresJournal
from srd.journal.postgres import parse as parse_postgres
from srd.journal.sqlite import SqliteJournal

__all__ = [
    "JOURNAL_FILE",
    "NO_TERM",
    "AlertReceipt",
    "Approval",
    "Controls",
    "ExecutionRecord",
    "ExecutionState",
    "Executions",
    "FaultKind",
    "Fence",
    "FencedError",
    "Fencing",
    "GuardBlock",
    "Journal",
    "JournalError",
    "JournalFault",
    "JournalHealth",
    "KillSwitchState",
    "PostgresJournal",
    "Receipts",
    "SqliteJournal",
    "StateChange",
    "StepPhase",
    "StepRecord",
    "StepResult",
    "check_journal_url",
    "journal_path",
    "open_journal",
]


async def open_journal(
    target: str | Path,
    *,
    create: bool = True,
    password: str | None = None,
    health: JournalHealth | None = None,
) -> Journal:
    """Open the journal named by ``target``: a state directory (the journal is its
    ``journal.sqlite3``), ``sqlite:///abs/path.sqlite3`` or ``postgresql://user@host:port/db``
    (``password`` is the PostgreSQL user's). With ``create`` False a missing journal raises
    JournalError (readers such as ``srd journal`` must not make one). ``health`` learns of
    every fault of the journal's calls."""
    text = str(target)
    if urlsplit(text).scheme in POSTGRES_SCHEMES:
        return await PostgresJournal.open(text, password=password, create=create, health=health)
    return await SqliteJournal.open(journal_path(target), create=create, health=health)


def check_journal_url(url: str) -> None:
    """Check a journal URL's syntax without opening it (``srd check``): JournalError says
    what is wrong."""
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        parse_postgres(url)
    else:
        journal_path(url)


def journal_path(target: str | Path) -> Path:
    """The SQLite file ``target`` names; JournalError for a URL that names no SQLite file."""
    try:
        return sqlite_path(target)
    except JournalUrlError as exc:
        raise JournalError(str(exc)) from None
