"""Discovery: targets from a real Prometheus scrape config file, and Kubernetes pods listed by
the real kubernetes-asyncio client from the fake API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from kubernetes_asyncio.client import Configuration

from srd.config import ConfigError, parse_config
from srd.config.discovery import DiscoveryConfig, KubernetesPodsSource, ScrapeConfigSource
from srd.config.probes import ExporterTarget, HttpTarget
from srd.probes.discovery import (
    Discovery,
    DiscoveryError,
    kubernetes_pod_targets,
    scrape_config_targets,
    target_name,
)
from srd.probes.metrics import ProbeMetrics
from srd.simulate.sandbox.kubernetes import PODS, FakeKubernetes, make_pod

PROMETHEUS_YML = """\
global:
  scrape_interval: 15s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: node
    scrape_interval: 10s
    static_configs:
      - targets: ['10.0.1.10:9100', '10.0.1.11:9100']
        labels: {env: production}
  - job_name: substrate
    scrape_interval: 5s
    scrape_timeout: 4s
    scheme: https
    metrics_path: /node/metrics
    static_configs:
      - targets: ['chain-0.vilokanam.internal:9615']
  - job_name: web
    kubernetes_sd_configs: [{role: pod}]
"""
KEEP = {"keep": ["up"]}


def scrape_source(file: Path, **settings: Any) -> ScrapeConfigSource:
    return ScrapeConfigSource.model_validate(
        {"name": "prom", "file": str(file), "template": KEEP, **settings}
    )


async def test_static_configs_become_exporter_targets_with_job_instance_and_labels(
    tmp_path: Path,
) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(PROMETHEUS_YML)

    found = await scrape_config_targets(scrape_source(file))

    assert [(t.name, t.url) for t in found] == [
        ("prom:node:10.0.1.10:9100", "http://10.0.1.10:9100/metrics"),
        ("prom:node:10.0.1.11:9100", "http://10.0.1.11:9100/metrics"),
        (
            "prom:substrate:chain-0.vilokanam.internal:9615",
            "https://chain-0.vilokanam.internal:9615/node/metrics",
        ),
    ]
    node, _, substrate = found
    assert dict(node.labels) == {"job": "node", "instance": "10.0.1.10:9100", "env": "production"}
    assert node.kind == "exporter" and isinstance(node.target, ExporterTarget)
    assert node.target.keep == ["up"]
    # Each job's scrape_interval and scrape_timeout carry over.
    assert (node.target.interval, substrate.target.interval, substrate.target.timeout) == (
        10.0,
        5.0,
        4.0,
    )


async def test_the_jobs_filter_takes_only_those_jobs_and_the_template_wins_over_the_file(
    tmp_path: Path,
) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(PROMETHEUS_YML)
    source = scrape_source(file, jobs=["node"], template={**KEEP, "interval": "30s"})
    found = await scrape_config_targets(source)
    assert [t.target.interval for t in found] == [30.0, 30.0]
    assert {dict(t.labels)["job"] for t in found} == {"node"}


async def test_a_job_that_is_not_in_the_file_is_an_error_naming_file_and_key(
    tmp_path: Path,
) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(PROMETHEUS_YML)
    with pytest.raises(
        DiscoveryError, match=r"prometheus.yml: scrape_configs: no job_name \['db'\]"
    ):
        await scrape_config_targets(scrape_source(file, jobs=["db"]))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: 10.0.0.1\n",
            "prometheus.yml:4: scrape_configs[0].static_configs[0].targets: ",
        ),
        (
            "scrape_configs:\n  - job_name: node\n    static_configs:\n"
            "      - targets: ['http://10.0.0.1:9100']\n",
            "prometheus.yml:4: scrape_configs[0].static_configs[0].targets[0]: "
            "'http://10.0.0.1:9100' is not host or host:port",
        ),
        (
            "scrape_configs:\n  - static_configs: []\n",
            "prometheus.yml:2: scrape_configs[0].job_name: required key is missing",
        ),
        ("scrape_configs: [\n", "prometheus.yml:2: (top level): invalid YAML"),
    ],
)
async def test_a_malformed_scrape_config_is_an_error_naming_file_line_and_key(
    tmp_path: Path, text: str, error: str
) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(text)
    with pytest.raises(DiscoveryError) as caught:
        await scrape_config_targets(scrape_source(file))
    assert str(caught.value).startswith(f"{file.parent}/{error}")


async def test_a_scrape_interval_below_the_probe_timeout_is_an_error_naming_the_job(
    tmp_path: Path,
) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(
        "scrape_configs:\n  - job_name: fast\n    scrape_interval: 1s\n"
        "    static_configs: [{targets: ['a:1']}]\n"
    )
    with pytest.raises(DiscoveryError) as caught:
        await scrape_config_targets(scrape_source(file))
    message = str(caught.value)
    assert "scrape_configs[0] (job_name 'fast')" in message
    assert "must be greater than 0 and at most the interval" in message


# --- Kubernetes pods ---------------------------------------------------------------------

NS = "vilokanam-web"


@pytest.fixture
async def kubernetes() -> AsyncIterator[tuple[FakeKubernetes, str]]:
    fake = FakeKubernetes()
    async with fake.serving() as url:
        yield fake, url


def platform_pods(fake: FakeKubernetes) -> None:
    """The platform's web pods, in the states a real namespace has them."""
    store = fake.store
    web = {"tier": "web"}
    store.create(PODS, NS, make_pod("web-creator-6c9f-a1", "10.1.0.11", labels=web))
    store.create(PODS, NS, make_pod("web-viewer-7d8e-b2", "10.1.0.12", labels=web))
    store.create(PODS, NS, make_pod("web-viewer-7d8e-c3", "10.1.0.13", labels=web, ready=False))
    store.create(PODS, NS, make_pod("web-viewer-7d8e-d4", None, labels=web, phase="Pending"))
    store.create(PODS, NS, make_pod("web-admin-5b4a-e5", "10.1.0.15", labels=web))
    terminating = make_pod("web-creator-6c9f-f6", "10.1.0.16", labels=web)
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    store.create(PODS, NS, terminating)
    store.create(PODS, NS, make_pod("web-creator-ipv6", "fd00::17", labels=web))


