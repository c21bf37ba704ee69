"""The shipped blue-green deploy (rules/runbooks/blue_green.yaml) run by the executor through
the real kubernetes actuator against the fake API server, on fake time: the switch-back on a
failed health check, and the old colour kept an hour then scaled to 0 — across a leader
change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from srd.actuators.kubernetes import KubernetesActuator, KubernetesSettings
from srd.failover.executor import ACTUATOR_RETRY, Executor
from srd.failover.runbooks import Runbook, input_issues, parse_runbooks
from srd.journal import Fence
from srd.simulate.sandbox import kubernetes as fake_kubernetes
from srd.simulate.sandbox.kubernetes import (
    DEPLOYMENTS,
    SERVICES,
    WEB,
    FakeKubernetes,
    replicas,
    seed_platform,
)
from tests.support.failoverkit import Kit, kit

SHIPPED = Path(__file__).parents[2] / "rules" / "runbooks" / "blue_green.yaml"
IMAGE = "registry.example/vilokanam/web:2.0"
"""What the tests deploy: the runbook's ``image`` input, as ``srd execute --var`` gives it."""
DEFAULT_IMAGE = "registry.example/vilokanam/web:latest"
HOUR = 3600.0


@dataclass
class Cluster:
    fake: FakeKubernetes
    url: str

    def colour(self) -> str:
        return str(self.fake.store.get(SERVICES, WEB, "web-service")["spec"]["selector"]["version"])

    def image(self, name: str) -> str | None:
        spec = self.fake.store.get(DEPLOYMENTS, WEB, name)["spec"]["template"]["spec"]
        containers = spec.get("containers") or [{}]
        found = containers[0].get("image")
        return None if found is None else str(found)

    def writes(self, resource: str) -> int:
        return sum(
            method in ("POST", "PUT", "PATCH") and f"/{resource}" in path
            for method, path in self.fake.requests
        )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    fake = FakeKubernetes()
    seed_platform(fake)
    async with fake.serving() as url:
        yield Cluster(fake, url)


def deploy_runbook(actuator: KubernetesActuator, rollout: str = "300s") -> Runbook:
    text = SHIPPED.read_text().replace("timeout: 300s", f"timeout: {rollout}")
    runbooks = parse_runbooks(text, str(SHIPPED), {"kubernetes": actuator})
    [runbook] = [r for r in runbooks if r.name == "blue_green_deploy"]
    return runbook


Sleep = Callable[[float], Awaitable[None]]


@asynccontextmanager
async def replica(k: Kit, url: str, sleep: Sleep) -> AsyncIterator[Executor]:
    """An srd process: its own actuator and executor, the kit's journal, guards and checks."""
    actuator = KubernetesActuator(KubernetesSettings(host=url))
    try:
        yield Executor(
            journal=k.journal,
            actuators={"kubernetes": actuator},
            guards=k.guards,
            checks=k.checks,
            metrics=k.metrics,
            escalate=k.escalations.append,
            poll_interval=0.01,
            retry=replace(ACTUATOR_RETRY, initial=0.01),
            clock=k.clock,
            sleep=sleep,
        )
    finally:
        await actuator.close()


def fake_sleep(k: Kit, slept: list[float]) -> Sleep:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        k.clock.now += seconds
        await asyncio.sleep(0)

    return sleep


async def test_a_failed_health_check_switches_back_to_the_old_colour(
    tmp_path: Path, cluster: Cluster
) -> None:
    async with kit(tmp_path, check=False) as k:
        slept: list[float] = []
        async with replica(k, cluster.url, fake_sleep(k, slept)) as executor:
            runbook = deploy_runbook(KubernetesActuator(KubernetesSettings()))
            execution = await k.execution(runbook, labels={"image": IMAGE})
            assert await executor.run(runbook, execution) == "rolled_back"

        assert cluster.colour() == "blue", "switched back"
        assert cluster.writes("services") == 2, "switched to green, then back"
        assert cluster.image("web-green") is None, "green's Deployment is as it was"
        assert replicas(cluster.fake, WEB, "web-green") == 0
        assert replicas(cluster.fake, WEB, "web-blue") == 3
        assert slept == [30.0], "the 30 s wait, and never the hour"
        steps = await k.journal.steps(execution.id)
        ended = [(s.name, s.result) for s in steps if s.phase == "ended"]
        assert ended == [
            ("detect_active_colour", "ok"),
            ("deploy_idle_colour", "ok"),
            ("switch_to_idle_colour", "ok"),
            ("settle", "ok"),
            ("health_check", "failed"),
            ("switch_to_idle_colour:compensate", "compensated"),
            ("deploy_idle_colour:compensate", "compensated"),
            ("detect_active_colour:compensate", "compensated"),
        ]
        [page] = k.escalations
        assert "step health_check failed" in dict(page.annotations)["summary"]


