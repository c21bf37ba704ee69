"""A fake Kubernetes API server: the real REST paths and JSON shapes, served by aiohttp.

The real client (kubernetes-asyncio) talks to it unchanged: point ``Configuration(host=url)``
at it. Objects live in one in-memory store keyed by (resource, namespace, name) with a single
revision counter, as etcd's revision backs ``resourceVersion``: every write bumps it, lists
report it, and a write carrying a stale ``metadata.resourceVersion`` gets 409 Conflict.

Served: pods, services (``/api/v1``), deployments and their ``/scale`` (``/apis/apps/v1``),
leases (``/apis/coordination.k8s.io/v1``); namespaced collection GET (``labelSelector``) and
POST, object GET, PUT, PATCH and DELETE; SelfSubjectAccessReview, answered from an allow
list (``FakeKubernetes.allowed``; None allows all). Injected faults (``FakeKubernetes.faults``,
see ``ApiFault``) answer matching requests with a Status error — 409 Conflict, 500, 503, or
429 with ``Retry-After`` — before they reach the store. Deliberate simplifications: namespaces
need not exist; strategic-merge patches are applied as JSON merge patches (lists replaced, not
merged by key); JSON patch and server-side apply answer 415; a deployment's status follows its spec
at once (inject delays in the test when convergence is the subject).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from srd import clock
from srd.http.app import serving

Object = dict[str, Any]
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


@dataclass(frozen=True, slots=True)
class Resource:
    prefix: str
    """Path prefix of the API group version: ``api/v1`` or ``apis/<group>/<version>``."""
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return self.prefix.removeprefix("apis/").removeprefix("api/")

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def qualified(self) -> str:
        """How API errors name the resource: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


PODS = Resource("api/v1", "pods", "Pod")
SERVICES = Resource("api/v1", "services", "Service")
DEPLOYMENTS = Resource("apis/apps/v1", "deployments", "Deployment")
LEASES = Resource("apis/coordination.k8s.io/v1", "leases", "Lease")
RESOURCES = (PODS, SERVICES, DEPLOYMENTS, LEASES)


