"""``srd journal [ID]``: list executions, or show one as a timeline; ``--json`` for scripts.

Plain functions returning an exit code: 0 shown, 1 no such journal or execution (or one that
cannot be reached). They open the journal read-mostly beside a running daemon (SQLite's WAL
and PostgreSQL both let readers and the writer overlap) and never create one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from srd.cli.exitcodes import FAILED, OK, USAGE
from srd.cli.loading import load_or_report
from srd.config.root import resolve_config_path
from srd.http.journal_api import execution_detail
from srd.journal import Journal, JournalError, open_journal

T = TypeVar("T")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    journal = commands.add_parser(
        "journal", help="list failover executions, or show one with its steps and guard blocks"
    )
    journal.add_argument("id", nargs="?", help="an execution id (omit to list the newest)")
    journal.add_argument("--config", help="config whose state_dir holds the journal")
    journal.add_argument(
        "--journal",
        help="a state directory, sqlite:///path or postgresql://user@host/db (overrides; "
        "the password from PGPASSWORD or ~/.pgpass)",
    )
    journal.add_argument("--limit", type=int, default=20, help="executions to list (20)")
    journal.add_argument("--json", action="store_true", help="print JSON")
    journal.set_defaults(handler=_journal)


def _journal(args: argparse.Namespace) -> int:
    target: str | Path
    password = None
    if args.journal:
        target = args.journal
    else:
        setup = load_or_report(resolve_config_path(args.config))
        if setup is None:
            return USAGE
        failover = setup.config.failover
        target = failover.journal or setup.config.state_dir
        password = failover.journal_password.value if failover.journal_password else None
    if args.id:
        return journal_show(target, args.id, as_json=args.json, password=password)
    return journal_list(target, limit=args.limit, as_json=args.json, password=password)


def journal_list(
    target: str | Path,
    *,
    limit: int = 20,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    password: str | None = None,
) -> int:
    """Print the newest ``limit`` executions of the journal in ``target`` (a state directory
    or a journal URL; ``password`` a PostgreSQL journal's) as a table, or as a JSON list."""
    try:
        executions = asyncio.run(
            _reading(target, password, lambda journal: journal.executions(limit))
        )
    except JournalError as exc:
        print(exc, file=sys.stderr)
        return FAILED
    if as_json:
        _json([asdict(e) for e in executions], out)
    elif not executions:
        print("no executions", file=out)
    else:
        rows = [
            (e.id, _time(e.created_at), e.runbook, e.mode, e.state, _alert_name(e.alert))
            for e in executions
        ]
        _table(("ID", "CREATED (UTC)", "RUNBOOK", "MODE", "STATE", "ALERT"), rows, out)
    return OK


def journal_show(
    target: str | Path,
    execution_id: str,
    *,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    password: str | None = None,
) -> int:
    """Print one execution: its header, then states, steps and guard blocks in time order."""
    try:
        detail = asyncio.run(
            _reading(target, password, lambda journal: execution_detail(journal, execution_id))
        )
    except JournalError as exc:
        print(exc, file=sys.stderr)
        return FAILED
    if detail is None:
        print(f"no execution {execution_id!r}", file=sys.stderr)
        return FAILED
    if as_json:
        _json(detail, out)
    else:
        _timeline(detail, out)
    return OK


async def _reading(
    target: str | Path, password: str | None, read: Callable[[Journal], Awaitable[T]]
) -> T:
    journal = await open_journal(target, create=False, password=password)
    try:
        return await read(journal)
    finally:
        await journal.close()


EVENT_HEADERS = ("TIME (UTC)", "+SECONDS", "EVENT", "NAME", "DETAIL")
ENDED = frozenset(
    {"succeeded", "failed", "rolled_back", "escalated", "blocked", "dry_run", "cancelled"}
)
"""States an execution does not leave: ``srd execute`` stops following there."""


def _timeline(detail: dict[str, Any], out: TextIO) -> None:
    _table(None, timeline_header(detail), out)
    print(file=out)
    _table(EVENT_HEADERS, timeline_rows(detail), out)


def timeline_header(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """The execution's header rows: what ran, on which alert, started by whom."""
    alert = detail["alert"]
    labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
    header = [
        ("execution", detail["id"]),
        ("runbook", detail["runbook"]),
        ("state", f"{detail['state']} (mode {detail['mode']})"),
        ("alert", " ".join([_alert_name(alert), *(f"{k}={v}" for k, v in labels.items())])),
        ("key", detail["key"]),
        ("correlation", detail["correlation_id"]),
        ("created", f"{_time(detail['created_at'])} UTC"),
    ]
    if alert.get("started_by"):
        header.insert(3, ("started by", str(alert["started_by"])))
    if isinstance(inputs := alert.get("inputs"), dict) and inputs:
        header.insert(-3, ("inputs", " ".join(f"{k}={v}" for k, v in inputs.items())))
    return header


def timeline_rows(detail: dict[str, Any]) -> list[tuple[str, ...]]:
    """States, steps, guard blocks and alert receipts in time order, as table rows."""
    events: list[tuple[float, str, str, str]] = []
    for state in detail["states"]:
        events.append((state["at"], "state", state["state"], _compact(state["detail"])))
    for step in detail["steps"]:
        outcome = " ".join(filter(None, (step["phase"], step["result"], _compact(step["detail"]))))
        events.append((step["at"], f"step {step['index']}", step["name"], outcome))
    for block in detail["guard_blocks"]:
        events.append((block["at"], "guard", block["guard"], f"blocked: {block['reason']}"))
    for receipt in detail["alert_receipts"]:
        events.append((receipt["at"], "alert", receipt["status"], "received"))
    events.sort(key=lambda event: event[0])
    start = detail["created_at"]
    return [(_time(at), f"{at - start:+.3f}", *rest) for at, *rest in events]


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], out: TextIO) -> None:
    lines = [headers, *rows] if headers else list(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(),
            file=out,
        )


def _json(value: object, out: TextIO) -> None:
    json.dump(value, out, indent=2, sort_keys=True)
    out.write("\n")


def _compact(value: dict[str, Any] | None) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True) if value else ""


def _alert_name(alert: dict[str, Any]) -> str:
    labels = alert.get("labels")
    name = labels.get("alertname") if isinstance(labels, dict) else None
    return str(name) if name else "-"


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
