"""Targets found at run time: a Prometheus scrape config's jobs (static_configs and
kubernetes_sd_configs, with their relabel_configs), and Kubernetes pods.

Each source yields ``DiscoveredTarget``s whose ``target`` is a ready probe config (HttpTarget or
ExporterTarget, built from the source's template), so the runtime turns them into probes the way
it does static ones. Sources are looked at again every ``discovery.interval``. A source that
fails keeps its last targets — an API blip must not stop the probing of every pod — and counts
in ``srd_discovery_failures``. Static targets stay under ``probes:`` and are not repeated here.

A scrape config job srd cannot honour as Prometheus would (another service discovery, a
Kubernetes role other than pod, …) yields no targets and a warning naming the job and why,
logged when the set of such warnings changes — never a silent 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import aiohttp
import structlog
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api, V1Pod
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from srd.config import ConfigError
from srd.config.discovery import (
    DiscoveryConfig,
    DiscoverySource,
    KubernetesPodsSource,
    ScrapeConfigSource,
)
from srd.config.durations import Duration
from srd.config.files import parse_yaml_model
from srd.config.probes import ExporterTarget, HttpTarget
from srd.config.types import matching
from srd.kubeapi import api_configuration
from srd.probes.metrics import ProbeMetrics
from srd.probes.relabel import RelabelConfig, relabel

log = structlog.get_logger("srd.probes.discovery")

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
NAME_LIMIT = 64
"""Target names are metric label values limited to 64 characters (config.ProbeTarget.name)."""


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """One endpoint a source found, as the probe config to run against it."""

    source: str
    kind: Literal["http", "exporter"]
    target: HttpTarget | ExporterTarget
    labels: tuple[tuple[str, str], ...]
    """Where it came from: job and instance, or namespace, pod and the pod's labels."""

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def url(self) -> str:
        return str(self.target.url)


class DiscoveryError(Exception):
    """A source could not be read this round; the message names the file and key, or the
    namespace, and the reason."""


class Discovery:
    """Every configured source. ``kubernetes`` replaces kubeconfig and in-cluster loading (for
    tests and the sandbox: ``Configuration(host=fake_url)``)."""

    def __init__(
        self,
        config: DiscoveryConfig,
        metrics: ProbeMetrics,
        *,
        kubernetes: Configuration | None = None,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._kubernetes = kubernetes
        self._last: dict[str, list[DiscoveredTarget]] = {}
        self._warned: dict[str, list[str]] = {}

    async def discover(self) -> list[DiscoveredTarget]:
        """One round over every source at once: every target found, sorted by name."""
        sources: list[ScrapeConfigSource | KubernetesPodsSource] = [
            *self.config.scrape_config_files,
            *self.config.kubernetes_pods,
        ]
        found = await asyncio.gather(*(self._round(source) for source in sources))
        return sorted((target for targets in found for target in targets), key=lambda t: t.name)

    async def updates(self) -> AsyncGenerator[list[DiscoveredTarget]]:
        """The targets now, then again whenever a round finds a different set."""
        previous: list[DiscoveredTarget] | None = None
        while True:
            targets = await self.discover()
            if targets != previous:
                yield targets
                previous = targets
            await asyncio.sleep(self.config.interval)

    async def _round(
        self, source: ScrapeConfigSource | KubernetesPodsSource
    ) -> list[DiscoveredTarget]:
        warnings: list[str] = []
        try:
            if isinstance(source, ScrapeConfigSource):
                found = await scrape_config_targets(source, self._kubernetes, warnings)
            else:
                found = await kubernetes_pod_targets(source, self._kubernetes)
        except DiscoveryError as exc:
            self._metrics.discovery_failures.labels(source.name).inc()
            kept = self._last.get(source.name, [])
            log.warning("discovery failed", source=source.name, error=str(exc), kept=len(kept))
            return kept
        if warnings != self._warned.get(source.name, []):
            for warning in warnings:
                log.warning("scrape config job not honoured", source=source.name, reason=warning)
            self._warned[source.name] = warnings
        targets = _bounded(source, found)
        self._last[source.name] = targets
        self._metrics.discovered_targets.labels(source.name).set(len(targets))
        return targets


def _bounded(source: DiscoverySource, found: list[DiscoveredTarget]) -> list[DiscoveredTarget]:
    # The same address twice in a file yields one target: the first one written wins.
    unique = list({target.name: target for target in reversed(found)}.values())
    unique.sort(key=lambda target: target.name)
    if len(unique) > source.max_targets:
        log.warning(
            "discovery found more targets than max_targets; keeping the first by name",
            source=source.name,
            found=len(unique),
            max_targets=source.max_targets,
        )
    return unique[: source.max_targets]


def target_name(*parts: str) -> str:
    """A valid, bounded target name; an over-long one is cut and keeps a hash to stay unique."""
    name = _NAME_UNSAFE.sub("_", ":".join(parts))
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: NAME_LIMIT - 9]}-{digest}"


