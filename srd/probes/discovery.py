"""Targets found at run time: a Prometheus scrape config's static_configs, and Kubernetes pods.

Each source yields ``DiscoveredTarget``s whose ``target`` is a ready probe config (HttpTarget or
ExporterTarget, built from the source's template), so the runtime turns them into probes the way
it does static ones. Sources are looked at again every ``discovery.interval``. A source that
fails keeps its last targets — an API blip must not stop the probing of every pod — and counts
in ``srd_discovery_failures``. Static targets stay under ``probes:`` and are not repeated here.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api, V1Pod
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, field_validator

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
from srd.kubeapi import api_configuration
from srd.probes.metrics import ProbeMetrics

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
        try:
            if isinstance(source, ScrapeConfigSource):
                found = await scrape_config_targets(source)
            else:
                found = await kubernetes_pod_targets(source, self._kubernetes)
        except DiscoveryError as exc:
            self._metrics.discovery_failures.labels(source.name).inc()
            kept = self._last.get(source.name, [])
            log.warning("discovery failed", source=source.name, error=str(exc), kept=len(kept))
            return kept
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


class _StaticConfig(_Lenient):
    targets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?", address):
                raise ValueError(f"{address!r} is not host or host:port")
        return value


class _ScrapeConfig(_Lenient):
    job_name: str
    scheme: Literal["http", "https"] = "http"
    metrics_path: str = Field("/metrics", pattern=r"^/")
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None
    static_configs: list[_StaticConfig] = Field(default_factory=list)


class _Global(_Lenient):
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None


class _PrometheusFile(_Lenient):
    global_: _Global = Field(default_factory=_Global, alias="global")
    scrape_configs: list[_ScrapeConfig] = Field(default_factory=list)


async def scrape_config_targets(source: ScrapeConfigSource) -> list[DiscoveredTarget]:
    """The static_configs targets of ``source.file``: url ``scheme://address/metrics_path``,
    labels ``job``, ``instance`` and the static labels; the job's (or the global)
    scrape_interval and scrape_timeout unless the template sets them."""
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
        for static in job.static_configs:
            for address in static.targets:
                labels = {"job": job_name, "instance": address, **static.labels}
                url = f"{job.scheme}://{address}{job.metrics_path}"
                name = target_name(source.name, job_name, address)
                found.append(_make(source, name, url, labels, defaults, where))
    return found


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
    try:
        async with asyncio.timeout(source.api_timeout):
            if configuration is None:
                configuration = await _load_configuration(source)
            async with ApiClient(configuration) as api:
                pods = await CoreV1Api(api).list_namespaced_pod(
                    source.namespace,
                    label_selector=source.label_selector or "",
                    _request_timeout=source.api_timeout,
                )
    except TimeoutError:
        raise DiscoveryError(f"{where}: timeout after {source.api_timeout:g}s") from None
    except ApiException as exc:
        raise DiscoveryError(f"{where}: API answered {exc.status} {exc.reason}") from None
    except kube_config.ConfigException as exc:
        raise DiscoveryError(f"{where}: cannot load Kubernetes credentials: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise DiscoveryError(f"{where}: {type(exc).__name__}: {exc}") from None
    found, portless = [], []
    for pod in pods.items:
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


async def _load_configuration(source: KubernetesPodsSource) -> Configuration:
    # Loaded every round, so rotated service-account tokens and kubeconfig edits are used.
    return await api_configuration(kubeconfig=source.kubeconfig, context=source.context)


def _wanted(source: KubernetesPodsSource, pod: V1Pod) -> bool:
    metadata, status = pod.metadata, pod.status
    if source.name_regex is not None and not re.fullmatch(source.name_regex, metadata.name):
        return False
    labels = metadata.labels or {}
    for key, pattern in source.label_regex.items():
        if key not in labels or not re.fullmatch(pattern, labels[key]):
            return False
    # A terminating pod may still report Ready for a while; it is about to go away.
    if metadata.deletion_timestamp is not None or status is None or not status.pod_ip:
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())
    return bool(status.phase == "Running" and ready)


def _port(source: KubernetesPodsSource, pod: V1Pod) -> int | None:
    if isinstance(source.port, int):
        return source.port
    for container in pod.spec.containers:
        for port in container.ports or ():
            if port.name == source.port:
                return int(port.container_port)
    return None
