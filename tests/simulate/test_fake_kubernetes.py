"""The fake Kubernetes API answers the real client (kubernetes-asyncio) on the real paths, with
the real shapes, selectors, errors and resourceVersion conflicts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    CoordinationV1Api,
    CoreV1Api,
)
from kubernetes_asyncio.client.exceptions import ApiException

from srd.simulate.sandbox.kubernetes import (
    PODS,
    ApiError,
    FakeKubernetes,
    make_deployment,
    make_pod,
    merge_patch,
    parse_label_selector,
)

NS = "vilokanam-web"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeKubernetes, ApiClient]]:
    kubernetes = FakeKubernetes()
    async with kubernetes.serving() as url, ApiClient(Configuration(host=url)) as api:
        yield kubernetes, api


async def test_the_real_client_lists_pods_with_phase_ip_readiness_and_ports(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    kubernetes, api = fake
    kubernetes.store.create(
        PODS, NS, make_pod("web-creator-1", "10.0.0.5", labels={"app": "web-creator"})
    )
    kubernetes.store.create(PODS, NS, make_pod("web-viewer-1", None, phase="Pending"))

    pods = await CoreV1Api(api).list_namespaced_pod(NS)

    assert pods.kind == "PodList"
    assert int(pods.metadata.resource_version) == kubernetes.store.revision == 2
    creator, viewer = pods.items
    assert creator.metadata.name == "web-creator-1"
    assert creator.metadata.labels == {"app": "web-creator"}
    assert creator.metadata.namespace == NS
    assert creator.status.phase == "Running"
    assert creator.status.pod_ip == "10.0.0.5"
    assert [(c.type, c.status) for c in creator.status.conditions] == [("Ready", "True")]
    assert [(p.name, p.container_port) for p in creator.spec.containers[0].ports] == [
        ("http", 8080)
    ]
    assert viewer.status.phase == "Pending"
    assert viewer.status.pod_ip is None


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web-creator", ["creator"]),
        ("app==web-creator,tier=web", ["creator"]),
        ("app!=web-creator", ["db", "viewer"]),
        ("app in (web-creator, web-viewer)", ["creator", "viewer"]),
        ("app notin (web-creator)", ["db", "viewer"]),
        ("tier", ["creator", "viewer"]),
        ("!tier", ["db"]),
        ("", ["creator", "db", "viewer"]),
    ],
)
async def test_a_label_selector_filters_pods_as_the_api_server_does(
    fake: tuple[FakeKubernetes, ApiClient], selector: str, expected: list[str]
) -> None:
    kubernetes, api = fake
    for name, labels in [
        ("creator", {"app": "web-creator", "tier": "web"}),
        ("viewer", {"app": "web-viewer", "tier": "web"}),
        ("db", {"app": "postgres"}),
    ]:
        kubernetes.store.create(PODS, NS, make_pod(name, "10.0.0.9", labels=labels))
    pods = await CoreV1Api(api).list_namespaced_pod(NS, label_selector=selector)
    assert [pod.metadata.name for pod in pods.items] == expected


def test_an_unparsable_label_selector_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector("app in web")
    assert caught.value.code == 400


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status object the API answered with."""
    assert error.body is not None
    status: dict[str, Any] = json.loads(error.body)
    return status


async def test_a_missing_object_is_a_404_status(fake: tuple[FakeKubernetes, ApiClient]) -> None:
    _, api = fake
    with pytest.raises(ApiException) as caught:
        await CoreV1Api(api).read_namespaced_pod("absent", NS)
    assert (caught.value.status, status_of(caught.value)["reason"]) == (404, "NotFound")


