"""The Kubernetes manifests in deploy/kubernetes: they parse, they are complete and safe, the
config they carry is valid, and the RBAC grants exactly the API calls srd makes.

What srd calls is found twice: by reading the code (every kubernetes-asyncio call site) and by
recording the requests the fake API receives while the actuator, discovery and the leader
election run through everything they do. Both must equal the rules granted, so a new call
without a rule, or a rule nothing calls any more, fails here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import Configuration
from prometheus_client import CollectorRegistry

from srd.actuators.kubernetes import KubernetesActuator, KubernetesSettings
from srd.config import parse_config
from srd.config.discovery import KubernetesPodsSource
from srd.config.ha import HaConfig
from srd.failover.leader import LeaseLeadership
from srd.failover.metrics import FailoverMetrics
from srd.probes.discovery import kubernetes_pod_targets
from srd.simulate.sandbox.kubernetes import DR, PRODUCTION, WEB, FakeKubernetes, seed_platform
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
Manifest = dict[str, Any]
Grant = tuple[str, str, str]
"""(API group, resource, verb)."""

KINDS = {
    "deployment": ("apps", "deployments"),
    "service": ("", "services"),
    "pod": ("", "pods"),
    "lease": ("coordination.k8s.io", "leases"),
}
VERBS = {
    "read": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
}
CALL = re.compile(r"\b(read|list|create|replace|patch|delete|watch|connect)_(\w+?)\(")
NAMESPACED = re.compile(r"namespaced_([a-z_]+?)(_scale|_status)?")
# Calls every authenticated identity may make through Kubernetes' default `system:basic-user`
# ClusterRole, so srd's own RBAC must not (and does not) grant them.
GRANTED_TO_EVERYONE = {"create_self_subject_access_review"}


def documents(name: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc is not None]


def every_manifest() -> Iterator[tuple[str, Manifest]]:
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in documents(path.name):
            yield path.name, doc


def of_kind(kind: str) -> list[Manifest]:
    return [doc for _, doc in every_manifest() if doc["kind"] == kind]


def pod_spec(name: str) -> dict[str, Any]:
    (deployment,) = [d for d in documents(name) if d["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def srd_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = [c for c in pod["containers"] if c["name"] == "srd"]
    (container,) = containers
    return container


def test_the_deploy_directory_has_every_manifest_and_each_one_parses() -> None:
    names = {path.name for path in DEPLOY.glob("*.yaml")}
    assert names == {
        "rbac.yaml",
        "deployment.yaml",
        "sidecar-example.yaml",
        "service.yaml",
        "pdb.yaml",
        "configmap.yaml",
        "secret.example.yaml",
    }
    for name, doc in every_manifest():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), name
        assert doc["metadata"].get("name"), name
        if doc["kind"] != "ClusterRole":
            assert doc["metadata"].get("namespace"), f"{name}: {doc['kind']} without namespace"


def test_every_deployment_runs_two_or_more_replicas_as_non_root_on_a_read_only_root() -> None:
    deployments = of_kind("Deployment")
    assert len(deployments) == 2
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["replicas"] >= 2
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", ["deployment.yaml", "sidecar-example.yaml"])
def test_srd_is_probed_on_healthz_names_itself_after_its_pod_and_writes_only_to_volumes(
    name: str,
) -> None:
    pod = pod_spec(name)
    srd = srd_container(pod)
    ports = {port["name"] for port in srd["ports"]}
    assert srd["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert srd["livenessProbe"]["httpGet"]["port"] in ports
    env = {item["name"]: item for item in srd["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {mount["mountPath"]: mount["name"] for mount in srd["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/srd"]], "state_dir must be writable"
    assert "configMap" in volumes[mounts["/etc/srd"]]
    assert srd["args"][:3] == ["run", "--config", "/etc/srd/srd.yaml"]


def test_the_standalone_deployment_gates_readiness_on_readyz_and_takes_secrets_from_a_secret() -> (
    None
):
    pod = pod_spec("deployment.yaml")
    srd = srd_container(pod)
    assert srd["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert srd["startupProbe"]["httpGet"]["path"] == "/healthz"
    (secret,) = documents("secret.example.yaml")
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in srd["volumeMounts"]}
    assert volumes[mounts["/etc/srd/secrets"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes[mounts["/etc/srd"]]["configMap"]["name"] == "srd-config"
    env = {item["name"]: item for item in srd["env"]}
    ref = env["SRD_API_HEALTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert pod["serviceAccountName"] == "srd"


def test_the_sidecar_leaves_the_apps_readiness_alone() -> None:
    pod = pod_spec("sidecar-example.yaml")
    assert "readinessProbe" not in srd_container(pod)
    assert [c["name"] for c in pod["containers"]] == ["app", "srd"]


def test_the_service_and_the_disruption_budget_select_the_srd_pods() -> None:
    (deployment,) = [d for d in documents("deployment.yaml") if d["kind"] == "Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = documents("service.yaml")
    (pdb,) = documents("pdb.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    container_ports = {p["name"] for p in srd_container(pod_spec("deployment.yaml"))["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


@pytest.mark.parametrize("name", ["configmap.yaml", "sidecar-example.yaml"])
def test_the_config_in_each_configmap_is_valid_and_elects_a_leader_on_its_lease(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace = tmp_path / "namespace"
    namespace.write_text("srd")
    monkeypatch.setattr("srd.config.ha.SERVICE_ACCOUNT_NAMESPACE", namespace)
    monkeypatch.setenv("SRD_API_HEALTH_TOKEN", "token")
    token = tmp_path / "webhook-token"
    token.write_text("token")
    (configmap,) = [d for d in documents(name) if d["kind"] == "ConfigMap"]
    text = configmap["data"]["srd.yaml"].replace("/etc/srd/secrets/webhook-token", str(token))

    config = parse_config(text, f"{name}: srd.yaml")

    assert config.ha.mode == "kubernetes"
    assert config.server.host == "0.0.0.0"
    lease_rules = [
        rule
        for role in documents(name) + documents("rbac.yaml")
        if role["kind"] == "Role"
        for rule in role["rules"]
        if "leases" in rule["resources"] and "resourceNames" in rule
    ]
    assert any(config.ha.lease_name in rule["resourceNames"] for rule in lease_rules)


def test_rbac_grants_no_wildcards_and_binds_only_roles_and_accounts_that_exist() -> None:
    roles = {(d["kind"], d["metadata"]["name"]) for d in of_kind("Role") + of_kind("ClusterRole")}
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind("ServiceAccount")
    }
    for role in of_kind("Role") + of_kind("ClusterRole"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']}: wildcard {key}"
    assert not of_kind("ClusterRoleBinding"), "a ClusterRoleBinding grants every namespace"
    for binding in of_kind("RoleBinding"):
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts
    for deployment in of_kind("Deployment"):
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert (deployment["metadata"]["namespace"], account) in accounts


def granted() -> set[Grant]:
    grants = set()
    for role in of_kind("Role") + of_kind("ClusterRole"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants |= {(group, resource, verb) for verb in rule["verbs"]}
    return grants


def called_in_code() -> set[Grant]:
    """Every kubernetes-asyncio call in srd (the simulator's fake server aside)."""
    calls = set()
    for path in (ROOT / "srd").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "simulate" in path.parts or "kubernetes_asyncio" not in text:
            continue
        for verb, rest in CALL.findall(text):
            if f"{verb}_{rest}" in GRANTED_TO_EVERYONE:
                continue
            found = NAMESPACED.fullmatch(rest)
            assert found is not None, f"{path.name}: {verb}_{rest} is not mapped to RBAC here"
            assert found[1] in KINDS, f"{path.name}: add {found[1]} to KINDS and to rbac.yaml"
            group, resource = KINDS[found[1]]
            subresource = f"/{found[2].removeprefix('_')}" if found[2] else ""
            calls.add((group, resource + subresource, VERBS[verb]))
    return calls


REQUEST = re.compile(
    r"/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?"
)
METHODS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def received(fake: FakeKubernetes) -> set[Grant]:
    """The RBAC grants the requests the fake API received need."""
    calls = set()
    for method, path in fake.requests:
        found = REQUEST.fullmatch(path)
        assert found is not None, path
        resource = found["resource"] + (f"/{found['sub']}" if found["sub"] else "")
        verb = METHODS.get(method) or ("get" if found["name"] else "list")
        calls.add((found["group"] or "", resource, verb))
    return calls


@asynccontextmanager
async def recording() -> AsyncIterator[tuple[FakeKubernetes, str]]:
    fake = FakeKubernetes()
    seed_platform(fake)
    async with fake.serving() as url:
        yield fake, url


async def exercise_the_actuator(url: str) -> None:
    actuator = KubernetesActuator(KubernetesSettings(host=url))
    scale: dict[str, Any] = {"namespace": PRODUCTION, "name": "web-primary", "replicas": 0}
    backup: dict[str, Any] = {"namespace": DR, "name": "web-backup", "replicas": 3}
    green: dict[str, Any] = {
        "namespace": WEB,
        "name": "web-service",
        "selector": {"version": "green"},
    }
    colour: dict[str, Any] = {"namespace": WEB, "service": "web-service"}
    try:
        # A manifest of a new Deployment (created, deleted on restore) and of one that exists
        # (replaced, and replaced back).
        for action, params in [
            ("scale_deployment", scale),
            ("scale_deployment", backup),
            ("patch_service_selector", green),
            ("detect_colour", colour),
            ("apply_deployment", {"namespace": WEB, "manifest": web("web-canary")}),
            ("apply_deployment", {"namespace": PRODUCTION, "manifest": web("web-primary")}),
        ]:
            prior = await actuator.snapshot(action, params)
            await actuator.plan(action, params)
            await actuator.apply(action, params)
            await actuator.converged(action, params)
            await actuator.restore(action, params, prior)
    finally:
        await actuator.close()


def web(name: str) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": "web", "image": "registry.example/web:2.0"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


async def exercise_discovery(url: str) -> None:
    source = KubernetesPodsSource.model_validate(
        {"name": "web", "namespace": WEB, "label_selector": "app=web", "port": "http"}
    )
    assert await kubernetes_pod_targets(source, Configuration(host=url))


async def exercise_the_leader(url: str) -> None:
    """Create the Lease, renew it, release it on stop; a second replica takes it over."""
    settings = HaConfig.model_validate(
        {
            "mode": "kubernetes",
            "namespace": "srd",
            "lease_duration": 2,
            "renew_deadline": 1.5,
            "retry_period": 0.1,
            "kubernetes": {"host": url},
        }
    )
    first = LeaseLeadership(settings, "first", FailoverMetrics(CollectorRegistry()))
    second = LeaseLeadership(settings, "second", FailoverMetrics(CollectorRegistry()))
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip((first, second), stops, strict=True)]
    try:
        await eventually(
            lambda: first.is_leader() or second.is_leader(), within=5, what="one leads"
        )
        leader, follower = (first, second) if first.is_leader() else (second, first)
        await asyncio.sleep(0.3)  # renewals
        stops[0 if leader is first else 1].set()
        await eventually(follower.is_leader, within=5, what="the follower leads")
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)


async def test_rbac_grants_exactly_what_the_code_calls_and_what_the_api_receives() -> None:
    async with recording() as (fake, url):
        await exercise_the_actuator(url)
        await exercise_discovery(url)
        await exercise_the_leader(url)

    in_code, requested, rules = called_in_code(), received(fake), granted()

    assert rules - in_code == set(), "granted but never called: remove from rbac.yaml"
    assert in_code - rules == set(), "called but not granted: add to rbac.yaml"
    assert requested == in_code, "the code's calls and the requests the API saw differ"