class ApiError(Exception):
    """Answered as a ``Status`` object with ``code``, ``reason`` and ``message``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Object | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details
        self.retry_after = retry_after

    def status(self) -> Object:
        status: Object = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
        status |= {"status": "Failure", "message": self.message, "reason": self.reason}
        if self.details is not None:
            status["details"] = self.details
        return status | {"code": self.code}


def _not_found(resource: Resource, name: str) -> ApiError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found', details)


def _conflict(resource: Resource, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return ApiError(409, "Conflict", message, details)


VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
WRITES = frozenset({"create", "update", "patch", "delete"})
ERROR_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass
class ApiFault:
    """Requests the API answers with an error instead of serving them: those of ``verbs`` on
    ``resources`` (``deployments``, ``deployments/scale``, ``services`` …; None: any), for the
    next ``times`` of them and until ``until`` (``clock.monotonic()``; None: no limit on
    either, until the fault is removed)."""

    code: int
    """409 (Conflict: as if someone else wrote first), 429, 500 or 503."""
    verbs: frozenset[str] | None = None
    resources: frozenset[str] | None = None
    times: int | None = None
    until: float | None = None
    retry_after: int = 1
    """Seconds a 429 asks the client to wait (the ``Retry-After`` header)."""
    answered: int = field(default=0, init=False)

    def matches(self, verb: str, resource: str) -> bool:
        if self.until is not None and clock.monotonic() >= self.until:
            return False
        if self.times is not None and self.answered >= self.times:
            return False
        return (self.verbs is None or verb in self.verbs) and (
            self.resources is None or resource in self.resources
        )

    def error(self, resource: Resource | None, name: str) -> ApiError:
        self.answered += 1
        if self.code == 409 and resource is not None:
            return _conflict(resource, name)
        reason = ERROR_REASONS.get(self.code, "InternalError")
        if self.code == 429:
            message = "Too many requests, please try again later."
            return ApiError(
                429,
                reason,
                message,
                {"retryAfterSeconds": self.retry_after},
                retry_after=self.retry_after,
            )
        return ApiError(self.code, reason, f"the server is unable to handle the request ({reason})")


class ObjectStore:
    """Namespaced objects with etcd-like revisions. Methods raise ApiError as the API answers."""

    def __init__(self) -> None:
        self._objects: dict[tuple[Resource, str, str], Object] = {}
        self.revision = 0
        self.on_commit: list[Callable[[], None]] = []
        """Called after every write: a drill's exploration checks capacity right there."""

    def select(self, resource: Resource, namespace: str, selector: str = "") -> list[Object]:
        """Objects of ``namespace`` whose labels match ``selector``, by name."""
        matches = parse_label_selector(selector)
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self._objects.items(), key=lambda item: item[0][2])
            if kind == resource and ns == namespace and matches(obj["metadata"].get("labels", {}))
        ]

    def get(self, resource: Resource, namespace: str, name: str) -> Object:
        obj = self._objects.get((resource, namespace, name))
        if obj is None:
            raise _not_found(resource, name)
        return copy.deepcopy(obj)

    def create(self, resource: Resource, namespace: str, obj: Object) -> Object:
        metadata = obj.setdefault("metadata", {})
        name = metadata.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{resource.kind} is invalid: metadata.name: Required")
        if metadata.setdefault("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match")
        if (resource, namespace, name) in self._objects:
            details = {"name": name, "group": resource.group, "kind": resource.plural}
            message = f'{resource.qualified} "{name}" already exists'
            raise ApiError(409, "AlreadyExists", message, details)
        metadata |= {
            "uid": str(uuid.uuid4()),
            "creationTimestamp": datetime.fromtimestamp(clock.now(), UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "generation": 1,
        }
        return self._commit(resource, namespace, name, obj)

    def replace(self, resource: Resource, namespace: str, name: str, obj: Object) -> Object:
        current = self.get(resource, namespace, name)
        metadata = obj.setdefault("metadata", {})
        if metadata.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        self._check_version(resource, name, metadata, current)
        # The server owns these; a client's copy is ignored, as the real API does.
        for key in ("uid", "creationTimestamp", "generation"):
            metadata[key] = current["metadata"][key]
        metadata |= {"name": name, "namespace": namespace}
        if obj.get("spec") != current.get("spec"):
            metadata["generation"] += 1
        return self._commit(resource, namespace, name, obj)

    def patch(self, resource: Resource, namespace: str, name: str, patch: Object) -> Object:
        current = self.get(resource, namespace, name)
        self._check_version(resource, name, patch.get("metadata") or {}, current)
        merged = merge_patch(current, patch)
        merged["metadata"].pop("resourceVersion", None)
        return self.replace(resource, namespace, name, merged)

    def delete(self, resource: Resource, namespace: str, name: str) -> Object:
        obj = self.get(resource, namespace, name)
        del self._objects[(resource, namespace, name)]
        self.revision += 1
        return obj

    def _check_version(
        self, resource: Resource, name: str, metadata: Object, current: Object
    ) -> None:
        version = metadata.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise _conflict(resource, name)

    def _commit(self, resource: Resource, namespace: str, name: str, obj: Object) -> Object:
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        if resource == DEPLOYMENTS:
            _deployment_converged(obj)
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self._objects[(resource, namespace, name)] = obj
        for watcher in self.on_commit:
            watcher()
        return copy.deepcopy(obj)


def _deployment_converged(deployment: Object) -> None:
    replicas = deployment.setdefault("spec", {}).setdefault("replicas", 1)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


_REQUIREMENT = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|!=|=)\s*(?P<value>[\w.-]*)"
    r"|\s(?P<set>in|notin)\s*\((?P<values>[\w.,\s-]*)\))?)\s*(?:,|$)"
)


def parse_label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A matcher for a label selector (``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``,
    ``a``, ``!a``, comma-separated and all required); ApiError 400 when it does not parse."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    pos = 0
    while pos < len(text):
        found = _REQUIREMENT.match(text, pos)
        if found is None or found.end() == pos:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {text[pos:]!r}")
        checks.append(_requirement(found))
        pos = found.end()
    return lambda labels: all(check(labels) for check in checks)


