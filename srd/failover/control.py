"""The failover API: the kill switch and approvals, behind the webhook's credentials.

``POST /api/killswitch`` ``{"on": true|false}``, ``GET /api/killswitch``;
``GET /api/approvals`` (pending), ``POST /api/approvals/{id}`` (approve).
``approve`` is what ``srd approve ID`` calls: the same POST, from another process.
"""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from srd.failover.guards import Approvals, KillSwitch
from srd.failover.webhook import AUTH_KEY

KILL_SWITCH_KEY = web.AppKey("srd_kill_switch", KillSwitch)
APPROVALS_KEY = web.AppKey("srd_approvals", Approvals)


def add_api_routes(app: web.Application, kill_switch: KillSwitch, approvals: Approvals) -> None:
    """Mount the API on ``app``; call after ``webhook.add_routes`` (it sets the credentials)."""
    app[KILL_SWITCH_KEY] = kill_switch
    app[APPROVALS_KEY] = approvals
    app.router.add_get("/api/killswitch", _get_kill_switch)
    app.router.add_post("/api/killswitch", _set_kill_switch)
    app.router.add_get("/api/approvals", _pending)
    app.router.add_post("/api/approvals/{id}", _approve)


def _caller(request: web.Request) -> str:
    request.app[AUTH_KEY].demand(request)
    return request.headers.get("X-Srd-User") or request.remote or "api"


async def _get_kill_switch(request: web.Request) -> web.Response:
    _caller(request)
    return web.json_response({"on": request.app[KILL_SWITCH_KEY].is_on()})


async def _set_kill_switch(request: web.Request) -> web.Response:
    by = _caller(request)
    try:
        body = json.loads(await request.read())
        on = body["on"]
        if not isinstance(on, bool):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'send {"on": true} or {"on": false}'}, status=400)
    request.app[KILL_SWITCH_KEY].set(on, by)
    return web.json_response({"on": on})


async def _pending(request: web.Request) -> web.Response:
    _caller(request)
    return web.json_response(request.app[APPROVALS_KEY].pending())


async def _approve(request: web.Request) -> web.Response:
    by = _caller(request)
    approval_id = request.match_info["id"]
    if not request.app[APPROVALS_KEY].approve(approval_id, by):
        return web.json_response({"error": f"nothing waits for approval {approval_id}"}, status=404)
    return web.json_response({"approved": approval_id, "by": by})


async def approve(
    base_url: str, approval_id: str, authorization: str | None, user: str
) -> tuple[bool, str]:
    """POST the approval to a running srd; (approved, message for the operator)."""
    headers = {"X-Srd-User": user}
    if authorization:
        headers["Authorization"] = authorization
    url = f"{base_url.rstrip('/')}/api/approvals/{approval_id}"
    client_timeout = aiohttp.ClientTimeout(total=10.0)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.post(url, headers=headers) as response,
    ):
        body = await response.json(content_type=None)
    if response.status == 200:
        return True, f"approved {approval_id}"
    return False, str(body.get("error", f"HTTP {response.status}"))