def pods_source(**settings: Any) -> KubernetesPodsSource:
    return KubernetesPodsSource.model_validate(
        {
            "name": "web",
            "namespace": NS,
            "name_regex": "web-(creator|viewer)-.+",
            "port": "http",
            "path": "/health",
            **settings,
        }
    )


async def test_only_running_ready_matching_pods_are_found_at_pod_ip_and_port(
    kubernetes: tuple[FakeKubernetes, str],
) -> None:
    fake, url = kubernetes
    platform_pods(fake)

    found = await kubernetes_pod_targets(pods_source(), Configuration(host=url))

    assert [(t.name, t.url) for t in found] == [
        ("web:web-creator-6c9f-a1", "http://10.1.0.11:8080/health"),
        ("web:web-creator-ipv6", "http://[fd00::17]:8080/health"),
        ("web:web-viewer-7d8e-b2", "http://10.1.0.12:8080/health"),
    ]
    first = found[0]
    assert dict(first.labels) == {"tier": "web", "namespace": NS, "pod": "web-creator-6c9f-a1"}
    assert first.kind == "http" and isinstance(first.target, HttpTarget)


async def test_label_selector_label_regex_and_a_port_number_narrow_and_place_targets(
    kubernetes: tuple[FakeKubernetes, str],
) -> None:
    fake, url = kubernetes
    fake.store.create(PODS, NS, make_pod("a", "10.1.0.1", labels={"app": "web-creator"}))
    fake.store.create(PODS, NS, make_pod("b", "10.1.0.2", labels={"app": "web-viewer"}))
    fake.store.create(PODS, NS, make_pod("c", "10.1.0.3", labels={"app": "web-viewer-canary"}))
    fake.store.create(PODS, NS, make_pod("d", "10.1.0.4", labels={"app": "api"}))
    fake.store.create(PODS, NS, make_pod("e", "10.1.0.5", labels={}))
    source = pods_source(
        name_regex=None,
        label_selector="app!=api",
        label_regex={"app": "web-(creator|viewer)"},
        port=9000,
        scheme="https",
        path="/metrics",
    )
    found = await kubernetes_pod_targets(source, Configuration(host=url))
    assert [t.url for t in found] == [
        "https://10.1.0.1:9000/metrics",
        "https://10.1.0.2:9000/metrics",
    ]


async def test_a_pod_without_the_named_port_is_skipped(
    kubernetes: tuple[FakeKubernetes, str],
) -> None:
    fake, url = kubernetes
    fake.store.create(PODS, NS, make_pod("web-creator-1", "10.1.0.1", ports={"metrics": 9090}))
    assert await kubernetes_pod_targets(pods_source(), Configuration(host=url)) == []