async def test_a_rollout_not_complete_in_time_never_switches_the_selector(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The controller never rolls the new pods out (an image that does not pull).
    monkeypatch.setattr(fake_kubernetes, "_deployment_converged", lambda deployment: None)
    async with kit(tmp_path, check=True) as k:
        async with replica(k, cluster.url, fake_sleep(k, [])) as executor:
            runbook = deploy_runbook(KubernetesActuator(KubernetesSettings()), rollout="0.2s")
            execution = await k.execution(runbook, labels={"image": IMAGE})
            assert await executor.run(runbook, execution) == "rolled_back"
        assert cluster.writes("services") == 0
        assert cluster.colour() == "blue"
        assert cluster.image("web-green") is None


async def test_the_old_colour_is_kept_an_hour_then_scaled_to_zero_across_a_leader_change(
    tmp_path: Path, cluster: Cluster
) -> None:
    async with kit(tmp_path, check=True) as k:
        k.leader.fenced_as = Fence("srd-0", 1)
        runbook = deploy_runbook(KubernetesActuator(KubernetesSettings()))
        execution = await k.execution(runbook, labels={"image": IMAGE})
        waiting = asyncio.Event()

        async def until_killed(seconds: float) -> None:
            if seconds < HOUR:
                k.clock.now += seconds
                return
            waiting.set()
            await asyncio.Event().wait()  # the process dies during the hour

        async with replica(k, cluster.url, until_killed) as first:
            task = asyncio.create_task(first.run(runbook, execution))
            await asyncio.wait_for(waiting.wait(), 10)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert cluster.colour() == "green"
        assert cluster.image("web-green") == IMAGE
        assert replicas(cluster.fake, WEB, "web-blue") == 3, "the old colour is kept"
        deploys = cluster.writes("deployments")

        k.clock.now += 40 * 60  # 40 minutes later, another replica leads
        k.leader.fenced_as = Fence("srd-1", 2)
        slept: list[float] = []
        async with replica(k, cluster.url, fake_sleep(k, slept)) as second:
            record = await k.journal.execution(execution.id)
            assert record is not None and record.state == "running"
            assert await second.resume(runbook, record) == "succeeded"

        assert slept == [pytest.approx(20 * 60)], "only what was left of the hour"
        assert replicas(cluster.fake, WEB, "web-blue") == 0
        assert cluster.colour() == "green"
        assert cluster.writes("deployments") == deploys + 1, "only the scale-down; no redeploy"
        started = [s.name for s in await k.journal.steps(execution.id) if s.phase == "started"]
        assert started.count("deploy_idle_colour") == 1
        assert started.count("keep_old_colour") == 2


async def test_a_switch_back_during_the_hour_keeps_the_old_colour_up(
    tmp_path: Path, cluster: Cluster
) -> None:
    async with kit(tmp_path, check=True) as k:
        runbook = deploy_runbook(KubernetesActuator(KubernetesSettings()))
        execution = await k.execution(runbook)

        async def hour(seconds: float) -> None:
            k.clock.now += seconds
            if seconds >= HOUR:
                # Green failed later on, and blue_green_to_blue switched back to blue.
                selector = {"spec": {"selector": {"version": "blue"}}}
                cluster.fake.store.patch(SERVICES, WEB, "web-service", selector)

        async with replica(k, cluster.url, hour) as executor:
            assert await executor.run(runbook, execution) == "rolled_back"
        assert replicas(cluster.fake, WEB, "web-blue") == 3
        assert cluster.colour() == "blue"
        steps = await k.journal.steps(execution.id)
        ended = {s.name: s.result for s in steps if s.phase == "ended"}
        assert ended["still_on_new_colour"] == "failed"
        assert "scale_old_colour_down" not in ended


async def test_the_image_is_the_callers_input_or_else_the_runbooks_default(
    tmp_path: Path, cluster: Cluster
) -> None:
    async with kit(tmp_path, check=True) as k:
        actuator = KubernetesActuator(KubernetesSettings())
        runbook = deploy_runbook(actuator)
        assert runbook.inputs == {"image": DEFAULT_IMAGE}
        actuators = {"kubernetes": actuator}
        assert input_issues(runbook, {"image": ""}, actuators) == ["input image is empty"]
        assert input_issues(runbook, {"image": IMAGE}, actuators) == []
        slept: list[float] = []
        async with replica(k, cluster.url, fake_sleep(k, slept)) as executor:
            first = await k.execution(runbook, "fp1")
            assert await executor.run(runbook, first) == "succeeded"
            assert cluster.image("web-green") == DEFAULT_IMAGE  # no input: the default
            k.clock.now += 2 * HOUR  # past the cooldown
            second = await k.execution(runbook, "fp2", labels={"image": IMAGE})
            assert await executor.run(runbook, second) == "succeeded"
        assert cluster.colour() == "blue", "the second deploy went to blue, idle after the first"
        assert cluster.image("web-blue") == IMAGE


async def test_a_resumed_deploy_uses_the_inputs_journaled_at_its_start_not_todays_default(
    tmp_path: Path, cluster: Cluster
) -> None:
    # The start by hand journals the inputs it resolved; a reload may change the default
    # before the execution is resumed, and a mixed deploy must not follow.
    async with kit(tmp_path, check=True) as k:
        runbook = deploy_runbook(KubernetesActuator(KubernetesSettings()))
        alert = {"fingerprint": "fp1", "startsAt": "2024-01-01T00:00Z", "labels": {}}
        alert["inputs"] = {"image": IMAGE}
        execution = await k.journal.start_execution(
            runbook.name, "by-hand", k.mode[0].value, "corr", alert
        )
        assert execution is not None
        async with replica(k, cluster.url, fake_sleep(k, [])) as executor:
            assert await executor.run(runbook, execution) == "succeeded"
        assert cluster.image("web-green") == IMAGE