def _requirement(found: re.Match[str]) -> Callable[[dict[str, str]], bool]:
    if (absent := found["absent"]) is not None:
        return lambda labels: absent not in labels
    key, op, value = found["key"], found["op"], found["value"]
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if found["set"] is not None:
        values = {part.strip() for part in found["values"].split(",")}
        if found["set"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeKubernetes:
    """The fake API server over an ObjectStore that tests may also fill and inspect directly."""

    def __init__(self) -> None:
        self.store = ObjectStore()
        self.faults: list[ApiFault] = []
        """Injected faults, checked in order before a request reaches the store."""
        self.allowed: set[tuple[str, str]] | None = None
        """What SelfSubjectAccessReviews allow: (verb, ``resource`` or ``resource/subresource``)
        pairs, any namespace; None allows everything (the sandbox's all-powerful account)."""
        self.requests: list[tuple[str, str]] = []
        """Every request received, as (method, path), in order: what a drill or test made."""

    def app(self) -> web.Application:
        middlewares = [_status_errors, self._injected_faults]
        app = web.Application(client_max_size=1024 * 1024, middlewares=middlewares)
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._access_review
        )
        for resource in RESOURCES:
            collection = f"/{resource.prefix}/namespaces/{{namespace}}/{resource.plural}"
            app.router.add_get(collection, self._list(resource))
            app.router.add_post(collection, self._create(resource))
            item = collection + "/{name}"
            app.router.add_get(item, self._get(resource))
            app.router.add_put(item, self._replace(resource))
            app.router.add_patch(item, self._patch(resource))
            app.router.add_delete(item, self._delete(resource))
        scale = f"/{DEPLOYMENTS.prefix}/namespaces/{{namespace}}/deployments/{{name}}/scale"
        app.router.add_get(scale, self._get_scale)
        app.router.add_put(scale, self._replace_scale)
        app.router.add_patch(scale, self._patch_scale)
        return app

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the base URL for ``Configuration(host=…)``."""
        async with serving(self.app(), "127.0.0.1", 0) as port:
            yield f"http://127.0.0.1:{port}"

    @web.middleware
    async def _injected_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        verb, resource, kind = _request_kind(request)
        for fault in self.faults:
            if fault.matches(verb, resource):
                raise fault.error(kind, request.match_info.get("name", ""))
        return await handler(request)

    async def _access_review(self, request: web.Request) -> web.Response:
        review = await _body(request)
        attributes = (review.get("spec") or {}).get("resourceAttributes")
        if not isinstance(attributes, dict):
            message = "SelfSubjectAccessReview is invalid: spec.resourceAttributes: Required"
            raise ApiError(422, "Invalid", message)
        verb = str(attributes.get("verb", ""))
        resource = str(attributes.get("resource", ""))
        if attributes.get("subresource"):
            resource += f"/{attributes['subresource']}"
        allowed = self.allowed is None or (verb, resource) in self.allowed
        status: Object = {"allowed": allowed}
        if not allowed:
            status["reason"] = f"no RBAC rule allows {verb} on {resource}"
        review |= {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "status": status,
        }
        review.setdefault("metadata", {})
        return web.json_response(review, status=201)

    def _list(self, resource: Resource) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            if "fieldSelector" in request.query:
                raise ApiError(400, "BadRequest", "the fake API does not implement fieldSelector")
            selector = request.query.get("labelSelector", "")
            items = self.store.select(resource, request.match_info["namespace"], selector)
            for item in items:  # list items carry no kind or apiVersion, as in the real API
                del item["kind"], item["apiVersion"]
            return web.json_response(
                {
                    "kind": f"{resource.kind}List",
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": str(self.store.revision)},
                    "items": items,
                }
            )

        return handler

    def _create(self, resource: Resource) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self.store.create(resource, request.match_info["namespace"], await _body(request))
            return web.json_response(obj, status=201)

        return handler

    def _get(self, resource: Resource) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(self.store.get(resource, *_where(request)))

        return handler

    def _replace(self, resource: Resource) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            body = await _body(request)
            return web.json_response(self.store.replace(resource, *_where(request), body))

        return handler

    def _patch(self, resource: Resource) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            body = await _patch_body(request)
            return web.json_response(self.store.patch(resource, *_where(request), body))

        return handler

    def _delete(self, resource: Resource) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(self.store.delete(resource, *_where(request)))

        return handler

    async def _get_scale(self, request: web.Request) -> web.Response:
        return web.json_response(_scale(self.store.get(DEPLOYMENTS, *_where(request))))

    async def _replace_scale(self, request: web.Request) -> web.Response:
        return await self._set_replicas(request, await _body(request))

    async def _patch_scale(self, request: web.Request) -> web.Response:
        return await self._set_replicas(request, await _patch_body(request))

    async def _set_replicas(self, request: web.Request, scale: Object) -> web.Response:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", "Scale is invalid: spec.replicas: must be >= 0")
        version = (scale.get("metadata") or {}).get("resourceVersion")
        patch: Object = {"spec": {"replicas": replicas}}
        if version:
            patch["metadata"] = {"resourceVersion": version}
        return web.json_response(_scale(self.store.patch(DEPLOYMENTS, *_where(request), patch)))


def _scale(deployment: Object) -> Object:
    metadata = deployment["metadata"]
    selector = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {
            "replicas": deployment["status"]["replicas"],
            "selector": ",".join(f"{key}={value}" for key, value in sorted(selector.items())),
        },
    }


def _where(request: web.Request) -> tuple[str, str]:
    return request.match_info["namespace"], request.match_info["name"]


async def _body(request: web.Request) -> Object:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "BadRequest", "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body


async def _patch_body(request: web.Request) -> Object:
    if request.content_type not in MERGE_PATCHES:
        message = f"the fake API does not implement {request.content_type} patches"
        raise ApiError(415, "UnsupportedMediaType", message)
    return await _body(request)


def _request_kind(request: web.Request) -> tuple[str, str, Resource | None]:
    """The request's verb (``list`` for a collection GET), its resource as RBAC names it
    (``deployments/scale``) and the Resource it acts on."""
    route = request.match_info.route.resource
    path = route.canonical if route is not None else request.path
    head, _, tail = path.partition("/namespaces/{namespace}/")
    parts = tail.split("/") if tail else [path.rsplit("/", 1)[-1]]
    verb = VERBS.get(request.method, request.method.lower())
    if verb == "get" and len(parts) == 1:
        verb = "list"
    kind = next((r for r in RESOURCES if head == f"/{r.prefix}" and r.plural == parts[0]), None)
    resource = parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")
    return verb, resource, kind


@web.middleware
async def _status_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        return web.json_response(error.status(), status=error.code, headers=headers)


def make_pod(
    name: str,
    ip: str | None,
    *,
    labels: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    phase: str = "Running",
    ready: bool = True,
) -> Object:
    """A pod manifest with status as the kubelet reports it (``ports``: name → number)."""
    ports = ports if ports is not None else {"http": 8080}
    status: Object = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    container = {
        "name": "app",
        "image": "registry.example/app:1",
        "ports": [
            {"name": port, "containerPort": number, "protocol": "TCP"}
            for port, number in ports.items()
        ],
    }
    return {
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"containers": [container]},
        "status": status,
    }


PRODUCTION, DR, WEB = "vilokanam-production", "vilokanam-dr", "vilokanam-web"
"""The platform's namespaces (REFERENCE.md §3)."""