async def test_pods_are_listed_with_credentials_from_a_kubeconfig_file(
    kubernetes: tuple[FakeKubernetes, str], tmp_path: Path
) -> None:
    fake, url = kubernetes
    platform_pods(fake)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""\
apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{url}"}}}}]
users: [{{name: srd, user: {{token: test-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: srd, namespace: {NS}}}}}]
current-context: fake
"""
    )
    found = await kubernetes_pod_targets(pods_source(kubeconfig=str(kubeconfig)))
    assert len(found) == 3


async def test_an_unreachable_api_is_a_discovery_error_naming_source_and_namespace() -> None:
    with pytest.raises(DiscoveryError, match=r"kubernetes_pods 'web' \(namespace vilokanam-web\)"):
        await kubernetes_pod_targets(pods_source(), Configuration(host="http://127.0.0.1:1"))


# --- the Discovery loop --------------------------------------------------------------------


def discovery_config(url_file: Path | None = None, **pods: Any) -> DiscoveryConfig:
    data: dict[str, Any] = {
        "interval": 0.01,
        "kubernetes_pods": [{"name": "web", "namespace": NS, "port": 8080, **pods}],
    }
    if url_file is not None:
        data["scrape_config_files"] = [{"name": "prom", "file": str(url_file), "template": KEEP}]
    return DiscoveryConfig.model_validate(data)


async def test_every_source_is_looked_at_and_counted_per_source(
    kubernetes: tuple[FakeKubernetes, str], tmp_path: Path, metrics: ProbeMetrics
) -> None:
    fake, url = kubernetes
    platform_pods(fake)
    file = tmp_path / "prometheus.yml"
    file.write_text(PROMETHEUS_YML)
    discovery = Discovery(discovery_config(file), metrics, kubernetes=Configuration(host=url))

    found = await discovery.discover()

    assert [t.source for t in found] == ["prom"] * 3 + ["web"] * 4
    gauge = metrics.registry.get_sample_value
    assert gauge("srd_discovered_targets", {"source": "prom"}) == 3
    assert gauge("srd_discovered_targets", {"source": "web"}) == 4


async def test_a_source_finding_more_than_max_targets_keeps_the_first_by_name(
    kubernetes: tuple[FakeKubernetes, str], metrics: ProbeMetrics
) -> None:
    fake, url = kubernetes
    for index in range(12):
        fake.store.create(PODS, NS, make_pod(f"web-creator-{index:02}", f"10.1.1.{index}"))
    config = discovery_config(max_targets=5)
    found = await Discovery(config, metrics, kubernetes=Configuration(host=url)).discover()
    assert [t.name for t in found] == [f"web:web-creator-{index:02}" for index in range(5)]


async def test_a_failing_source_keeps_its_last_targets_and_counts_the_failure(
    metrics: ProbeMetrics,
) -> None:
    fake = FakeKubernetes()
    fake.store.create(PODS, NS, make_pod("web-creator-1", "10.1.0.1"))
    async with fake.serving() as url:
        discovery = Discovery(discovery_config(), metrics, kubernetes=Configuration(host=url))
        before = await discovery.discover()
    after = await discovery.discover()  # the API is gone now

    assert after == before and len(after) == 1
    assert metrics.registry.get_sample_value("srd_discovery_failures_total", {"source": "web"}) == 1


async def test_updates_yield_the_targets_again_only_when_they_change(
    kubernetes: tuple[FakeKubernetes, str], metrics: ProbeMetrics
) -> None:
    fake, url = kubernetes
    fake.store.create(PODS, NS, make_pod("web-creator-1", "10.1.0.1"))
    discovery = Discovery(discovery_config(), metrics, kubernetes=Configuration(host=url))
    updates = discovery.updates()
    try:
        first = await anext(updates)
        fake.store.create(PODS, NS, make_pod("web-viewer-1", "10.1.0.2"))
        second = await anext(updates)
    finally:
        await updates.aclose()
    assert [t.name for t in first] == ["web:web-creator-1"]
    assert [t.name for t in second] == ["web:web-creator-1", "web:web-viewer-1"]


# --- kubernetes_sd_configs jobs of a scrape config ---------------------------------------

SEED_WEB_JOB = """\
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: web-services
    kubernetes_sd_configs:
      - role: pod
        namespaces:
          names: [vilokanam-web]
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: true
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: (.+)
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        action: replace
        regex: ([^:]+)(?::\\d+)?;(\\d+)
        replacement: $1:$2
        target_label: __address__
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_namespace]
        action: replace
        target_label: kubernetes_namespace
      - source_labels: [__meta_kubernetes_pod_name]
        action: replace
        target_label: kubernetes_pod_name
