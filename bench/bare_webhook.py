"""The baseline ``bench/webhook.py`` compares srd's webhook with: a bare aiohttp handler that
reads and parses the same JSON and answers 200, with nothing else (no auth, no validation, no
journal). Run as ``python -m bench.bare_webhook PORT``."""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def _handle(request: web.Request) -> web.Response:
    payload = json.loads(await request.read())
    return web.json_response({"accepted": len(payload["alerts"])})


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/alertmanager", _handle)
    app.router.add_get("/healthz", _healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
