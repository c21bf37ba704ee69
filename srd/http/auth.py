"""The credentials every write and every journal read asks for (``failover.auth``): the
Alertmanager webhook, the failover API and the journal API check them; ``srd approve`` sends
them.

Identity comes from the credential, never from the request's word: the name of the token
(``tokens``), the ``basic`` username, or ``bearer_token`` for the one unnamed token. A replica
without credentials answers as ``anonymous`` — until an armed replica sharing its journal has
recorded that the journal's users must authenticate (``lock``): from then on it refuses every
request (403), since it has nothing to check a credential against."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping

from aiohttp import web

from srd.config.failover import WebhookAuth

ANONYMOUS = "anonymous"
"""Who a request is on a replica without credentials (observe mode, alone on its journal)."""


class Authenticator:
    """Checks a request's ``Authorization`` header against the configured credentials, in
    constant time, and names who sent it. With no credentials every request passes (allowed
    only when not armed, and only while no armed replica shares the journal)."""

    def __init__(self, auth: WebhookAuth | None) -> None:
        self._expected: dict[bytes, str] = {}
        """Each accepted ``Authorization`` value, and the identity it proves."""
        self.challenge = ""
        self.locked_by: str | None = None
        """The armed replica that requires auth of every replica on the shared journal."""
        self.use(auth)

    def use(self, auth: WebhookAuth | None) -> None:
        """Check against ``auth`` from now on (a reload's new credentials)."""
        self._expected = {}
        self.challenge = ""
        if auth is None:
            return
        if auth.bearer_token is not None:
            self._expected[f"Bearer {auth.bearer_token.value}".encode()] = "bearer_token"
        for token in auth.tokens or []:
            self._expected[f"Bearer {token.token.value}".encode()] = token.name
        if self._expected:
            self.challenge = 'Bearer realm="srd"'
        elif auth.basic is not None:
            pair = f"{auth.basic.username}:{auth.basic.password.value}".encode()
            self._expected[b"Basic " + base64.b64encode(pair)] = auth.basic.username
            self.challenge = 'Basic realm="srd"'

    def lock(self, by: str) -> None:
        """An armed replica sharing the journal requires auth (``by``, as the journal says):
        without credentials of its own, this replica now refuses every request."""
        self.locked_by = by

    @property
    def header(self) -> str | None:
        """The ``Authorization`` value a client sends with the first credential."""
        return self.header_of(None)

    def header_of(self, name: str | None) -> str | None:
        """The ``Authorization`` value of the credential named ``name`` (any, when None);
        None when there is none (``srd approve --as``)."""
        for value, identity in self._expected.items():
            if name is None or identity == name:
                return value.decode()
        return None

    def identify(self, headers: Mapping[str, str]) -> str | None:
        """Who sent a request with these headers; None: refused."""
        if not self._expected:
            return None if self.locked_by is not None else ANONYMOUS
        given = headers.get("Authorization", "")
        if self.challenge.startswith("Basic"):
            given = _normalise_basic(given)
        found = None
        for value, identity in self._expected.items():
            # Every credential compared, each in constant time: the time says nothing.
            if hmac.compare_digest(given.encode(errors="replace"), value):
                found = identity
        return found

    def allows(self, headers: Mapping[str, str]) -> bool:
        return self.identify(headers) is not None

    def refusal(self) -> web.Response:
        status, body, headers = self._refusal()
        return web.json_response(body, status=status, headers=headers)

    def demand(self, request: web.Request) -> str:
        """Who sent ``request``; raise 401 (with the challenge), or 403 on a locked replica,
        unless it carries the credentials: for the API routes."""
        identity = self.identify(request.headers)
        if identity is None:
            status, body, headers = self._refusal()
            error = web.HTTPForbidden if status == 403 else web.HTTPUnauthorized
            raise error(text=json.dumps(body), content_type="application/json", headers=headers)
        return identity

    def _refusal(self) -> tuple[int, dict[str, str], dict[str, str]]:
        if not self._expected and self.locked_by is not None:
            reason = (
                f"an armed replica ({self.locked_by}) shares this replica's journal and requires "
                "authentication: set failover.auth here too"
            )
            return 403, {"error": reason}, {}
        return 401, {"error": "authentication required"}, {"WWW-Authenticate": self.challenge}


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
