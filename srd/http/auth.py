"""The credentials every write and every journal read asks for (``failover.auth``): the
Alertmanager webhook, the failover API and the journal API check them; ``srd approve`` sends
them."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping

from aiohttp import web

from srd.config.failover import WebhookAuth


class Authenticator:
    """Checks a request's ``Authorization`` header against the configured credentials, in
    constant time. With no credentials every request passes (allowed only when not armed)."""

    def __init__(self, auth: WebhookAuth | None) -> None:
        self._expected: bytes | None = None
        self.challenge = ""
        self.username: str | None = None
        """Who the credentials name (basic auth's user), for the journal; a bearer token
        names nobody."""
        self.use(auth)

    def use(self, auth: WebhookAuth | None) -> None:
        """Check against ``auth`` from now on (a reload's new credentials)."""
        self._expected = None
        self.challenge = ""
        self.username = None
        if auth is not None and auth.bearer_token is not None:
            self._expected = f"Bearer {auth.bearer_token.value}".encode()
            self.challenge = 'Bearer realm="srd"'
        elif auth is not None and auth.basic is not None:
            self.username = auth.basic.username
            pair = f"{auth.basic.username}:{auth.basic.password.value}".encode()
            self._expected = b"Basic " + base64.b64encode(pair)
            self.challenge = 'Basic realm="srd"'

    @property
    def header(self) -> str | None:
        """The ``Authorization`` value a client sends (``srd approve`` uses it)."""
        return None if self._expected is None else self._expected.decode()

    def allows(self, headers: Mapping[str, str]) -> bool:
        if self._expected is None:
            return True
        given = headers.get("Authorization", "")
        if self.challenge.startswith("Basic"):
            given = _normalise_basic(given)
        # aiohttp keeps bytes that are not UTF-8 as surrogates; such a header is wrong, not
        # an error: it compares unequal like any other wrong credential.
        return hmac.compare_digest(given.encode(errors="surrogatepass"), self._expected)

    def refusal(self) -> web.Response:
        return web.json_response(
            {"error": "authentication required"},
            status=401,
            headers={"WWW-Authenticate": self.challenge},
        )

    def demand(self, request: web.Request) -> None:
        """Raise 401 (with the challenge) unless ``request`` carries the credentials: for
        the API routes, which answer with what their handler returns."""
        if not self.allows(request.headers):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "authentication required"}),
                content_type="application/json",
                headers={"WWW-Authenticate": self.challenge},
            )


def _normalise_basic(header: str) -> str:
    # Clients may pad or wrap base64 differently; compare the decoded pair re-encoded.
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return header
    try:
        return "Basic " + base64.b64encode(base64.b64decode(token, validate=True)).decode()
    except (binascii.Error, ValueError):
        return header


AUTH_KEY = web.AppKey("srd_failover_auth", Authenticator)
"""The webhook's and the failover API's credentials on the app (``alertmanager.add_routes``
sets it)."""