"""
"""The seed's web-services job: pod discovery in vilokanam-web, kept on the
prometheus.io/scrape annotation, scraped at the prometheus.io/port one."""


def annotated_pod(
    name: str, ip: str, annotations: dict[str, str], *, ready: bool = True
) -> dict[str, Any]:
    pod = make_pod(name, ip, labels={"app": name.rsplit("-", 1)[0]}, ready=ready)
    pod["metadata"]["annotations"] = annotations
    return pod


async def test_the_seeds_kubernetes_sd_job_yields_the_annotated_pods_at_their_metrics_port(
    kubernetes: tuple[FakeKubernetes, str], tmp_path: Path
) -> None:
    fake, url = kubernetes
    scraped = {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
    store = fake.store
    store.create(PODS, NS, annotated_pod("web-creator-1", "10.1.0.11", scraped))
    store.create(
        PODS,
        NS,
        annotated_pod(
            "web-viewer-1", "10.1.0.12", {**scraped, "prometheus.io/path": "/internal/metrics"}
        ),
    )
    store.create(PODS, NS, annotated_pod("web-viewer-2", "10.1.0.13", {}))  # not scraped
    store.create(PODS, NS, annotated_pod("web-viewer-3", "10.1.0.14", scraped, ready=False))
    store.create(PODS, "other", annotated_pod("web-viewer-4", "10.1.0.15", scraped))
    file = tmp_path / "prometheus.yml"
    file.write_text(SEED_WEB_JOB)
    warnings: list[str] = []

    found = await scrape_config_targets(scrape_source(file), Configuration(host=url), warnings)

    assert warnings == []
    assert [(t.name, t.url) for t in found] == [
        ("prom:web-services:10.1.0.11:9090", "http://10.1.0.11:9090/metrics"),
        ("prom:web-services:10.1.0.12:9090", "http://10.1.0.12:9090/internal/metrics"),
    ]
    assert dict(found[0].labels) == {
        "job": "web-services",
        "instance": "10.1.0.11:9090",
        "app": "web-creator",
        "kubernetes_namespace": NS,
        "kubernetes_pod_name": "web-creator-1",
    }
    assert found[0].kind == "exporter" and found[0].target.interval == 15.0


UNHONOURED = """\
scrape_configs:
  - job_name: endpoints
    kubernetes_sd_configs: [{role: endpoints, namespaces: {names: [vilokanam-web]}}]
  - job_name: everywhere
    kubernetes_sd_configs: [{role: pod}]
  - job_name: with-credentials
    kubernetes_sd_configs:
      - role: pod
        namespaces: {names: [vilokanam-web]}
        api_server: https://k8s.example:6443
        authorization: {credentials_file: /var/run/token}
  - job_name: field-selected
    kubernetes_sd_configs:
      - role: pod
        namespaces: {names: [vilokanam-web]}
        selectors: [{role: pod, field: spec.nodeName=n1}]
  - job_name: files
    file_sd_configs: [{files: [targets.json]}]
  - job_name: node
    static_configs: [{targets: ['10.0.1.10:9100']}]
