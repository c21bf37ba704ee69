"""The journal over HTTP: ``GET /api/executions`` and ``GET /api/executions/{id}``.

JSON field names are the journal's dataclass fields; times are Unix seconds. Both routes ask
for the same credentials as the webhook and the failover API (``failover.auth``, which armed
mode requires): the journal holds alert labels, actuator targets and prior states — what an
attacker would want to know before pulling a trigger. Without ``failover.auth`` (observe or
dry-run only) they are open, as the webhook is.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from srd.http.auth import Authenticator
from srd.journal import Journal

JOURNAL_KEY: web.AppKey[Journal] = web.AppKey("journal")
READ_AUTH_KEY = web.AppKey("srd_read_auth", Authenticator)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
"""Caps one response: the journal keeps every execution ever made."""
_routes = web.RouteTableDef()


def add_routes(app: web.Application, journal: Journal, auth: Authenticator) -> None:
    app[JOURNAL_KEY] = journal
    app[READ_AUTH_KEY] = auth
    app.add_routes(_routes)


async def execution_detail(journal: Journal, execution_id: str) -> dict[str, Any] | None:
    """One execution with its state history, steps, guard blocks and the receipts of its
    alert (firing, and resolved once Alertmanager says so); None when unknown."""
    execution = await journal.execution(execution_id)
    if execution is None:
        return None
    alert = execution.alert
    receipts = await journal.receipts(
        str(alert.get("fingerprint", "")), str(alert.get("startsAt", ""))
    )
    return asdict(execution) | {
        "alert_receipts": [{"status": status, "at": at} for status, at in receipts],
        "states": [asdict(s) for s in await journal.states(execution_id)],
        "steps": [asdict(s) for s in await journal.steps(execution_id)],
        "guard_blocks": [asdict(g) for g in await journal.guard_blocks(execution_id, MAX_LIMIT)],
    }


@_routes.get("/api/executions")
async def _executions(request: web.Request) -> web.Response:
    """Newest first, at most ``?limit=`` (default 100, at most 1000)."""
    request.app[READ_AUTH_KEY].demand(request)
    text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        return web.json_response(
            {"error": f"limit must be an integer from 1 to {MAX_LIMIT}, got {text!r}"}, status=400
        )
    executions = await request.app[JOURNAL_KEY].executions(int(text))
    return web.json_response([asdict(e) for e in executions])


@_routes.get("/api/executions/{id}")
async def _execution(request: web.Request) -> web.Response:
    request.app[READ_AUTH_KEY].demand(request)
    execution_id = request.match_info["id"]
    detail = await execution_detail(request.app[JOURNAL_KEY], execution_id)
    if detail is None:
        return web.json_response({"error": f"no execution {execution_id!r}"}, status=404)
    return web.json_response(detail)
