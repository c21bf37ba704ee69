"""The ``kubernetes`` actuator (kubernetes-asyncio): scale and apply Deployments, switch Service
selectors, read the active blue-green colour.

Actions (parameters):

- ``scale_deployment`` (namespace, name, replicas): sets replicas through the ``/scale``
  subresource; converged when the rollout is done — the controller has observed the change and
  exactly ``replicas`` pods are updated, ready and present (scaled-down pods gone);
- ``patch_service_selector`` (namespace, name, selector): sets the given labels in the Service's
  selector, keeping the others (blue-green: ``{version: green}``); written with the
  resourceVersion just read, so a concurrent edit is a retryable conflict, never overwritten;
  converged when the selector holds and at least one Ready pod matches it — the pods the
  endpoints controller would publish, so traffic has somewhere to go;
- ``apply_deployment`` (namespace, manifest): creates the Deployment of the manifest, or
  replaces its labels and spec (``kubectl apply`` of a whole manifest, written with the
  resourceVersion just read); converged when the rollout is complete, as ``kubectl rollout
  status`` judges it: the controller has observed the new generation and every replica is
  updated, ready and available. Restoring puts back the prior labels and spec, or deletes a
  Deployment the action created;
- ``detect_colour`` (namespace, service, label, colours, expect): reads which of two colours
  the Service's selector ``label`` points at; changes nothing. Its snapshot is ``{active,
  idle}``, which a blue-green runbook binds (``bind: {active: active, idle: idle}``) for its
  later steps; with ``expect`` it fails unless that colour is the active one.

Restoring a snapshot writes back the prior replicas, or exactly the prior selector (labels the
action added are removed). A 409 Conflict is retried at once with a fresh read (a few times),
a 429 or 5xx after a backoff (a 429's Retry-After), all within ``api_timeout``; what outlasts
that is a retryable error for the executor. ``denied`` asks the API server, read-only
(SelfSubjectAccessReview), whether srd may make every call an action needs; ``grant`` says
which Role would allow a refused one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import aiohttp
import structlog
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    AuthorizationV1Api,
    CoreV1Api,
    V1ResourceAttributes,
    V1SelfSubjectAccessReview,
    V1SelfSubjectAccessReviewSpec,
)
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel, Field, field_validator, model_validator

from srd.actuators.base import ActuatorError, Params, Plan, State
from srd.actuators.params import ModelledActions, prior_value
from srd.config.actuators import KubernetesConnection
from srd.config.durations import Duration
from srd.config.types import Strict
from srd.kubeapi import api_client
from srd.retry import Backoff

NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{LABEL_NAME}"
LABEL_VALUE = rf"({LABEL_NAME})?"

CONFLICT_RETRIES = 4
"""Fresh read-and-apply rounds after a 409 Conflict before it reaches the executor."""
CONFLICT_PAUSE = 0.01
"""Seconds between them (client-go's DefaultRetry: 5 steps of 10 ms)."""
TRANSIENT = frozenset({429, 500, 502, 503, 504})
"""Answers worth the same call again: overload (429, with Retry-After) and server errors."""
RETRY = Backoff(initial=0.2, maximum=5.0)
"""Waits between retries after a 429 or 5xx; its ``maximum`` also caps a Retry-After."""

APPLIED = "srd.io/applied-manifest"
"""The annotation holding the digest of the manifest ``apply_deployment`` applied."""

T = TypeVar("T")
log = structlog.get_logger("srd.actuators.kubernetes")


class KubernetesSettings(KubernetesConnection):
    """The ``actuators.kubernetes`` config section: the connection, and a time limit."""

    api_timeout: Duration = Field(10.0, description="Limit of each action's API calls together.")

    @model_validator(mode="after")
    def _positive_timeout(self) -> KubernetesSettings:
        if self.api_timeout <= 0:
            raise ValueError("api_timeout must be greater than 0")
        return self


class _InNamespace(Strict):
    """An action on one object of a namespace, named in the journal and errors by ``target``."""

    KIND: ClassVar[str]
    namespace: str = Field(pattern=NAMESPACE)

    if TYPE_CHECKING:  # a field or a property of each action

        @property
        def name(self) -> str: ...

    @property
    def target(self) -> str:
        return f"{self.KIND} {self.namespace}/{self.name}"


class _Named(_InNamespace):
    name: str = Field(pattern=OBJECT_NAME)


class ScaleDeployment(_Named):
    KIND = "deployment"
    replicas: int = Field(ge=0)


class PatchServiceSelector(_Named):
    KIND = "service"
    selector: dict[str, str] = Field(min_length=1, description="Labels to set in the selector.")

    @field_validator("selector")
    @classmethod
    def _labels(cls, selector: dict[str, str]) -> dict[str, str]:
        for key, value in selector.items():
            if not re.fullmatch(LABEL_KEY, key):
                raise ValueError(f"{key!r} is not a Kubernetes label key")
            if not re.fullmatch(LABEL_VALUE, value):
                raise ValueError(f"{value!r} (for {key}) is not a Kubernetes label value")
        return selector


class ApplyDeployment(_InNamespace):
    KIND = "deployment"
    manifest: dict[str, Any] = Field(description="An apps/v1 Deployment, as kubectl applies it.")

    @model_validator(mode="after")
    def _a_deployment(self) -> ApplyDeployment:
        manifest = self.manifest
        if (manifest.get("apiVersion"), manifest.get("kind")) != ("apps/v1", "Deployment"):
            raise ValueError("manifest must be an apps/v1 Deployment (apiVersion and kind)")
        name = (manifest.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not re.fullmatch(OBJECT_NAME, name):
            raise ValueError("manifest.metadata.name must be a Kubernetes object name")
        namespace = manifest["metadata"].get("namespace", self.namespace)
        if namespace != self.namespace:
            raise ValueError(f"manifest.metadata.namespace is {namespace}, not {self.namespace}")
        spec = manifest.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
            raise ValueError("manifest.spec.template is required")
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            raise ValueError("manifest.spec.replicas must be a whole number >= 0")
        return self

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def replicas(self) -> int:
        return int(self.manifest["spec"].get("replicas", 1))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.manifest["metadata"].get("labels") or {})


class DetectColour(_InNamespace):
    KIND = "service"
    service: str = Field(pattern=OBJECT_NAME)
    label: str = Field("version", pattern=rf"^{LABEL_KEY}$")
    colours: tuple[str, str] = Field(("blue", "green"), description="The two colours.")
    expect: str | None = Field(
        None,
        description="Fail unless this colour is the active one (before scaling the other "
        "down: someone may have switched back meanwhile).",
    )

    @field_validator("colours")
    @classmethod
    def _two(cls, colours: tuple[str, str]) -> tuple[str, str]:
        if colours[0] == colours[1]:
            raise ValueError("give two different colours")
        for colour in colours:
            if not re.fullmatch(LABEL_VALUE, colour):
                raise ValueError(f"{colour!r} is not a Kubernetes label value")
        return colours

    @property
    def name(self) -> str:
        return self.service


Action = ScaleDeployment | PatchServiceSelector | ApplyDeployment | DetectColour

ACCESS: dict[type[BaseModel], tuple[tuple[str, str, str, str], ...]] = {
    ScaleDeployment: (
        ("get", "apps", "deployments", "scale"),
        ("patch", "apps", "deployments", "scale"),
        ("get", "apps", "deployments", ""),
    ),
    PatchServiceSelector: (
        ("get", "", "services", ""),
        ("patch", "", "services", ""),
        ("list", "", "pods", ""),
    ),
    ApplyDeployment: (
        ("get", "apps", "deployments", ""),
        ("create", "apps", "deployments", ""),
        ("update", "apps", "deployments", ""),
        ("delete", "apps", "deployments", ""),
    ),
    DetectColour: (("get", "", "services", ""),),
}
"""(verb, group, resource, subresource) of every call an action makes, snapshot to restore."""
ACTIONS: dict[str, type[BaseModel]] = {
    "scale_deployment": ScaleDeployment,
    "patch_service_selector": PatchServiceSelector,
    "apply_deployment": ApplyDeployment,
    "detect_colour": DetectColour,
}


class KubernetesActuator(ModelledActions[Action]):
    """Acts through one API client, made on first use and kept until ``close``."""

    name = "kubernetes"
    config_model = KubernetesSettings
    models = ACTIONS

    def __init__(self, settings: KubernetesSettings) -> None:
        self._settings = settings
        self._api: ApiClient | None = None
        self._connecting = asyncio.Lock()

    async def snapshot(self, action: str, params: Params) -> State:
        p = self._parse(action, params)

        async def read(api: ApiClient) -> State:
            if isinstance(p, ScaleDeployment):
                return {"replicas": await _replicas(api, p)}
            if isinstance(p, ApplyDeployment):
                current = await _deployment(api, p)
                return {"deployment": None if current is None else _kept(current)}
            if isinstance(p, DetectColour):
                return await _colours(api, p)
            selector, _ = await _selector(api, p)
            return {"selector": selector}

        return await self._call(p.target, "read", read)

    async def plan(self, action: str, params: Params) -> Plan:
        p = self._parse(action, params)

        async def diff(api: ApiClient) -> list[str]:
            if isinstance(p, ScaleDeployment):
                replicas = await _replicas(api, p)
                return [] if replicas == p.replicas else [f"replicas: {replicas} → {p.replicas}"]
            if isinstance(p, ApplyDeployment):
                return _deployment_changes(await _deployment(api, p), p)
            if isinstance(p, DetectColour):
                await _colours(api, p)
                return []
            selector, _ = await _selector(api, p)
            return [
                f"selector {key}: {selector.get(key, '(absent)')} → {value}"
                for key, value in sorted(p.selector.items())
                if selector.get(key) != value
            ]

        changes = await self._call(p.target, "read", diff)
        return Plan(action, p.target, tuple(f"{p.target} {change}" for change in changes))

    async def apply(self, action: str, params: Params) -> State:
        p = self._parse(action, params)

        async def change(api: ApiClient) -> State:
            if isinstance(p, ScaleDeployment):
                if await _replicas(api, p) != p.replicas:
                    await _scale(api, p, p.replicas)
                return {"replicas": p.replicas}
            if isinstance(p, ApplyDeployment):
                current = await _deployment(api, p)
                if not _in_place(current, p):
                    await _put_deployment(api, p, current, _wanted(current, p))
                return {"deployment": p.name, "applied": _digest(p)}
            if isinstance(p, DetectColour):
                return await _colours(api, p)
            selector, version = await _selector(api, p)
            if any(selector.get(key) != value for key, value in p.selector.items()):
                selector = await _patch_selector(api, p, version, dict(p.selector))
            return {"selector": selector}

        return await self._call(p.target, "change", change)

    async def converged(self, action: str, params: Params) -> bool:
        p = self._parse(action, params)

        async def check(api: ApiClient) -> bool:
            if isinstance(p, ScaleDeployment):
                return await _rolled_out(api, p)
            if isinstance(p, ApplyDeployment):
                return _in_place(await _deployment(api, p), p) and await _rolled_out(api, p)
            if isinstance(p, DetectColour):
                return True
            selector, _ = await _selector(api, p)
            if any(selector.get(key) != value for key, value in p.selector.items()):
                return False
            return await _has_ready_pods(api, p.namespace, selector)

        return await self._call(p.target, "read", check)

    async def restore(self, action: str, params: Params, prior: State) -> None:
        p = self._parse(action, params)

        async def put_back(api: ApiClient) -> None:
            if isinstance(p, ScaleDeployment):
                replicas = prior_value(prior, "replicas", int)
                if await _replicas(api, p) != replicas:
                    await _scale(api, p, replicas)
                return
            if isinstance(p, ApplyDeployment):
                if "deployment" not in prior:
                    message = f"the snapshot to restore has no deployment (got {prior!r})"
                    raise ActuatorError(message, retryable=False)
                await _put_deployment(api, p, await _deployment(api, p), prior["deployment"])
                return
            if isinstance(p, DetectColour):
                return
            wanted = prior_value(prior, "selector", dict)
            selector, version = await _selector(api, p)
            if selector != wanted:
                # None removes a label this action (or anyone since) added to the selector.
                patch = {key: wanted.get(key) for key in selector.keys() | wanted.keys()}
                await _patch_selector(api, p, version, patch)

        await self._call(p.target, "restore", put_back)

    async def denied(self, action: str, params: Params) -> list[str]:
        """The calls ``action`` needs that srd's credentials may not make (``patch
        deployments/scale in vilokanam-dr``), each asked as a SelfSubjectAccessReview."""
        p = self._parse(action, params)

        async def review(api: ApiClient) -> list[str]:
            refused = []
            for verb, group, resource, subresource in ACCESS[type(p)]:
                attributes = V1ResourceAttributes(
                    namespace=p.namespace,
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource,
                    name=None if verb in ("list", "create") else p.name,
                )
                body = V1SelfSubjectAccessReview(
                    spec=V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                )
                answer = await AuthorizationV1Api(api).create_self_subject_access_review(body)
                if not answer.status.allowed:
                    what = resource + (f"/{subresource}" if subresource else "")
                    why = f" ({answer.status.reason})" if answer.status.reason else ""
                    refused.append(f"{verb} {what} in {p.namespace}{why}")
            return refused

        try:
            return await self._call(p.target, "review access to", review)
        except ActuatorError as exc:
            fix = (
                "srd must be allowed to create selfsubjectaccessreviews (every user is, by default)"
            )
            raise ActuatorError(str(exc), retryable=exc.retryable, fix=fix) from None

    def grant(self, refusal: str) -> str:
        verb, resource, _, namespace = refusal.split(" (")[0].split(" ", 3)
        return (
            f"grant srd's credentials RBAC: a Role in {namespace} with verbs [{verb}] on "
            f"{resource}, bound to srd's service account"
        )

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _call(self, target: str, doing: str, body: Callable[[ApiClient], Awaitable[T]]) -> T:
        """``body`` (reads, then at most a write) within the API timeout, run again on what
        trying again can fix: a 409 Conflict re-reads and re-applies at once, up to
        ``CONFLICT_RETRIES`` times (as client-go's RetryOnConflict); a 429 waits its
        Retry-After, a 5xx backs off. Errors become ActuatorErrors saying what failed and
        whether the executor's retry can help."""
        timeout = self._settings.api_timeout
        last: ApiException | None = None
        try:
            async with asyncio.timeout(timeout):
                api = await self._client()
                conflicts, transient = 0, RETRY.delays()
                while True:
                    try:
                        return await body(api)
                    except ApiException as exc:
                        status = int(exc.status or 0)
                        if status == 409 and conflicts < CONFLICT_RETRIES:
                            conflicts += 1
                            wait = CONFLICT_PAUSE
                        elif status in TRANSIENT:
                            # A Retry-After replaces the wait but the backoff still grows.
                            delay = next(transient)
                            wait = _retry_after(exc) or delay
                        else:
                            raise
                        last = exc
                        log.warning(
                            "kubernetes API call retried",
                            target=target,
                            doing=doing,
                            status=status,
                            retry_in=wait,
                        )
                        await asyncio.sleep(wait)
        except ApiException as exc:
            raise _api_error(target, doing, exc) from None
        except kube_config.ConfigException as exc:
            message = f"cannot load Kubernetes credentials: {exc}"
            raise ActuatorError(message, retryable=False) from None
        except TimeoutError:
            message = f"{target}: {doing} timed out after {timeout:g}s"
            if last is not None:
                message += f"; the API last answered {last.status} {_detail(last)}"
            raise ActuatorError(message, retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            message = f"{target}: {doing} failed: {type(exc).__name__}: {exc}"
            raise ActuatorError(message, retryable=True) from None

    async def _client(self) -> ApiClient:
        async with self._connecting:
            if self._api is None:
                self._api = await api_client(self._settings)
            return self._api


async def _deployment(api: ApiClient, p: ApplyDeployment) -> dict[str, Any] | None:
    """The Deployment as the API serves it (JSON field names), or None when there is none."""
    try:
        found = await AppsV1Api(api).read_namespaced_deployment(p.name, p.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], api.sanitize_for_serialization(found))


def _kept(deployment: dict[str, Any]) -> State:
    """What ``apply_deployment`` changes, and restores: labels, annotations and spec."""
    metadata = deployment.get("metadata") or {}
    return {
        "labels": dict(metadata.get("labels") or {}),
        "annotations": dict(metadata.get("annotations") or {}),
        "spec": deployment.get("spec") or {},
    }


def _digest(p: ApplyDeployment) -> str:
    # The API server fills in defaults, so the served spec never equals the manifest's: the
    # digest of what was applied, kept in an annotation, says whether this manifest is in place.
    text = json.dumps({"labels": p.labels, "spec": p.manifest["spec"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _in_place(current: dict[str, Any] | None, p: ApplyDeployment) -> bool:
    annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
    return current is not None and annotations.get(APPLIED) == _digest(p)


def _wanted(current: dict[str, Any] | None, p: ApplyDeployment) -> State:
    annotations = _kept(current)["annotations"] if current is not None else {}
    annotations |= dict(p.manifest["metadata"].get("annotations") or {})
    annotations[APPLIED] = _digest(p)
    return {"labels": p.labels, "annotations": annotations, "spec": p.manifest["spec"]}


def _deployment_changes(current: dict[str, Any] | None, p: ApplyDeployment) -> list[str]:
    spec = p.manifest["spec"]
    if current is None:
        return [f"create ({p.replicas} replicas, images {_images(spec)})"]
    if _in_place(current, p):
        return []
    before = _kept(current)["spec"]
    changes = []
    if _images(before) != _images(spec):
        changes.append(f"images: {_images(before)} → {_images(spec)}")
    if before.get("replicas") != p.replicas:
        changes.append(f"replicas: {before.get('replicas')} → {p.replicas}")
    return changes or ["labels and spec replaced by the manifest's"]


def _images(spec: dict[str, Any]) -> str:
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return ", ".join(f"{c.get('name')}={c.get('image')}" for c in containers) or "(none)"


async def _put_deployment(
    api: ApiClient, p: ApplyDeployment, current: dict[str, Any] | None, wanted: State | None
) -> None:
    """Make the Deployment's labels, annotations and spec ``wanted`` (None: no Deployment)."""
    apps = AppsV1Api(api)
    if wanted is None:
        if current is not None:
            await apps.delete_namespaced_deployment(p.name, p.namespace)
        return
    metadata = {"name": p.name, "namespace": p.namespace}
    metadata |= {"labels": wanted["labels"], "annotations": wanted["annotations"]}
    # Sent as the manifest's JSON: the client serialises a dict as it is, where its
    # V1Deployment model would drop any field its version does not know.
    body: Any = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata}
    body["spec"] = wanted["spec"]
    if current is None:
        await apps.create_namespaced_deployment(p.namespace, body)
    elif _kept(current) != wanted:
        # The resourceVersion makes the replace conditional: a Deployment changed since it
        # was read answers 409, and the call is made again on a fresh read.
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        await apps.replace_namespaced_deployment(p.name, p.namespace, body)


async def _colours(api: ApiClient, p: DetectColour) -> State:
    service = await CoreV1Api(api).read_namespaced_service(p.service, p.namespace)
    active = (service.spec.selector or {}).get(p.label)
    if active not in p.colours:
        message = (
            f"{p.target}: selector {p.label}={active} is neither of {list(p.colours)}; "
            "set it to one of them before a blue-green deploy"
        )
        raise ActuatorError(message, retryable=False)
    if p.expect is not None and active != p.expect:
        message = f"{p.target}: {p.expect} was expected to be active, but {active} is"
        raise ActuatorError(message, retryable=False)
    idle = p.colours[1] if active == p.colours[0] else p.colours[0]
    return {"active": active, "idle": idle}


async def _replicas(api: ApiClient, p: ScaleDeployment) -> int:
    scale = await AppsV1Api(api).read_namespaced_deployment_scale(p.name, p.namespace)
    return int(scale.spec.replicas or 0)


async def _scale(api: ApiClient, p: ScaleDeployment, replicas: int) -> None:
    body = {"spec": {"replicas": replicas}}
    await AppsV1Api(api).patch_namespaced_deployment_scale(p.name, p.namespace, body)


async def _rolled_out(api: ApiClient, p: ScaleDeployment | ApplyDeployment) -> bool:
    """As ``kubectl rollout status`` judges it, for exactly the replicas asked for."""
    deployment = await AppsV1Api(api).read_namespaced_deployment(p.name, p.namespace)
    status = deployment.status
    if deployment.spec.replicas != p.replicas or status is None:
        return False
    observed = status.observed_generation or 0
    counts = [status.replicas, status.updated_replicas, status.ready_replicas]
    if isinstance(p, ApplyDeployment):
        counts.append(status.available_replicas)
    return observed >= deployment.metadata.generation and all(
        (count or 0) == p.replicas for count in counts
    )


async def _selector(api: ApiClient, p: PatchServiceSelector) -> tuple[dict[str, str], str]:
    """The Service's selector and the resourceVersion it was read at."""
    service = await CoreV1Api(api).read_namespaced_service(p.name, p.namespace)
    return dict(service.spec.selector or {}), service.metadata.resource_version


async def _patch_selector(
    api: ApiClient, p: PatchServiceSelector, version: str, selector: dict[str, str | None]
) -> dict[str, str]:
    # The resourceVersion makes the write conditional: a Service changed since it was read
    # answers 409 rather than losing that change.
    body = {"metadata": {"resourceVersion": version}, "spec": {"selector": selector}}
    service = await CoreV1Api(api).patch_namespaced_service(p.name, p.namespace, body)
    return dict(service.spec.selector or {})


async def _has_ready_pods(api: ApiClient, namespace: str, selector: dict[str, str]) -> bool:
    labels = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    pods = await CoreV1Api(api).list_namespaced_pod(namespace, label_selector=labels)
    return any(
        pod.metadata.deletion_timestamp is None
        and pod.status is not None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())
        for pod in pods.items
    )


def _detail(exc: ApiException) -> str:
    """The message of the Status object the API answered, else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.reason or "no message")


def _retry_after(exc: ApiException) -> float | None:
    """The seconds a 429 (or 503) asks to wait, at most ``RETRY.maximum``."""
    value = exc.headers.get("Retry-After", "") if exc.headers else ""
    try:
        return min(float(value), RETRY.maximum) if value else None
    except ValueError:  # an HTTP date: back off as usual
        return None


def _api_error(target: str, doing: str, exc: ApiException) -> ActuatorError:
    status = int(exc.status or 0)
    detail = _detail(exc)
    if status == 409:
        message = (
            f"{target} was changed by someone else meanwhile (409, still after "
            f"{CONFLICT_RETRIES} fresh reads); read it afresh: {detail}"
        )
    elif status == 403:
        message = f"{target}: forbidden to {doing} it (403); grant srd's credentials RBAC: {detail}"
    elif status == 404:
        message = f"{target} does not exist (404): {detail}"
    elif status == 422:
        message = f"{target}: the API refused the change as invalid (422): {detail}"
    else:
        message = f"{target}: {doing} answered {status} {exc.reason}: {detail}"
    return ActuatorError(message, retryable=status in (409, 429) or status >= 500)