def _make(
    source: DiscoverySource,
    name: str,
    url: str,
    labels: dict[str, str],
    defaults: dict[str, Any],
    where: str,
) -> DiscoveredTarget:
    try:
        target = source.target(name, url, **defaults)
    except ValueError as exc:
        raise DiscoveryError(f"{where}: target {url} is not valid: {exc}") from None
    return DiscoveredTarget(source.name, source.probe, target, tuple(sorted(labels.items())))


# Prometheus scrape config files ------------------------------------------------------------


class _Lenient(BaseModel):
    # A Prometheus file has many keys srd does not use (relabel_configs, *_sd_configs, …).
    model_config = ConfigDict(extra="ignore", frozen=True)


_HostPort = Annotated[
    str, matching(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?", "host or host:port")
]


class _StaticConfig(_Lenient):
    targets: list[_HostPort] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class _Open(BaseModel):
    # Keys srd does not read are kept, to name them in a warning: ignoring one (credentials,
    # a field selector) would probe other targets than Prometheus scrapes.
    model_config = ConfigDict(extra="allow", frozen=True)


class _Namespaces(_Open):
    names: list[str] = Field(default_factory=list)
    own_namespace: bool = False


class _Selector(_Open):
    role: str
    label: str | None = None
    field: str | None = None


class _KubernetesSd(_Open):
    role: str
    namespaces: _Namespaces = Field(default_factory=_Namespaces)
    selectors: list[_Selector] = Field(default_factory=list)
    api_server: str | None = None
    kubeconfig_file: Path | None = None

    def unhonoured(self) -> str | None:
        """Why srd cannot list what Prometheus would from this, or None."""
        if self.role != "pod":
            return f"role {self.role!r}: srd discovers pods only"
        extra = [*(self.model_extra or {}), *(self.namespaces.model_extra or {})]
        extra += [key for s in self.selectors for key in s.model_extra or {}]
        if extra:
            return f"srd does not read {sorted(set(extra))}"
        if self.namespaces.own_namespace or not self.namespaces.names:
            return "srd lists the namespaces in namespaces.names only"
        if any(s.field for s in self.selectors) or any(s.role != "pod" for s in self.selectors):
            return "srd applies label selectors of role pod only"
        return None

    @property
    def label_selector(self) -> str:
        return ",".join(s.label for s in self.selectors if s.label)


class _ScrapeConfig(_Open):
    job_name: str
    scheme: Literal["http", "https"] = "http"
    metrics_path: str = Field("/metrics", pattern=r"^/")
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None
    static_configs: list[_StaticConfig] = Field(default_factory=list)
    kubernetes_sd_configs: list[_KubernetesSd] = Field(default_factory=list)
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)

    def other_discovery(self) -> list[str]:
        """The service discoveries of the job srd does not read (file_sd_configs, …)."""
        return sorted(k for k in self.model_extra or {} if k.endswith("_sd_configs"))


class _Global(_Lenient):
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None


class _PrometheusFile(_Lenient):
    global_: _Global = Field(default_factory=_Global, alias="global")
    scrape_configs: list[_ScrapeConfig] = Field(default_factory=list)


