"""``srd approve ID``: approve a runbook step waiting for a human, on the running srd.

The same ``POST /api/approvals/{id}`` the failover API serves (``srd.http.failover_api``),
with the config's credentials, from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

from srd.cli.exitcodes import FAILED, OK, USAGE
from srd.cli.loading import load_or_report
from srd.config.root import resolve_config_path
from srd.http.auth import Authenticator


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approve = commands.add_parser(
        "approve", help="approve a runbook step waiting for a human (see GET /api/approvals)"
    )
    approve.add_argument("id", help="the approval id")
    approve.add_argument("--config", help="config of the running srd (its server and auth)")
    approve.add_argument("--url", help="srd's base URL (default: from the config's listen)")
    approve.add_argument(
        "--as",
        dest="credential",
        help="the name of the failover.auth token to approve with (the journal records it; "
        "default: the first)",
    )
    approve.set_defaults(handler=_approve)


def _approve(args: argparse.Namespace) -> int:
    setup = load_or_report(resolve_config_path(args.config))
    if setup is None:
        return USAGE
    server = setup.config.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    url = args.url or f"http://{host}:{server.port}"
    authorization = Authenticator(setup.config.failover.auth).header_of(args.credential)
    if args.credential is not None and authorization is None:
        print(f"srd approve: failover.auth has no token named {args.credential}", file=sys.stderr)
        return USAGE
    try:
        approved, message = asyncio.run(approve(url, args.id, authorization))
    except aiohttp.ClientError as exc:
        print(f"srd approve: cannot reach srd at {url}: {exc}", file=sys.stderr)
        return FAILED
    print(message, file=sys.stdout if approved else sys.stderr)
    return OK if approved else FAILED


async def approve(base_url: str, approval_id: str, authorization: str | None) -> tuple[bool, str]:
    """POST the approval to a running srd; (approved, message for the operator). srd records
    the approver as the name of the credential in ``authorization``."""
    headers = {"Authorization": authorization} if authorization else {}
    url = f"{base_url.rstrip('/')}/api/approvals/{approval_id}"
    client_timeout = aiohttp.ClientTimeout(total=10.0)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.post(url, headers=headers) as response,
    ):
        body = await response.json(content_type=None)
    if response.status == 200:
        return True, f"approved {approval_id} as {body.get('by')}"
    return False, str(body.get("error", f"HTTP {response.status}"))
