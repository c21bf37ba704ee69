"""The failover API: the kill switch and approvals, behind the webhook's credentials.

Both are kept in the journal, so any replica answers for all (a Service reaches any pod):
``POST /api/killswitch`` ``{"on": true|false, "reason": "..."}`` sets the shared switch,
``GET /api/killswitch`` says whether it is on and where from (journal, this replica's file);
``GET /api/approvals`` lists every replica's pending approvals, ``POST /api/approvals/{id}``
approves one, whichever replica waits for it. ``POST /api/executions``
``{"runbook": NAME, "labels": {...}, "dry_run": false, "request": ID}`` starts a runbook by
hand (``srd execute``): 201 with the execution (200 when ``request`` started it already),
404 for an unknown runbook, 400 for labels its matchers refuse. A journal that cannot be
reached: 503. ``srd approve ID`` and ``srd execute`` send these from another process.

The journal records who asked: the name of the credential the request carried
(``srd.http.auth``), never a name the client asserts.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict

import structlog
from aiohttp import web

from srd.failover.dispatch import Dispatcher, StartRefused, UnknownRunbook
from srd.failover.guards import Approvals, KillSwitch
from srd.http.auth import AUTH_KEY
from srd.journal import JournalError

log = structlog.get_logger("srd.http.failover_api")

KILL_SWITCH_KEY = web.AppKey("srd_kill_switch", KillSwitch)
APPROVALS_KEY = web.AppKey("srd_approvals", Approvals)
DISPATCHER_KEY = web.AppKey("srd_dispatcher", Dispatcher)
_REQUEST = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_routes = web.RouteTableDef()
"""The kill switch and approvals (``POST /api/executions`` is mounted on its own)."""


def add_api_routes(app: web.Application, kill_switch: KillSwitch, approvals: Approvals) -> None:
    """Mount the API on ``app``; call after ``webhook.add_routes`` (it sets the credentials)."""
    app[KILL_SWITCH_KEY] = kill_switch
    app[APPROVALS_KEY] = approvals
    app.add_routes(_routes)


def add_start_route(app: web.Application, dispatcher: Dispatcher) -> None:
    """Mount ``POST /api/executions`` (start a runbook by hand) on ``app``, after
    ``add_api_routes``."""
    app[DISPATCHER_KEY] = dispatcher
    app.router.add_post("/api/executions", _start)


def _caller(request: web.Request) -> str:
    """Who calls: the name of the credential the request carries (``srd.http.auth``)."""
    return request.app[AUTH_KEY].demand(request)


async def _start(request: web.Request) -> web.Response:
    by = _caller(request)
    try:
        body = json.loads(await request.read())
        runbook, labels = body["runbook"], body.get("labels", {})
        dry_run, request_id = body.get("dry_run", False), body.get("request", uuid.uuid4().hex)
        if not (
            isinstance(runbook, str)
            and isinstance(labels, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
            and isinstance(dry_run, bool)
            and isinstance(request_id, str)
            and _REQUEST.fullmatch(request_id)
        ):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.json_response(
            {
                "error": 'send {"runbook": "name"} and optionally "labels": {"k": "v"}, '
                '"dry_run": true, "request": "an id of up to 64 letters, digits, _ . -"'
            },
            status=400,
        )
    try:
        execution, created = await request.app[DISPATCHER_KEY].start(
            runbook, labels, by=by, dry_run=dry_run, request=request_id
        )
    except UnknownRunbook as exc:
        return web.json_response({"error": str(exc)}, status=404)
    except StartRefused as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except JournalError as exc:
        return web.json_response({"error": f"the journal cannot be written: {exc}"}, status=503)
    return web.json_response(asdict(execution), status=201 if created else 200)


@_routes.get("/api/killswitch")
async def _get_kill_switch(request: web.Request) -> web.Response:
    _caller(request)
    reading = await request.app[KILL_SWITCH_KEY].read()
    return web.json_response(reading.to_dict())


@_routes.post("/api/killswitch")
async def _set_kill_switch(request: web.Request) -> web.Response:
    by = _caller(request)
    try:
        body = json.loads(await request.read())
        on, reason = body["on"], body.get("reason", "")
        if not isinstance(on, bool) or not isinstance(reason, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.json_response(
            {"error": 'send {"on": true} or {"on": false} (and optionally "reason": "...")'},
            status=400,
        )
    kill_switch = request.app[KILL_SWITCH_KEY]
    try:
        await kill_switch.engage(on, by, reason)
    except JournalError as exc:
        log.error("kill switch not set in the journal", on=on, by=by, error=str(exc))
        local = f"; set on this replica only (file {kill_switch.path})" if on else ""
        return web.json_response(
            {"error": f"the journal cannot be written: {exc}{local}"}, status=503
        )
    return web.json_response((await kill_switch.read()).to_dict())


@_routes.get("/api/approvals")
async def _pending(request: web.Request) -> web.Response:
    _caller(request)
    approvals = request.app[APPROVALS_KEY]
    try:
        return web.json_response(await approvals.pending_all())
    except JournalError as exc:
        return web.json_response(
            {"error": f"the journal cannot be read: {exc}", "pending_here": approvals.pending()},
            status=503,
        )


@_routes.post("/api/approvals/{id}")
async def _approve(request: web.Request) -> web.Response:
    by = _caller(request)
    approval_id = request.match_info["id"]
    try:
        approved = await request.app[APPROVALS_KEY].record(approval_id, by)
    except JournalError as exc:
        return web.json_response({"error": f"the journal cannot be written: {exc}"}, status=503)
    if not approved:
        return web.json_response({"error": f"nothing waits for approval {approval_id}"}, status=404)
    return web.json_response({"approved": approval_id, "by": by})
