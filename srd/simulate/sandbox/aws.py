"""An AWS that takes its time: a proxy in front of moto server that delays and throttles.

moto settles everything at once — a Route 53 change is ``INSYNC`` as soon as it is made, a
registered target is ``healthy`` as soon as it is registered — so code that ought to wait for
AWS passes even if it never waits. Point the client's ``endpoint_url`` at this proxy instead of
at moto, then set:

- ``dns_pending``: seconds a Route 53 change stays ``PENDING`` (in the answer to
  ChangeResourceRecordSets and to GetChange) before it is ``INSYNC``;
- ``targets_initial``: seconds a newly registered ELBv2 target reports ``initial``
  (``Elb.InitialHealthChecking``) before ``healthy``;
- ``throttle(operation, times, code)``: the next ``times`` calls of an operation are answered
  with a throttling error, in the wire format botocore parses (and retries).

It also answers what moto does not implement: IAM's ``SimulatePrincipalPolicy`` (the
Query API's form-encoded POST, answered in its XML), from ``allowed`` — (IAM action, resource)
pairs, either side with IAM's ``*`` and ``?`` wildcards, matched as IAM matches them (actions
case-insensitively); None allows everything, as ``FakeKubernetes.allowed`` does. The caller
must itself be allowed ``iam:SimulatePrincipalPolicy`` on the principal it simulates, else
``AccessDenied`` (403); a principal that is not a user, role or group (an assumed-role
session) is ``InvalidInput``. ``principals`` lists the principals simulated, in order.

Everything else passes through unchanged. Time comes from ``clock``, so a test moves it
instead of sleeping; ``calls`` lists the operations seen, in order (a plan makes no change).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from yarl import URL

from srd import clock
from srd.http.app import serving

RRSET = re.compile(r"^/2013-04-01/hostedzone/[^/]+/rrset/?$")
CHANGE = re.compile(r"^/2013-04-01/change/(?:change/)?(?P<id>[^/]+)$")
CHANGE_ID = re.compile(rb"<Id>(?:/change/)?([^<]+)</Id>")
MEMBER = re.compile(rb"<member>.*?</member>", re.DOTALL)
TARGET_ID = re.compile(rb"<Target><Id>([^<]+)</Id>")
HEALTHY = b"<State>healthy</State>"
INITIAL = b"<State>initial</State><Reason>Elb.InitialHealthChecking</Reason>"
IAM_XMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"
# moto's stand-in identity for keys it did not issue is an ``sts`` user ARN: simulated as a user.
PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:(user|role|group)/[\w+=,.@/-]+$")
# Hop-by-hop and length headers are the proxy's own business on each side (and the client
# session decodes bodies, so their encoding does not pass on).
DROPPED = frozenset(
    {"host", "content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
)


class AwsProxy:
    """Serves on a loopback port in front of ``upstream`` (moto server's URL)."""

    def __init__(self, upstream: str, *, clock: Callable[[], float] = clock.monotonic) -> None:
        self.upstream = upstream.rstrip("/")
        self.dns_pending = 0.0
        self.targets_initial = 0.0
        self.calls: list[str] = []
        self.allowed: set[tuple[str, str]] | None = None
        """What SimulatePrincipalPolicy allows: (IAM action, resource), wildcards as in IAM
        policies; None allows everything."""
        self.principals: list[str] = []
        self._clock = clock
        self._throttles: dict[str, list[str]] = {}
        self._changed: dict[str, float] = {}
        self._registered: dict[str, float] = {}

    def throttle(self, operation: str, times: int = 1, code: str = "Throttling") -> None:
        """Answer the next ``times`` calls of ``operation`` (``GetChange``, ``RegisterTargets``
        …) with the throttling error ``code``."""
        self._throttles.setdefault(operation, []).extend([code] * times)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the URL to use as ``endpoint_url``."""
        async with aiohttp.ClientSession() as http:

            async def forward(request: web.Request) -> web.Response:
                return await self._forward(http, request)

            app = web.Application(client_max_size=1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", forward)
            async with serving(app, "127.0.0.1", 0) as port:
                yield f"http://127.0.0.1:{port}"

    async def _forward(self, http: aiohttp.ClientSession, request: web.Request) -> web.Response:
        body = await request.read()
        operation = _operation(request, body)
        self.calls.append(operation)
        if codes := self._throttles.get(operation):
            return _throttled(codes.pop(0))
        if operation == "SimulatePrincipalPolicy":
            return self._simulate(parse_qs(body.decode()))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with http.request(request.method, url, headers=headers, data=body) as answer:
            content = await answer.read()
            status = answer.status
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in DROPPED}
        if status == 200:
            content = self._delay(operation, request, body, content)
        return web.Response(body=content, status=status, headers=kept)

    def _delay(self, operation: str, request: web.Request, body: bytes, content: bytes) -> bytes:
        now = self._clock()
        if operation == "ChangeResourceRecordSets":
            if found := CHANGE_ID.search(content):
                self._changed[found[1].decode()] = now
            return _pending(content) if self.dns_pending > 0 else content
        if operation == "GetChange":
            change = CHANGE.match(request.path)
            made = self._changed.get(change["id"]) if change else None
            pending = made is not None and now - made < self.dns_pending
            return _pending(content) if pending else content
        if operation == "RegisterTargets":
            form = parse_qs(body.decode())
            for key, values in form.items():
                if re.fullmatch(r"Targets\.member\.\d+\.Id", key):
                    self._registered[values[0]] = now
            return content
        if operation == "DescribeTargetHealth":

            def initial(member: re.Match[bytes]) -> bytes:
                target = TARGET_ID.search(member[0])
                since = self._registered.get(target[1].decode()) if target else None
                young = since is not None and now - since < self.targets_initial
                return member[0].replace(HEALTHY, INITIAL) if young else member[0]

            return MEMBER.sub(initial, content)
        return content

    def _allows(self, action: str, resource: str) -> bool:
        return self.allowed is None or any(
            fnmatchcase(action.lower(), pattern.lower()) and fnmatchcase(resource, arns)
            for pattern, arns in self.allowed
        )

    def _simulate(self, form: dict[str, list[str]]) -> web.Response:
        """IAM's SimulatePrincipalPolicy: one EvaluationResult per action, its decision the
        most restrictive over the resources (each in ResourceSpecificResults when several)."""
        source = form.get("PolicySourceArn", [""])[0]
        names = [
            form[k][0] for k in sorted(form, key=_member_index) if k.startswith("ActionNames.")
        ]
        resources = [
            form[k][0] for k in sorted(form, key=_member_index) if k.startswith("ResourceArns.")
        ] or ["*"]
        if not PRINCIPAL.match(source) or not names:
            message = f"Invalid ARN or no actions: PolicySourceArn {source!r}, {len(names)} actions"
            return _error(400, "InvalidInput", message)
        if not self._allows("iam:SimulatePrincipalPolicy", source):
            message = (
                f"User: {source} is not authorized to perform: iam:SimulatePrincipalPolicy on "
                f"resource: {source} because no identity-based policy allows the "
                "iam:SimulatePrincipalPolicy action"
            )
            return _error(403, "AccessDenied", message)
        self.principals.append(source)
        members = []
        for name in names:
            decisions = {
                arn: "allowed" if self._allows(name, arn) else "implicitDeny" for arn in resources
            }
            overall = "allowed" if set(decisions.values()) == {"allowed"} else "implicitDeny"
            specific = ""
            if len(resources) > 1:
                specific = (
                    "<ResourceSpecificResults>"
                    + "".join(
                        f"<member><EvalResourceName>{escape(arn)}</EvalResourceName>"
                        f"<EvalResourceDecision>{decision}</EvalResourceDecision>"
                        "<MatchedStatements/><MissingContextValues/></member>"
                        for arn, decision in decisions.items()
                    )
                    + "</ResourceSpecificResults>"
                )
            members.append(
                f"<member><MatchedStatements/><MissingContextValues/>"
                f"<EvalResourceName>{escape(resources[0])}</EvalResourceName>"
                f"<EvalDecision>{overall}</EvalDecision>"
                f"<EvalActionName>{escape(name)}</EvalActionName>{specific}</member>"
            )
        body = (
            f'<SimulatePrincipalPolicyResponse xmlns="{IAM_XMLNS}"><SimulatePrincipalPolicyResult>'
            f"<IsTruncated>false</IsTruncated><EvaluationResults>{''.join(members)}"
            "</EvaluationResults></SimulatePrincipalPolicyResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</SimulatePrincipalPolicyResponse>"
        )
        return web.Response(text=body, content_type="text/xml")


def _member_index(key: str) -> tuple[str, int]:
    """``ActionNames.member.10`` sorts after ``ActionNames.member.9``."""
    prefix, _, index = key.rpartition(".")
    return prefix, int(index) if index.isdigit() else 0


def _operation(request: web.Request, body: bytes) -> str:
    """The AWS operation: the ``Action`` of a query-protocol call (ELBv2), else by REST path."""
    if request.content_type == "application/x-www-form-urlencoded":
        action = parse_qs(body.decode()).get("Action")
        if action:
            return action[0]
    if RRSET.match(request.path):
        return "ChangeResourceRecordSets" if request.method == "POST" else "ListResourceRecordSets"
    if CHANGE.match(request.path):
        return "GetChange"
    return f"{request.method} {request.path}"


def _pending(content: bytes) -> bytes:
    return content.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")


def _throttled(code: str) -> web.Response:
    return _error(400, code, "Rate exceeded")


def _error(status: int, code: str, message: str) -> web.Response:
    # Route 53 (rest-xml), ELBv2 and IAM (query) all answer errors in this shape.
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
        "</ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")
