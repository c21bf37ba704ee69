"""The ``kubernetes`` actuator (kubernetes-asyncio): scale Deployments, switch Service selectors.

Actions (parameters):

- ``scale_deployment`` (namespace, name, replicas): sets replicas through the ``/scale``
  subresource; converged when the rollout is done — the controller has observed the change and
  exactly ``replicas`` pods are updated, ready and present (scaled-down pods gone);
- ``patch_service_selector`` (namespace, name, selector): sets the given labels in the Service's
  selector, keeping the others (blue-green: ``{version: green}``); written with the
  resourceVersion just read, so a concurrent edit is a retryable conflict, never overwritten;
  converged when the selector holds and at least one Ready pod matches it — the pods the
  endpoints controller would publish, so traffic has somewhere to go.

Restoring a snapshot writes back the prior replicas, or exactly the prior selector (labels the
action added are removed).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator, model_validator

from srd.actuators.base import ActuatorError, Params, Plan, State
from srd.actuators.params import parse_params, prior_value
from srd.config import Strict
from srd.durations import Duration

NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{LABEL_NAME}"
LABEL_VALUE = rf"({LABEL_NAME})?"


class KubernetesSettings(Strict):
    """The ``actuators.kubernetes`` config section."""

    host: AnyHttpUrl | None = Field(
        None,
        description="API server URL used without credentials: the sandbox's fake API and tests. "
        "Unset: the in-cluster service account when run in a pod, else kubeconfig.",
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file; $KUBECONFIG or ~/.kube.")
    context: str | None = Field(None, description="kubeconfig context; its current one if unset.")
    api_timeout: Duration = Field(10.0, description="Limit of each action's API calls together.")

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesSettings:
        if self.host is not None and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("give host or kubeconfig/context, not both")
        if self.api_timeout <= 0:
            raise ValueError("api_timeout must be greater than 0")
        return self


class ScaleDeployment(Strict):
    namespace: str = Field(pattern=NAMESPACE)
    name: str = Field(pattern=OBJECT_NAME)
    replicas: int = Field(ge=0)

    @property
    def target(self) -> str:
        return f"deployment {self.namespace}/{self.name}"


class PatchServiceSelector(Strict):
    namespace: str = Field(pattern=NAMESPACE)
    name: str = Field(pattern=OBJECT_NAME)
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

    @property
    def target(self) -> str:
        return f"service {self.namespace}/{self.name}"


Action = ScaleDeployment | PatchServiceSelector
ACTIONS: dict[str, type[BaseModel]] = {
    "scale_deployment": ScaleDeployment,
    "patch_service_selector": PatchServiceSelector,
}


class KubernetesActuator:
    """Acts through one API client, made on first use and kept until ``close``."""

    name = "kubernetes"
    config_model = KubernetesSettings

    def __init__(self, settings: KubernetesSettings) -> None:
        self._settings = settings
        self._api: ApiClient | None = None
        self._connecting = asyncio.Lock()

    def actions(self) -> frozenset[str]:
        return frozenset(ACTIONS)

    def validate(self, action: str, params: Params) -> None:
        self._parse(action, params)

    async def snapshot(self, action: str, params: Params) -> State:
        p = self._parse(action, params)
        async with self._calling(p.target, "read") as api:
            if isinstance(p, ScaleDeployment):
                return {"replicas": await _replicas(api, p)}
            selector, _ = await _selector(api, p)
            return {"selector": selector}

    async def plan(self, action: str, params: Params) -> Plan:
        p = self._parse(action, params)
        async with self._calling(p.target, "read") as api:
            if isinstance(p, ScaleDeployment):
                replicas = await _replicas(api, p)
                changes = [] if replicas == p.replicas else [f"replicas: {replicas} → {p.replicas}"]
            else:
                selector, _ = await _selector(api, p)
                changes = [
                    f"selector {key}: {selector.get(key, '(absent)')} → {value}"
                    for key, value in sorted(p.selector.items())
                    if selector.get(key) != value
                ]
        return Plan(action, p.target, tuple(f"{p.target} {change}" for change in changes))

    async def apply(self, action: str, params: Params) -> State:
        p = self._parse(action, params)
        async with self._calling(p.target, "change") as api:
            if isinstance(p, ScaleDeployment):
                if await _replicas(api, p) != p.replicas:
                    await _scale(api, p, p.replicas)
                return {"replicas": p.replicas}
            selector, version = await _selector(api, p)
            if any(selector.get(key) != value for key, value in p.selector.items()):
                selector = await _patch_selector(api, p, version, dict(p.selector))
            return {"selector": selector}

    async def converged(self, action: str, params: Params) -> bool:
        p = self._parse(action, params)
        async with self._calling(p.target, "read") as api:
            if isinstance(p, ScaleDeployment):
                return await _rolled_out(api, p)
            selector, _ = await _selector(api, p)
            if any(selector.get(key) != value for key, value in p.selector.items()):
                return False
            return await _has_ready_pods(api, p.namespace, selector)

    async def restore(self, action: str, params: Params, prior: State) -> None:
        p = self._parse(action, params)
        async with self._calling(p.target, "restore") as api:
            if isinstance(p, ScaleDeployment):
                replicas = prior_value(prior, "replicas", int)
                if await _replicas(api, p) != replicas:
                    await _scale(api, p, replicas)
                return
            wanted = prior_value(prior, "selector", dict)
            selector, version = await _selector(api, p)
            if selector != wanted:
                # None removes a label this action (or anyone since) added to the selector.
                patch = {key: wanted.get(key) for key in selector.keys() | wanted.keys()}
                await _patch_selector(api, p, version, patch)

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    def _parse(self, action: str, params: Params) -> Action:
        return cast(Action, parse_params(self.name, ACTIONS, action, params))

    @asynccontextmanager
    async def _calling(self, target: str, doing: str) -> AsyncIterator[ApiClient]:
        """The client, within the API timeout; errors become ActuatorErrors saying what failed
        and whether trying again can help."""
        timeout = self._settings.api_timeout
        try:
            async with asyncio.timeout(timeout):
                yield await self._client()
        except ApiException as exc:
            raise _api_error(target, doing, exc) from None
        except kube_config.ConfigException as exc:
            message = f"cannot load Kubernetes credentials: {exc}"
            raise ActuatorError(message, retryable=False) from None
        except TimeoutError:
            message = f"{target}: {doing} timed out after {timeout:g}s"
            raise ActuatorError(message, retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            message = f"{target}: {doing} failed: {type(exc).__name__}: {exc}"
            raise ActuatorError(message, retryable=True) from None

    async def _client(self) -> ApiClient:
        async with self._connecting:
            if self._api is None:
                self._api = ApiClient(await self._configuration())
            return self._api

    async def _configuration(self) -> Configuration:
        settings = self._settings
        if settings.host is not None:
            return Configuration(host=str(settings.host).rstrip("/"))
        configuration = Configuration()
        if settings.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            # kubernetes-asyncio leaves this one function unannotated; it refreshes the token.
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await kube_config.load_kube_config(
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context,
                client_configuration=configuration,
            )
        return configuration


async def _replicas(api: ApiClient, p: ScaleDeployment) -> int:
    scale = await AppsV1Api(api).read_namespaced_deployment_scale(p.name, p.namespace)
    return int(scale.spec.replicas or 0)


async def _scale(api: ApiClient, p: ScaleDeployment, replicas: int) -> None:
    body = {"spec": {"replicas": replicas}}
    await AppsV1Api(api).patch_namespaced_deployment_scale(p.name, p.namespace, body)


async def _rolled_out(api: ApiClient, p: ScaleDeployment) -> bool:
    """As ``kubectl rollout status`` judges it, for exactly the replicas asked for."""
    deployment = await AppsV1Api(api).read_namespaced_deployment(p.name, p.namespace)
    status = deployment.status
    if deployment.spec.replicas != p.replicas or status is None:
        return False
    observed = status.observed_generation or 0
    counts = (status.replicas, status.updated_replicas, status.ready_replicas)
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


def _api_error(target: str, doing: str, exc: ApiException) -> ActuatorError:
    status = int(exc.status or 0)
    try:
        detail = json.loads(exc.body or "")["message"]
    except (TypeError, ValueError, KeyError):
        detail = exc.reason or "no message"
    if status == 409:
        message = f"{target} was changed by someone else meanwhile (409); read it afresh: {detail}"
    elif status == 403:
        message = f"{target}: forbidden to {doing} it (403); grant srd's credentials RBAC: {detail}"
    elif status == 404:
        message = f"{target} does not exist (404): {detail}"
    elif status == 422:
        message = f"{target}: the API refused the change as invalid (422): {detail}"
    else:
        message = f"{target}: {doing} answered {status} {exc.reason}: {detail}"
    return ActuatorError(message, retryable=status in (409, 429) or status >= 500)
