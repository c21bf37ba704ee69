"""The kubernetes actuator against the fake API server, through the real kubernetes-asyncio
client: snapshots, plans that change nothing, idempotent applies, rollout waits, exact
restores, and errors classified as retryable or permanent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from srd.actuators.base import Actuator, ActuatorError
from srd.actuators.kubernetes import CONFLICT_RETRIES, KubernetesActuator, KubernetesSettings
from srd.simulate.sandbox import kubernetes as fake_kubernetes
from srd.simulate.sandbox.kubernetes import (
    DEPLOYMENTS,
    DR,
    PODS,
    PRODUCTION,
    SERVICES,
    WEB,
    ApiFault,
    FakeKubernetes,
    make_pod,
    replicas,
    seed_platform,
)
from tests.support.servers import running

PRIMARY = {"namespace": PRODUCTION, "name": "web-primary", "replicas": 0}
BACKUP = {"namespace": DR, "name": "web-backup", "replicas": 3}
GREEN = {"namespace": WEB, "name": "web-service", "selector": {"version": "green"}}


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[FakeKubernetes, KubernetesActuator]]:
    fake = FakeKubernetes()
    seed_platform(fake)
    async with fake.serving() as url:
        actuator = KubernetesActuator(KubernetesSettings(host=url))
        try:
            yield fake, actuator
        finally:
            await actuator.close()


def selector(fake: FakeKubernetes) -> dict[str, str]:
    return dict(fake.store.get(SERVICES, WEB, "web-service")["spec"]["selector"])


def test_the_actuator_fulfils_the_contract_and_names_its_actions() -> None:
    actuator = KubernetesActuator(KubernetesSettings())
    assert isinstance(actuator, Actuator)
    assert actuator.actions() == {
        "scale_deployment",
        "patch_service_selector",
        "apply_deployment",
        "detect_colour",
    }


def manifest(colour: str, image: str, replicas: int = 3) -> dict[str, Any]:
    """A colour's Deployment manifest, as the blue-green runbook applies it."""
    labels = {"app": "web", "version": colour}
    container = {"name": "web", "image": image}
    return {
        "namespace": WEB,
        "manifest": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"web-{colour}", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    }