async def test_creating_an_object_twice_is_a_409_already_exists(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    _, api = fake
    lease: Any = {"metadata": {"name": "srd-leader"}, "spec": {"holderIdentity": "a"}}
    await CoordinationV1Api(api).create_namespaced_lease(NS, lease)
    with pytest.raises(ApiException) as caught:
        await CoordinationV1Api(api).create_namespaced_lease(NS, lease)
    assert (caught.value.status, status_of(caught.value)["reason"]) == (409, "AlreadyExists")


async def test_a_lease_write_with_a_stale_resource_version_is_a_409_conflict(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    _, api = fake
    leases = CoordinationV1Api(api)
    body: Any = {"metadata": {"name": "srd-leader"}, "spec": {"holderIdentity": "replica-a"}}
    created = await leases.create_namespaced_lease(NS, body)
    seen = created.metadata.resource_version

    created.spec.holder_identity = "replica-b"
    renewed = await leases.replace_namespaced_lease("srd-leader", NS, created)
    assert int(renewed.metadata.resource_version) > int(seen)
    assert renewed.spec.holder_identity == "replica-b"

    # A replica that read the lease before replica-b took it must lose, not overwrite.
    stale: Any = {"metadata": {"name": "srd-leader", "resourceVersion": seen}, "spec": body["spec"]}
    with pytest.raises(ApiException) as caught:
        await leases.replace_namespaced_lease("srd-leader", NS, stale)
    assert caught.value.status == 409
    assert "the object has been modified" in status_of(caught.value)["message"]
    with pytest.raises(ApiException) as patched:
        await leases.patch_namespaced_lease("srd-leader", NS, stale)
    assert patched.value.status == 409
    current = await leases.read_namespaced_lease("srd-leader", NS)
    assert current.spec.holder_identity == "replica-b"


async def test_scaling_a_deployment_through_its_scale_subresource_updates_spec_and_status(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    _, api = fake
    apps = AppsV1Api(api)
    backup: Any = make_deployment("web-backup", 0)  # the client sends a dict body as it is
    await apps.create_namespaced_deployment("vilokanam-dr", backup)

    scale = await apps.patch_namespaced_deployment_scale(
        "web-backup", "vilokanam-dr", {"spec": {"replicas": 3}}
    )
    assert (scale.kind, scale.spec.replicas, scale.status.selector) == (
        "Scale",
        3,
        "app=web-backup",
    )

    backup = await apps.read_namespaced_deployment("web-backup", "vilokanam-dr")
    assert backup.spec.replicas == 3
    assert backup.metadata.generation == 2
    assert (backup.status.ready_replicas, backup.status.observed_generation) == (3, 2)

    current = await apps.read_namespaced_deployment_scale("web-backup", "vilokanam-dr")
    current.spec.replicas = 0
    assert (
        await apps.replace_namespaced_deployment_scale("web-backup", "vilokanam-dr", current)
    ).spec.replicas == 0
    with pytest.raises(ApiException) as caught:  # ``current`` is now stale
        await apps.replace_namespaced_deployment_scale("web-backup", "vilokanam-dr", current)
    assert caught.value.status == 409


async def test_patching_a_service_selector_switches_blue_to_green(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    _, api = fake
    core = CoreV1Api(api)
    service: Any = {
        "metadata": {"name": "web-service"},
        "spec": {"selector": {"app": "web", "version": "blue"}, "ports": [{"port": 80}]},
    }
    created = await core.create_namespaced_service("vilokanam-production", service)
    patched = await core.patch_namespaced_service(
        "web-service", "vilokanam-production", {"spec": {"selector": {"version": "green"}}}
    )
    assert patched.spec.selector == {"app": "web", "version": "green"}
    assert patched.metadata.uid == created.metadata.uid
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)


async def test_a_json_patch_is_refused_with_415_rather_than_misapplied(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    kubernetes, api = fake
    kubernetes.store.create(PODS, NS, make_pod("web-creator-1", "10.0.0.5"))
    with pytest.raises(ApiException) as caught:
        await CoreV1Api(api).patch_namespaced_pod(
            "web-creator-1", NS, [{"op": "remove", "path": "/metadata/labels"}]
        )
    assert caught.value.status == 415


def test_a_merge_patch_merges_maps_deletes_nulls_and_replaces_lists() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}
    patch = {"a": {"b": None, "d": 3}, "l": [3], "k": None}
    assert merge_patch(target, patch) == {"a": {"c": 2, "d": 3}, "l": [3]}


async def test_deleting_a_pod_removes_it_from_the_list(
    fake: tuple[FakeKubernetes, ApiClient],
) -> None:
    kubernetes, api = fake
    kubernetes.store.create(PODS, NS, make_pod("web-creator-1", "10.0.0.5"))
    core = CoreV1Api(api)
    await core.delete_namespaced_pod("web-creator-1", NS)
    assert (await core.list_namespaced_pod(NS)).items == []