"""


async def test_jobs_that_cannot_be_honoured_yield_nothing_and_a_warning_naming_each(
    tmp_path: Path, metrics: ProbeMetrics
) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(UNHONOURED)
    config = DiscoveryConfig.model_validate(
        {"scrape_config_files": [{"name": "prom", "file": str(file), "template": KEEP}]}
    )
    discovery = Discovery(config, metrics, kubernetes=Configuration(host="http://127.0.0.1:1"))

    with structlog.testing.capture_logs() as logged:
        found = await discovery.discover()
        again = await discovery.discover()

    assert [t.name for t in found] == [t.name for t in again] == ["prom:node:10.0.1.10:9100"]
    # Logged once, when they first appear: not at every round.
    reasons = [e["reason"] for e in logged if e["event"] == "scrape config job not honoured"]
    assert [r.split(": ", 1)[1] for r in reasons] == [
        "scrape_configs[0] (job_name 'endpoints'): kubernetes_sd_configs[0]: role 'endpoints': "
        "srd discovers pods only; no targets",
        "scrape_configs[1] (job_name 'everywhere'): kubernetes_sd_configs[0]: srd lists the "
        "namespaces in namespaces.names only; no targets",
        "scrape_configs[2] (job_name 'with-credentials'): kubernetes_sd_configs[0]: srd does "
        "not read ['authorization']; no targets",
        "scrape_configs[3] (job_name 'field-selected'): kubernetes_sd_configs[0]: srd applies "
        "label selectors of role pod only; no targets",
        "scrape_configs[4] (job_name 'files'): srd does not read ['file_sd_configs']; only "
        "static_configs and kubernetes_sd_configs",
    ]
    assert all(e["log_level"] == "warning" for e in logged if e["event"].startswith("scrape"))


async def test_relabel_configs_apply_to_static_targets_too(tmp_path: Path) -> None:
    file = tmp_path / "prometheus.yml"
    file.write_text(
        "scrape_configs:\n  - job_name: node\n"
        "    static_configs: [{targets: ['10.0.1.10:9100', '10.0.1.11:9100']}]\n"
        "    relabel_configs:\n"
        "      - {source_labels: [__address__], regex: '10.0.1.11:.*', action: drop}\n"
        "      - {target_label: __param_collect, replacement: cpu}\n"
    )
    [target] = await scrape_config_targets(scrape_source(file))
    assert target.url == "http://10.0.1.10:9100/metrics?collect=cpu"


def test_target_names_stay_valid_and_bounded_and_unique_when_cut() -> None:
    assert target_name("prom", "my job", "host:9100") == "prom:my_job:host:9100"
    long_a, long_b = target_name("web", "a" * 80), target_name("web", "a" * 79 + "b")
    assert len(long_a) == len(long_b) == 64 and long_a != long_b


# --- config ---------------------------------------------------------------------------------


def config_errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "srd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_the_platforms_web_pods_are_a_valid_discovery_config() -> None:
    config = parse_config(
        """\
discovery:
  interval: 30s
  kubernetes_pods:
    - name: web
      namespace: vilokanam-web
      name_regex: web-(creator|viewer)-.+
      port: http
      path: /health
      template: {interval: 10s, timeout: 2s, expect_status: [200]}
""",
        "srd.yaml",
    )
    [web] = config.discovery.kubernetes_pods
    assert (web.probe, web.template["interval"], web.max_targets) == ("http", "10s", 100)


def test_a_bad_regex_or_port_name_is_a_config_error_naming_the_key() -> None:
    errors = config_errors(
        """\
discovery:
  kubernetes_pods:
    - name: web
      namespace: vilokanam-web
      name_regex: web-(creator
      port: Not_A_Port
"""
    )
    assert errors[0].startswith(
        "srd.yaml:5: discovery.kubernetes_pods[0].name_regex: invalid regular expression"
    )
    assert errors[1].startswith("srd.yaml:6: discovery.kubernetes_pods[0].port: 'Not_A_Port'")


def test_a_template_is_checked_as_the_targets_it_makes() -> None:
    errors = config_errors(
        """\
discovery:
  kubernetes_pods:
    - {name: web, namespace: vilokanam-web, port: 80, template: {timout: 2s}}
    - {name: web2, namespace: vilokanam-web, port: 80, template: {timeout: 20s}}
  scrape_config_files:
    - {name: prom, file: /etc/prometheus/prometheus.yml}
"""
    )
    assert errors == [
        "srd.yaml:6: discovery.scrape_config_files[0]: template.keep: required key is missing",
        "srd.yaml:3: discovery.kubernetes_pods[0]: template.timout: unknown key "
        "(did you mean 'timeout'?)",
        "srd.yaml:4: discovery.kubernetes_pods[1]: timeout (20s) must be greater than 0 and at "
        "most the interval (10s), or polls would overlap",
    ]


def test_discovery_source_names_are_unique() -> None:
    errors = config_errors(
        """\
discovery:
  kubernetes_pods:
    - {name: web, namespace: vilokanam-web, port: 80}
  scrape_config_files:
    - {name: web, file: /etc/prometheus/prometheus.yml, template: {keep: [up]}}
"""
    )
    assert errors == [
        "srd.yaml:1: discovery: discovery source names must be unique; repeated: ['web']"
    ]