def make_deployment(name: str, replicas: int) -> Object:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
        },
    }


def seed_platform(fake: FakeKubernetes, services: tuple[str, ...] = ("web",)) -> None:
    """The platform as it runs before a failover: each service's primary up (3 replicas) in
    vilokanam-production, its backup idle in vilokanam-dr, and ``web-service`` on blue
    (Deployment ``web-blue`` at 3 replicas, ``web-green`` scaled to 0 after the last deploy)."""
    store = fake.store
    for service in services:
        store.create(DEPLOYMENTS, PRODUCTION, make_deployment(f"{service}-primary", 3))
        store.create(DEPLOYMENTS, DR, make_deployment(f"{service}-backup", 0))
    blue = {"app": "web", "version": "blue"}
    store.create(SERVICES, WEB, {"metadata": {"name": "web-service"}, "spec": {"selector": blue}})
    for colour, count in (("blue", 3), ("green", 0)):
        labels = {"app": "web", "version": colour}
        store.create(PODS, WEB, make_pod(f"web-{colour}-1", "10.0.0.9", labels=labels))
        deployment = make_deployment(f"web-{colour}", count)
        deployment["metadata"]["labels"] = labels
        deployment["spec"]["selector"]["matchLabels"] = labels
        deployment["spec"]["template"]["metadata"]["labels"] = labels
        store.create(DEPLOYMENTS, WEB, deployment)


def replicas(fake: FakeKubernetes, namespace: str, name: str) -> int:
    """A deployment's desired replicas, read straight from the store."""
    return int(fake.store.get(DEPLOYMENTS, namespace, name)["spec"]["replicas"])