async def scrape_config_targets(
    source: ScrapeConfigSource,
    kubernetes: Configuration | None = None,
    warnings: list[str] | None = None,
) -> list[DiscoveredTarget]:
    """The targets of the jobs of ``source.file``, as Prometheus finds them: static_configs
    and kubernetes_sd_configs (role pod: every port of every running, Ready pod), then the
    job's relabel_configs. URL ``__scheme__://__address____metrics_path__``; labels the
    relabelled ones (``job``, ``instance``…); the job's (or the global) scrape_interval and
    scrape_timeout unless the template sets them. What cannot be honoured is appended to
    ``warnings`` and yields nothing. ``kubernetes`` replaces the API's credentials (tests)."""
    path = source.file
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        parsed = parse_yaml_model(text, str(path), _PrometheusFile)
    except OSError as exc:
        raise DiscoveryError(f"{path}: cannot read: {exc.strerror}") from None
    except ConfigError as exc:
        raise DiscoveryError(str(exc)) from None
    jobs = {job.job_name: (index, job) for index, job in enumerate(parsed.scrape_configs)}
    if missing := sorted(set(source.jobs) - set(jobs)):
        raise DiscoveryError(f"{path}: scrape_configs: no job_name {missing} (source.jobs)")
    found = []
    for job_name, (index, job) in jobs.items():
        if source.jobs and job_name not in source.jobs:
            continue
        defaults = _timing(job, parsed.global_)
        where = f"{path}: scrape_configs[{index}] (job_name {job_name!r})"
        if others := job.other_discovery():
            _warn(
                warnings,
                f"{where}: srd does not read {others}; only static_configs and "
                "kubernetes_sd_configs",
            )
        candidates = [
            {"__address__": address, **static.labels}
            for static in job.static_configs
            for address in static.targets
        ]
        for k, sd in enumerate(job.kubernetes_sd_configs):
            if reason := sd.unhonoured():
                _warn(warnings, f"{where}: kubernetes_sd_configs[{k}]: {reason}; no targets")
                continue
            configuration = kubernetes or await _sd_configuration(sd, where)
            for namespace in sd.namespaces.names:
                pods = await _list_pods(
                    configuration, namespace, sd.label_selector, SD_API_TIMEOUT, where
                )
                candidates += [
                    meta for pod in pods if _running(pod) for meta in _pod_meta(pod, namespace)
                ]
        job_labels = {
            "job": job_name,
            "__scheme__": job.scheme,
            "__metrics_path__": job.metrics_path,
        }
        for candidate in candidates:
            labels = relabel({**job_labels, **candidate}, job.relabel_configs)
            if labels is None or not labels.get("__address__"):
                continue
            address = labels["__address__"]
            url = _url(labels)
            shown = {k: v for k, v in labels.items() if not k.startswith("__")}
            shown.setdefault("instance", address)
            name = target_name(source.name, job_name, address)
            found.append(_make(source, name, url, shown, defaults, where))
    return found


SD_API_TIMEOUT = 10.0
"""Limit of each Kubernetes API call of a scrape config's kubernetes_sd_configs."""


def _warn(warnings: list[str] | None, text: str) -> None:
    if warnings is not None:
        warnings.append(text)


def _url(labels: Mapping[str, str]) -> str:
    params = [
        (k.removeprefix("__param_"), v) for k, v in labels.items() if k.startswith("__param_")
    ]
    query = f"?{urlencode(params)}" if params else ""
    path = labels.get("__metrics_path__", "/metrics")
    return f"{labels.get('__scheme__', 'http')}://{labels['__address__']}{path}{query}"


async def _sd_configuration(sd: _KubernetesSd, where: str) -> Configuration:
    # As Prometheus: the kubeconfig file when given, else api_server (as given, without
    # credentials), else the in-cluster service account; loaded every round (token rotation).
    if sd.kubeconfig_file is None and sd.api_server is not None:
        return Configuration(host=sd.api_server)
    try:
        return await api_configuration(kubeconfig=sd.kubeconfig_file, context=None)
    except kube_config.ConfigException as exc:
        raise DiscoveryError(f"{where}: cannot load Kubernetes credentials: {exc}") from None


def _running(pod: V1Pod) -> bool:
    """Running, Ready, not terminating and with an IP: the pods srd probes (a pod on its
    way up or out would only raise false alerts; a terminating one may still say Ready)."""
    metadata, status = pod.metadata, pod.status
    if metadata.deletion_timestamp is not None or status is None or not status.pod_ip:
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())
    return bool(status.phase == "Running" and ready)


