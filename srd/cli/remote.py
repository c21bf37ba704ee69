"""Talking to a running srd from another process (``srd approve``, ``srd execute``): where
it is and which credentials to send.

``--url`` alone needs no local config: the credential is a bearer token from
``--token-file`` or ``$SRD_TOKEN``. Without ``--url`` the config (``--config``, else
``$SRD_CONFIG`` or /etc/srd/srd.yaml) gives the address and, unless a token is given,
``failover.auth``'s credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from srd.cli.loading import load_or_report
from srd.config.root import resolve_config_path
from srd.http.auth import Authenticator

TOKEN_ENV = "SRD_TOKEN"  # noqa: S105 - the name of the variable, not a token
TIMEOUT = aiohttp.ClientTimeout(total=10.0)
"""Of each request: a live srd answers these at once."""


@dataclass(frozen=True)
class Remote:
    """A running srd's base URL and the headers every request to it carries."""

    url: str
    headers: dict[str, str]

    async def call(
        self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """(status, JSON body) of one request; aiohttp.ClientError when srd is unreachable."""
        async with session.request(
            method, self.url + path, json=body, headers=self.headers, timeout=TIMEOUT
        ) as response:
            text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:  # a proxy's error page, say: still an answer to show
            return response.status, text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config of the running srd (its listen and auth)")
    parser.add_argument(
        "--url", help="srd's base URL; with it no config is read (default: the config's listen)"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the bearer token to send (default: ${TOKEN_ENV}, else the config's)",
    )
    parser.add_argument(
        "--as",
        dest="credential",
        help="with --config: the name of the failover.auth token to send (the journal records "
        "it; default: the first)",
    )


def remote(args: argparse.Namespace, command: str) -> Remote | None:
    """The srd that ``args`` point at, or None after printing why not (an invalid config or
    an unreadable token file: exit ``USAGE``)."""
    token: str | None = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"srd {command}: --token-file: cannot read: {exc.strerror}", file=sys.stderr)
            return None
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    authorization = f"Bearer {token}" if token else None
    url = args.url
    if url is None or args.config is not None:
        setup = load_or_report(resolve_config_path(args.config))
        if setup is None:
            return None
        server = setup.config.server
        host = f"[{server.host}]" if ":" in server.host else server.host
        url = url or f"http://{host}:{server.port}"
        if authorization is None:
            authorization = Authenticator(setup.config.failover.auth).header_of(args.credential)
            if args.credential is not None and authorization is None:
                name = args.credential
                print(f"srd {command}: failover.auth has no token named {name}", file=sys.stderr)
                return None
    # srd records who by the credential, never by a name the client asserts.
    headers = {"Authorization": authorization} if authorization else {}
    return Remote(url.rstrip("/"), headers)


def error_of(status: int, body: Any) -> str:
    """What a refusal says, whatever shape its body has."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"HTTP {status}"
