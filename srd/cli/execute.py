"""``srd execute RUNBOOK``: start a runbook by hand on the running srd, as ``st2 run`` or
``rd run`` do, without waiting for an alert.

It asks the running srd (``POST /api/executions``, with the credentials ``srd.cli.remote``
finds), which journals who asked and runs the execution like any other: every guard applies
(mode, kill switch, leadership, cooldown, capacity, error budget, approvals). It prints the
execution id; on a terminal it then follows the execution, as ``srd journal ID`` shows it,
until it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any, TextIO

import aiohttp

from srd.cli import remote
from srd.cli.exitcodes import FAILED, OK, USAGE
from srd.cli.journal import ENDED, EVENT_HEADERS, timeline_header, timeline_rows

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FOLLOW_POLL = 1.0
"""Seconds between looks at a followed execution: steps take seconds to minutes."""
_WIDTHS = (23, 9, 7, 24)
"""Of the followed timeline's columns but the last: rows are printed as they come, so the
widths cannot be measured first."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    execute = commands.add_parser(
        "execute", help="start a runbook by hand on the running srd (every guard applies)"
    )
    execute.add_argument("runbook", help="the runbook's name (see srd runbooks)")
    execute.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one of the runbook's inputs (srd runbooks lists them: --var image=…), or a label "
        "of the execution, as an alert's; the runbook's match must hold (its NAME=\"value\" "
        "matchers are filled in)",
    )
    execute.add_argument(
        "--dry-run", action="store_true", help="plan and journal every step, change nothing"
    )
    remote.add_arguments(execute)
    execute.set_defaults(handler=_execute)


def _execute(args: argparse.Namespace) -> int:
    labels = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not _LABEL.fullmatch(name):
            print(f"srd execute: --var {item!r}: write NAME=VALUE", file=sys.stderr)
            return USAGE
        labels[name] = value
    target = remote.remote(args, "execute")
    if target is None:
        return USAGE
    try:
        return asyncio.run(
            execute(target, args.runbook, labels, dry_run=args.dry_run, follow=sys.stdout.isatty())
        )
    except aiohttp.ClientError as exc:
        print(f"srd execute: srd unreachable at {target.url}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return OK  # only the following stopped; execute's message says how to look again


async def execute(
    target: remote.Remote,
    runbook: str,
    labels: Mapping[str, str],
    *,
    dry_run: bool = False,
    follow: bool = False,
    out: TextIO = sys.stdout,
    poll: float = FOLLOW_POLL,
) -> int:
    """Start ``runbook`` on ``target`` and print the execution id; with ``follow``, print
    its timeline as it grows until it ends: OK when it succeeded (or the dry run ended)."""
    body = {
        "runbook": runbook,
        "labels": dict(labels),
        "dry_run": dry_run,
        "request": uuid.uuid4().hex,
    }
    async with aiohttp.ClientSession() as session:
        status, answer = await target.call(session, "POST", "/api/executions", body)
        if status not in (200, 201):
            print(f"srd execute: {remote.error_of(status, answer)}", file=sys.stderr)
            return FAILED
        execution_id = str(answer["id"])
        print(execution_id, file=out, flush=True)
        if inputs := answer["alert"].get("inputs"):  # defaults included: shown, never guessed
            shown = " ".join(f"{k}={v}" for k, v in inputs.items())
            print(f"srd execute: {runbook} inputs: {shown}", file=sys.stderr)
        if not follow:
            return OK
        try:
            return await _follow(target, session, execution_id, out, poll)
        except asyncio.CancelledError:
            print(f"\nstopped following; see srd journal {execution_id}", file=out)
            raise


async def _follow(
    target: remote.Remote,
    session: aiohttp.ClientSession,
    execution_id: str,
    out: TextIO,
    poll: float,
) -> int:
    shown: set[tuple[str, ...]] = set()
    while True:
        status, detail = await target.call(session, "GET", f"/api/executions/{execution_id}")
        if status != 200:
            print(f"srd execute: {remote.error_of(status, detail)}", file=sys.stderr)
            return FAILED
        if not shown:
            _header(detail, out)
        for row in timeline_rows(detail):
            if row not in shown:
                shown.add(row)
                print(_row(row), file=out, flush=True)
        if detail["state"] in ENDED:
            return OK if detail["state"] in ("succeeded", "dry_run") else FAILED
        await asyncio.sleep(poll)


def _header(detail: dict[str, Any], out: TextIO) -> None:
    header = timeline_header(detail)
    width = max(len(key) for key, _ in header)
    for key, value in header:
        print(f"{key.ljust(width)}  {value}", file=out)
    print(file=out)
    print(_row(EVENT_HEADERS), file=out, flush=True)


def _row(cells: tuple[str, ...]) -> str:
    fixed = [cell.ljust(width) for cell, width in zip(cells, _WIDTHS, strict=False)]
    return "  ".join([*fixed, *cells[len(_WIDTHS) :]]).rstrip()