def _pod_meta(pod: V1Pod, namespace: str) -> list[dict[str, str]]:
    """The ``__meta_kubernetes_*`` labels Prometheus' pod role gives: one set per container
    port, or per container that declares none."""
    metadata, status = pod.metadata, pod.status
    prefix = "__meta_kubernetes_pod_"
    common = {
        "__meta_kubernetes_namespace": namespace,
        prefix + "name": metadata.name,
        prefix + "ip": status.pod_ip,
        prefix + "ready": "true",
        prefix + "phase": status.phase,
        prefix + "node_name": (pod.spec.node_name or "") if pod.spec else "",
        prefix + "host_ip": status.host_ip or "",
        prefix + "uid": metadata.uid or "",
    }
    for kind, values in (("label", metadata.labels), ("annotation", metadata.annotations)):
        for key, value in (values or {}).items():
            common[f"{prefix}{kind}_{_sanitise(key)}"] = value
            common[f"{prefix}{kind}present_{_sanitise(key)}"] = "true"
    host = f"[{status.pod_ip}]" if ":" in status.pod_ip else status.pod_ip
    found = []
    for container in pod.spec.containers:
        base = {
            **common,
            prefix + "container_name": container.name,
            prefix + "container_image": container.image or "",
            prefix + "container_init": "false",
        }
        if not container.ports:
            found.append({**base, "__address__": host})
        for port in container.ports or ():
            found.append(
                {
                    **base,
                    "__address__": f"{host}:{port.container_port}",
                    prefix + "container_port_name": port.name or "",
                    prefix + "container_port_number": str(port.container_port),
                    prefix + "container_port_protocol": port.protocol or "TCP",
                }
            )
    return found


def _sanitise(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _timing(job: _ScrapeConfig, defaults: _Global) -> dict[str, Any]:
    timing = {
        "interval": job.scrape_interval or defaults.scrape_interval,
        "timeout": job.scrape_timeout or defaults.scrape_timeout,
    }
    return {key: value for key, value in timing.items() if value is not None}


# Kubernetes pods ---------------------------------------------------------------------------


async def kubernetes_pod_targets(
    source: KubernetesPodsSource, configuration: Configuration | None = None
) -> list[DiscoveredTarget]:
    """Running, Ready, not terminating pods of ``source.namespace`` that match its selector and
    regexes, at ``scheme://podIP:port/path``; labels: the pod's, plus namespace and pod."""
    where = f"kubernetes_pods {source.name!r} (namespace {source.namespace})"
    if configuration is None:
        try:
            configuration = await _load_configuration(source)
        except kube_config.ConfigException as exc:
            raise DiscoveryError(f"{where}: cannot load Kubernetes credentials: {exc}") from None
    pods = await _list_pods(
        configuration, source.namespace, source.label_selector or "", source.api_timeout, where
    )
    found, portless = [], []
    for pod in pods:
        if not _wanted(source, pod):
            continue
        port = _port(source, pod)
        if port is None:
            portless.append(pod.metadata.name)
            continue
        host = pod.status.pod_ip
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        url = f"{source.scheme}://{host}:{port}{source.path}"
        name = pod.metadata.name
        labels = {**(pod.metadata.labels or {}), "namespace": source.namespace, "pod": name}
        found.append(_make(source, target_name(source.name, name), url, labels, {}, where))
    if portless:
        log.warning(
            "pods declare no such port", source=source.name, port=source.port, pods=portless
        )
    return found


async def _list_pods(
    configuration: Configuration,
    namespace: str,
    label_selector: str,
    timeout: float,  # noqa: ASYNC109 - also the API's own request timeout, passed through
    where: str,
) -> list[V1Pod]:
    try:
        async with asyncio.timeout(timeout), ApiClient(configuration) as api:
            pods = await CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=label_selector, _request_timeout=timeout
            )
    except TimeoutError:
        raise DiscoveryError(f"{where}: timeout after {timeout:g}s") from None
    except ApiException as exc:
        raise DiscoveryError(f"{where}: API answered {exc.status} {exc.reason}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise DiscoveryError(f"{where}: {type(exc).__name__}: {exc}") from None
    return list(pods.items)


async def _load_configuration(source: KubernetesPodsSource) -> Configuration:
    # Loaded every round, so rotated service-account tokens and kubeconfig edits are used.
    return await api_configuration(kubeconfig=source.kubeconfig, context=source.context)


def _wanted(source: KubernetesPodsSource, pod: V1Pod) -> bool:
    metadata = pod.metadata
    if source.name_regex is not None and not re.fullmatch(source.name_regex, metadata.name):
        return False
    labels = metadata.labels or {}
    for key, pattern in source.label_regex.items():
        if key not in labels or not re.fullmatch(pattern, labels[key]):
            return False
    return _running(pod)


def _port(source: KubernetesPodsSource, pod: V1Pod) -> int | None:
    if isinstance(source.port, int):
        return source.port
    for container in pod.spec.containers:
        for port in container.ports or ():
            if port.name == source.port:
                return int(port.container_port)
    return None