def image(fake: FakeKubernetes, name: str) -> str:
    deployment = fake.store.get(DEPLOYMENTS, WEB, name)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_applying_a_manifest_replaces_the_deployment_waits_for_its_rollout_and_restores(
    cluster: tuple[FakeKubernetes, KubernetesActuator], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, actuator = cluster
    green = manifest("green", "registry.example/web:2.0")
    prior = await actuator.snapshot("apply_deployment", green)
    assert prior["deployment"]["spec"]["replicas"] == 0
    plan = await actuator.plan("apply_deployment", green)
    assert plan.changes == (
        "deployment vilokanam-web/web-green images: (none) → web=registry.example/web:2.0",
        "deployment vilokanam-web/web-green replicas: 0 → 3",
    )

    # The controller is slow: the new generation is not rolled out until it catches up.
    monkeypatch.setattr(fake_kubernetes, "_deployment_converged", lambda deployment: None)
    await actuator.apply("apply_deployment", green)
    assert image(fake, "web-green") == "registry.example/web:2.0"
    assert not await actuator.converged("apply_deployment", green)
    revision = fake.store.revision
    await actuator.apply("apply_deployment", green)
    assert fake.store.revision == revision, "applied again: the manifest is in place already"
    monkeypatch.undo()
    # The controller catches up (in the fake, on the Deployment's next write).
    fake.store.patch(DEPLOYMENTS, WEB, "web-green", {"metadata": {"annotations": {"x": "1"}}})
    assert await actuator.converged("apply_deployment", green)
    assert (await actuator.plan("apply_deployment", green)).noop

    await actuator.restore("apply_deployment", green, prior)
    assert replicas(fake, WEB, "web-green") == 0
    assert not await actuator.converged("apply_deployment", green)


async def test_a_manifest_of_a_new_deployment_creates_it_and_restoring_deletes_it(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    canary = manifest("canary", "registry.example/web:2.0", replicas=1)
    prior = await actuator.snapshot("apply_deployment", canary)
    assert prior == {"deployment": None}
    await actuator.apply("apply_deployment", canary)
    assert await actuator.converged("apply_deployment", canary)
    await actuator.restore("apply_deployment", canary, prior)
    assert fake.store.select(DEPLOYMENTS, WEB, "version=canary") == []


async def test_the_active_colour_is_read_from_the_service_selector_and_nothing_changes(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    params = {"namespace": WEB, "service": "web-service"}
    revision = fake.store.revision
    assert await actuator.snapshot("detect_colour", params) == {"active": "blue", "idle": "green"}
    assert (await actuator.plan("detect_colour", params)).noop
    assert await actuator.apply("detect_colour", params) == {"active": "blue", "idle": "green"}
    assert fake.store.revision == revision

    with pytest.raises(ActuatorError, match="green was expected to be active, but blue is") as info:
        await actuator.snapshot("detect_colour", {**params, "expect": "green"})
    assert not info.value.retryable
    fake.store.patch(SERVICES, WEB, "web-service", {"spec": {"selector": {"version": "red"}}})
    with pytest.raises(ActuatorError, match=r"version=red is neither of \['blue', 'green'\]"):
        await actuator.snapshot("detect_colour", params)


async def test_scaling_snapshots_applies_converges_and_restores_the_prior_replicas(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    prior = await actuator.snapshot("scale_deployment", PRIMARY)
    assert prior == {"replicas": 3}

    assert await actuator.apply("scale_deployment", PRIMARY) == {"replicas": 0}
    assert replicas(fake, PRODUCTION, "web-primary") == 0
    assert await actuator.converged("scale_deployment", PRIMARY)

    await actuator.restore("scale_deployment", PRIMARY, prior)
    assert replicas(fake, PRODUCTION, "web-primary") == 3
    assert not await actuator.converged("scale_deployment", PRIMARY)


async def test_a_plan_shows_the_replica_diff_and_writes_nothing(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    revision = fake.store.revision

    plan = await actuator.plan("scale_deployment", PRIMARY)
    await actuator.snapshot("scale_deployment", PRIMARY)

    assert plan.target == "deployment vilokanam-production/web-primary"
    assert plan.changes == ("deployment vilokanam-production/web-primary replicas: 3 → 0",)
    assert fake.store.revision == revision
    assert replicas(fake, PRODUCTION, "web-primary") == 3


async def test_applying_twice_writes_once_and_then_plans_nothing(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    revision = fake.store.revision
    await actuator.apply("scale_deployment", BACKUP)
    await actuator.apply("scale_deployment", BACKUP)
    assert fake.store.revision == revision + 1
    assert replicas(fake, DR, "web-backup") == 3
    assert (await actuator.plan("scale_deployment", BACKUP)).noop


async def test_a_rollout_is_not_converged_until_the_controller_catches_up(
    cluster: tuple[FakeKubernetes, KubernetesActuator], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, actuator = cluster
    # The fake's controller stalls: status keeps describing the previous generation.
    monkeypatch.setattr(fake_kubernetes, "_deployment_converged", lambda deployment: None)
    await actuator.apply("scale_deployment", BACKUP)
    assert not await actuator.converged("scale_deployment", BACKUP)

    # Pods come up, but one is not ready yet.
    monkeypatch.undo()
    fake.store.patch(DEPLOYMENTS, DR, "web-backup", {})
    status = {"status": {"readyReplicas": 2}}
    monkeypatch.setattr(fake_kubernetes, "_deployment_converged", lambda deployment: None)
    fake.store.patch(DEPLOYMENTS, DR, "web-backup", status)
    assert not await actuator.converged("scale_deployment", BACKUP)

    monkeypatch.undo()
    fake.store.patch(DEPLOYMENTS, DR, "web-backup", {})
    assert await actuator.converged("scale_deployment", BACKUP)


async def test_a_selector_patch_switches_blue_to_green_and_restore_removes_what_it_added(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    params = {**GREEN, "selector": {"version": "green", "track": "stable"}}
    fake.store.create(
        PODS,
        WEB,
        make_pod("web-green-2", "10.0.0.7", labels={"app": "web", "version": "green"}),
    )
    prior = await actuator.snapshot("patch_service_selector", params)
    assert prior == {"selector": {"app": "web", "version": "blue"}}
    plan = await actuator.plan("patch_service_selector", params)
    assert plan.changes == (
        "service vilokanam-web/web-service selector track: (absent) → stable",
        "service vilokanam-web/web-service selector version: blue → green",
    )

    after = await actuator.apply("patch_service_selector", params)
    assert after == {"selector": {"app": "web", "version": "green", "track": "stable"}}
    assert selector(fake) == after["selector"]
    # No pod carries track=stable: the Service would have no endpoints.
    assert not await actuator.converged("patch_service_selector", params)
    fake.store.patch(PODS, WEB, "web-green-2", {"metadata": {"labels": {"track": "stable"}}})
    assert await actuator.converged("patch_service_selector", params)

    await actuator.restore("patch_service_selector", params, prior)
    assert selector(fake) == {"app": "web", "version": "blue"}


async def test_a_selector_is_not_converged_while_its_only_pod_is_unready(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    unready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    fake.store.patch(PODS, WEB, "web-green-1", unready)
    await actuator.apply("patch_service_selector", GREEN)
    assert not await actuator.converged("patch_service_selector", GREEN)


async def test_a_concurrent_edit_between_read_and_write_is_reread_and_reapplied(
    cluster: tuple[FakeKubernetes, KubernetesActuator], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, actuator = cluster
    patch = fake.store.patch

    def someone_else_first(*args: Any) -> Any:
        monkeypatch.setattr(fake.store, "patch", patch)
        patch(SERVICES, WEB, "web-service", {"metadata": {"annotations": {"by": "kubectl"}}})
        return patch(*args)

    monkeypatch.setattr(fake.store, "patch", someone_else_first)
    await actuator.apply("patch_service_selector", GREEN)
    assert selector(fake) == {"app": "web", "version": "green"}
    # The other writer's change survived: the retry read it afresh rather than overwrite it.
    assert fake.store.get(SERVICES, WEB, "web-service")["metadata"]["annotations"]


async def test_conflicts_on_scale_are_retried_with_fresh_reads_a_bounded_number_of_times(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    writes = frozenset({"patch", "update"})
    passing = ApiFault(409, writes, frozenset({"deployments/scale"}), times=CONFLICT_RETRIES)
    fake.faults.append(passing)
    assert await actuator.apply("scale_deployment", BACKUP) == {"replicas": 3}
    assert passing.answered == CONFLICT_RETRIES
    assert replicas(fake, DR, "web-backup") == 3

    fake.faults[:] = [ApiFault(409, writes, frozenset({"deployments/scale"}))]
    with pytest.raises(ActuatorError, match=r"changed by someone else.*after 4 fresh") as caught:
        await actuator.apply("scale_deployment", PRIMARY)
    assert caught.value.retryable  # the executor tries again later, within the step
    assert fake.faults[0].answered == CONFLICT_RETRIES + 1
    assert replicas(fake, PRODUCTION, "web-primary") == 3


async def test_server_errors_and_throttling_are_retried_with_backoff_within_the_api_timeout(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    fake.faults.append(ApiFault(503, times=3))
    began = time.monotonic()
    assert await actuator.snapshot("scale_deployment", PRIMARY) == {"replicas": 3}
    assert time.monotonic() - began >= 0.2 + 0.4 + 0.8  # backoff doubles from 0.2 s

    throttle = ApiFault(429, frozenset({"patch"}), times=1, retry_after=1)
    fake.faults[:] = [throttle]
    began = time.monotonic()
    await actuator.apply("scale_deployment", PRIMARY)
    assert time.monotonic() - began >= 1.0  # as the Retry-After asked
    assert throttle.answered == 1
    assert replicas(fake, PRODUCTION, "web-primary") == 0


async def test_an_api_failing_beyond_the_timeout_is_a_retryable_error_with_its_last_answer() -> (
    None
):
    fake = FakeKubernetes()
    seed_platform(fake)
    fake.faults.append(ApiFault(500, frozenset({"get"}), frozenset({"deployments/scale"})))
    async with fake.serving() as url:
        actuator = KubernetesActuator(KubernetesSettings(host=url, api_timeout=1.0))
        try:
            with pytest.raises(ActuatorError, match="read timed out after 1s; the API last") as err:
                await actuator.snapshot("scale_deployment", PRIMARY)
        finally:
            await actuator.close()
    assert "500 the server is unable to handle the request (InternalError)" in str(err.value)
    assert err.value.retryable
    assert fake.faults[0].answered >= 3


async def test_access_reviews_name_each_call_the_credentials_may_not_make(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    fake, actuator = cluster
    revision = fake.store.revision
    assert await actuator.denied("scale_deployment", BACKUP) == []
    fake.allowed = {("get", "deployments/scale"), ("get", "deployments"), ("get", "services")}
    assert await actuator.denied("scale_deployment", BACKUP) == [
        "patch deployments/scale in vilokanam-dr (no RBAC rule allows patch on deployments/scale)"
    ]
    denied = await actuator.denied("patch_service_selector", GREEN)
    assert [d.split(" (")[0] for d in denied] == [
        "patch services in vilokanam-web",
        "list pods in vilokanam-web",
    ]
    assert fake.store.revision == revision  # reviews are read-only


async def test_a_missing_deployment_is_a_permanent_error_naming_it(
    cluster: tuple[FakeKubernetes, KubernetesActuator],
) -> None:
    _, actuator = cluster
    params = {**PRIMARY, "name": "web-tertiary"}
    with pytest.raises(ActuatorError, match="vilokanam-production/web-tertiary does not exist"):
        await actuator.snapshot("scale_deployment", params)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(403, False), (404, False), (422, False), (409, True), (429, True), (500, True), (503, True)],
)
async def test_api_answers_are_classified_retryable_or_permanent(
    status: int, retryable: bool
) -> None:
    async def answer(request: web.Request) -> web.Response:
        body = {"kind": "Status", "status": "Failure", "message": "said no", "code": status}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with running(app) as server:
        # Retryable answers are retried until the API timeout; the error keeps the last one.
        settings = KubernetesSettings(host=server.url, api_timeout=0.5)
        actuator = KubernetesActuator(settings)
        try:
            with pytest.raises(ActuatorError, match="said no") as caught:
                await actuator.apply("scale_deployment", PRIMARY)
        finally:
            await actuator.close()
    assert caught.value.retryable is retryable


async def test_an_unreachable_api_server_is_a_retryable_error() -> None:
    async with running(web.Application()) as server:
        pass
    actuator = KubernetesActuator(KubernetesSettings(host=server.url))
    try:
        with pytest.raises(ActuatorError, match="web-primary: read failed") as caught:
            await actuator.snapshot("scale_deployment", PRIMARY)
    finally:
        await actuator.close()
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        ("scale_deployment", {**PRIMARY, "replicas": -1}, "replicas: Input should be greater"),
        ("scale_deployment", {"namespace": PRODUCTION, "name": "x"}, "replicas: required"),
        ("scale_deployment", {**PRIMARY, "replica": 1}, "replica: unknown parameter"),
        (
            "patch_service_selector",
            {**GREEN, "selector": {}},
            "selector: Dictionary should",
        ),
        ("patch_service_selector", {**GREEN, "selector": {"v": "a b"}}, "not a Kubernetes label"),
        ("restart_deployment", PRIMARY, "no action 'restart_deployment'; it offers: apply_"),
        (
            "apply_deployment",
            {"namespace": WEB, "manifest": {"apiVersion": "v1", "kind": "Service"}},
            "must be an apps/v1 Deployment",
        ),
        (
            "detect_colour",
            {"namespace": WEB, "service": "web-service", "colours": ["blue", "blue"]},
            "give two different colours",
        ),
    ],
)
def test_bad_params_are_refused_at_validation_naming_the_parameter(
    action: str, params: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        KubernetesActuator(KubernetesSettings()).validate(action, params)


async def test_credentials_and_server_come_from_a_kubeconfig(tmp_path: Path) -> None:
    fake = FakeKubernetes()
    seed_platform(fake)
    async with fake.serving() as url:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            f"""
apiVersion: v1
kind: Config
clusters: [{{name: sandbox, cluster: {{server: "{url}"}}}}]
users: [{{name: srd, user: {{token: sandbox-token}}}}]
contexts: [{{name: drill, context: {{cluster: sandbox, user: srd}}}}]
current-context: other
"""
        )
        settings = KubernetesSettings(kubeconfig=kubeconfig, context="drill")
        actuator = KubernetesActuator(settings)
        try:
            assert await actuator.snapshot("scale_deployment", PRIMARY) == {"replicas": 3}
        finally:
            await actuator.close()


async def test_an_unreadable_kubeconfig_is_a_permanent_error(tmp_path: Path) -> None:
    actuator = KubernetesActuator(KubernetesSettings(kubeconfig=tmp_path / "missing"))
    try:
        with pytest.raises(ActuatorError, match="cannot load Kubernetes credentials") as caught:
            await actuator.snapshot("scale_deployment", PRIMARY)
    finally:
        await actuator.close()
    assert not caught.value.retryable
