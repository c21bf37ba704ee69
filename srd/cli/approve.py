"""``srd approve ID``: approve a runbook step waiting for a human, on the running srd.

The same ``POST /api/approvals/{id}`` the failover API serves (``srd.http.failover_api``),
from another process; where srd is and the credentials: ``srd.cli.remote``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

from srd.cli import remote
from srd.cli.exitcodes import FAILED, OK, USAGE


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approve = commands.add_parser(
        "approve", help="approve a runbook step waiting for a human (see GET /api/approvals)"
    )
    approve.add_argument("id", help="the approval id")
    remote.add_arguments(approve)
    approve.set_defaults(handler=_approve)


def _approve(args: argparse.Namespace) -> int:
    target = remote.remote(args, "approve")
    if target is None:
        return USAGE
    try:
        approved, message = asyncio.run(
            approve(target.url, args.id, target.headers.get("Authorization"))
        )
    except aiohttp.ClientError as exc:
        print(f"srd approve: srd unreachable at {target.url}: {exc}", file=sys.stderr)
        return FAILED
    print(message, file=sys.stdout if approved else sys.stderr)
    return OK if approved else FAILED


async def approve(base_url: str, approval_id: str, authorization: str | None) -> tuple[bool, str]:
    """POST the approval to a running srd; (approved, message for the operator). srd records
    the approver as the name of the credential in ``authorization``."""
    headers = {"Authorization": authorization} if authorization else {}
    target = remote.Remote(base_url.rstrip("/"), headers)
    async with aiohttp.ClientSession() as session:
        status, body = await target.call(session, "POST", f"/api/approvals/{approval_id}")
    if status == 200:
        by = body.get("by") if isinstance(body, dict) else None
        return True, f"approved {approval_id}" + (f" as {by}" if by else "")
    return False, remote.error_of(status, body)
