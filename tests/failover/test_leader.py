"""Leader election on a Lease, against the fake Kubernetes API through the real client: one
leader among several replicas, takeover after a leader dies, 409 conflicts, fail-closed renew
deadlines, and the ``ha`` config section's validation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config import ConfigError, parse_config
from srd.config.ha import HaConfig
from srd.failover.leader import LeaseLeadership, SingleInstance, leadership_from_config
from srd.failover.metrics import FailoverMetrics
from srd.journal import NO_TERM, Fence
from srd.simulate.sandbox.kubernetes import LEASES, ApiError, FakeKubernetes
from tests.support.eventually import eventually

NS = "srd"
LEASE = 2.0
RENEW = 1.5
RETRY = 0.2
SLACK = 0.4
"""Scheduling slack on a loaded CI machine; far below the durations it is added to."""
TAKEOVER = LEASE + 2 * 1.2 * RETRY
"""The longest a follower takes to take over a dead leader's Lease: the lease duration from
when it saw the last renewal, which it read up to a jittered retry period late, noticed at its
next round."""


class MeddlingKubernetes(FakeKubernetes):
    """The fake API with a hook run before every Lease request: to stall, fail or race it."""

    def __init__(self) -> None:
        super().__init__()
        self.before: Callable[[web.Request], Awaitable[None]] | None = None

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def meddle(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if self.before is not None and "/leases" in request.path:
                await self.before(request)
            return await handler(request)

        app.middlewares.append(meddle)
        return app

    def lease(self) -> dict[str, object]:
        spec: dict[str, object] = self.store.get(LEASES, NS, "srd-leader")["spec"]
        return spec


class LossRecorder:
    """The loss hook: when it ran, and whether the replica still claimed to lead by then."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.leading: list[bool] = []
        self.of: LeaseLeadership | None = None

    async def __call__(self) -> None:
        assert self.of is not None
        self.times.append(time.monotonic())
        self.leading.append(self.of.is_leader())


@dataclass
class Replica:
    leadership: LeaseLeadership
    metrics: FailoverMetrics
    stop: asyncio.Event
    task: asyncio.Task[None]
    losses: LossRecorder

    def gauge(self) -> float | None:
        labels = {"identity": self.leadership.identity}
        return self.metrics.registry.get_sample_value("srd_leader", labels)


def settings(url: str) -> HaConfig:
    return HaConfig.model_validate(
        {
            "mode": "kubernetes",
            "namespace": NS,
            "lease_duration": LEASE,
            "renew_deadline": RENEW,
            "retry_period": RETRY,
            "kubernetes": {"host": url},
        }
    )


@asynccontextmanager
async def replicas(count: int) -> AsyncIterator[tuple[MeddlingKubernetes, list[Replica]]]:
    fake = MeddlingKubernetes()
    async with fake.serving() as url:
        started: list[Replica] = []
        for n in range(count):
            metrics, losses = FailoverMetrics(CollectorRegistry()), LossRecorder()
            leadership = LeaseLeadership(settings(url), f"srd-{n}_x", metrics, on_loss=losses)
            losses.of = leadership
            stop = asyncio.Event()
            task = asyncio.create_task(leadership.run(stop), name=f"leader-{n}")
            started.append(Replica(leadership, metrics, stop, task, losses))
        try:
            yield fake, started
        finally:
            fake.before = None
            for replica in started:
                replica.stop.set()
            await asyncio.gather(*(r.task for r in started), return_exceptions=True)


def leaders(group: list[Replica]) -> list[Replica]:
    return [r for r in group if r.leadership.is_leader()]


async def test_of_three_replicas_exactly_one_leads_and_the_others_follow_it() -> None:
    async with replicas(3) as (fake, group):
        await eventually(
            lambda: len(leaders(group)) == 1, within=RETRY * 3 + SLACK, what="one leader"
        )
        # Several renewals later still exactly one, the one the Lease names.
        for _ in range(40):
            assert len(leaders(group)) == 1
            await asyncio.sleep(0.025)
        (leader,) = leaders(group)
        lease = fake.lease()
        assert lease["holderIdentity"] == leader.leadership.identity
        assert lease["leaseDurationSeconds"] == int(LEASE)
        assert lease["leaseTransitions"] == 0
        assert leader.leadership.term == 0
        assert leader.gauge() == 1
        for follower in group:
            if follower is not leader:
                assert follower.leadership.term is None
                assert follower.leadership.leader == leader.leadership.identity
                assert follower.gauge() == 0


async def test_when_the_leader_dies_another_takes_over_within_the_lease_duration() -> None:
    async with replicas(3) as (fake, group):
        await eventually(
            lambda: len(leaders(group)) == 1, within=RETRY * 3 + SLACK, what="one leader"
        )
        (dead,) = leaders(group)
        # Cancelled as SIGKILL would end it: no release, the Lease must expire.
        dead.task.cancel()
        await asyncio.gather(dead.task, return_exceptions=True)
        assert fake.lease()["holderIdentity"] == dead.leadership.identity
        living = [r for r in group if r is not dead]

        began = time.monotonic()
        # A follower counts the lease from when it saw the last renewal (up to one of its
        # jittered retry periods late) and notices expiry at its next round.
        await eventually(
            lambda: len(leaders(living)) == 1, within=TAKEOVER + SLACK, what="a new leader"
        )
        took = time.monotonic() - began

        # Not before the lease expired (the last renewal was at most one retry period ago).
        assert took > LEASE - RETRY - 0.1
        (leader,) = leaders(living)
        lease = fake.lease()
        assert lease["holderIdentity"] == leader.leadership.identity
        assert lease["leaseTransitions"] == 1
        assert leader.leadership.term == 1
        assert not dead.leadership.is_leader()


@asynccontextmanager
async def replica_with_clock(url: str, n: int, skew: float) -> AsyncIterator[Replica]:
    """One replica whose wall clock is ``skew`` seconds off."""
    metrics, losses = FailoverMetrics(CollectorRegistry()), LossRecorder()
    leadership = LeaseLeadership(
        settings(url), f"srd-{n}_x", metrics, on_loss=losses, wall=lambda: time.time() + skew
    )
    losses.of = leadership
    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(stop), name=f"leader-{n}")
    try:
        yield Replica(leadership, metrics, stop, task, losses)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("skew", [30.0, -30.0], ids=["ahead", "behind"])
async def test_a_replica_with_a_skewed_clock_neither_deposes_a_healthy_leader_nor_waits_longer(
    skew: float,
) -> None:
    """A follower 30 s ahead saw the leader's renewTime as 30 s old and took over at once; one
    30 s behind waited 30 s more than the lease for a dead leader. Expiry is now judged on
    the follower's own monotonic clock, from when it saw the Lease change."""
    fake = MeddlingKubernetes()
    async with (
        fake.serving() as url,
        replica_with_clock(url, 0, 0.0) as healthy,
    ):
        await eventually(healthy.leadership.is_leader, within=RETRY * 2 + SLACK, what="leads")
        async with replica_with_clock(url, 1, skew) as skewed:
            await asyncio.sleep(LEASE * 2)
            assert healthy.leadership.is_leader()
            assert healthy.losses.times == []
            assert not skewed.leadership.is_leader()
            assert fake.lease()["leaseTransitions"] == 0

            healthy.task.cancel()  # as SIGKILL: nothing released, the Lease must expire
            await asyncio.gather(healthy.task, return_exceptions=True)
            began = time.monotonic()
            await eventually(
                skewed.leadership.is_leader, within=TAKEOVER + SLACK, what="the takeover"
            )
            took = time.monotonic() - began
            assert LEASE - RETRY - 0.1 < took < TAKEOVER + SLACK
            assert fake.lease()["leaseTransitions"] == 1


async def test_gaining_the_lease_awaits_on_acquire_once_already_fenced_as_the_new_term() -> None:
    fake = MeddlingKubernetes()
    async with fake.serving() as url:
        fences: list[Fence] = []

        async def on_acquire() -> None:
            fences.append(leadership.fence())

        leadership = LeaseLeadership(
            settings(url), "srd-0_x", FailoverMetrics(CollectorRegistry()), on_acquire=on_acquire
        )
        stop = asyncio.Event()
        task = asyncio.create_task(leadership.run(stop), name="leader")
        try:
            await eventually(lambda: fences, within=RETRY * 2 + SLACK, what="acquired")
            acquired = fake.lease()["renewTime"]
            await eventually(
                lambda: fake.lease()["renewTime"] != acquired,
                within=RETRY * 2 + SLACK,
                what="a renewal",
            )
            assert fences == [Fence("srd-0_x", 0)], "a renewal is not an acquisition"
        finally:
            stop.set()
            await task


async def test_a_leader_that_stops_cleanly_releases_the_lease_and_a_follower_takes_it_at_once() -> (
    None
):
    async with replicas(2) as (fake, group):
        await eventually(
            lambda: len(leaders(group)) == 1, within=RETRY * 3 + SLACK, what="one leader"
        )
        (old,) = leaders(group)
        (new,) = [r for r in group if r is not old]

        old.stop.set()
        await old.task

        assert old.losses.leading == [False], "stepping down runs the loss hook"
        await eventually(new.leadership.is_leader, within=RETRY * 1.2 + SLACK, what="it leads")
        assert fake.lease()["leaseTransitions"] == 1
        assert new.leadership.term == 1
        assert old.gauge() == 0
        # The journal's fence: the new holder's term; the old one holds none any more.
        assert new.leadership.fence() == Fence(new.leadership.identity, 1)
        assert old.leadership.fence() == Fence(old.leadership.identity, NO_TERM)


async def test_a_conflict_on_renewal_means_not_leader_until_a_fresh_read_wins_again() -> None:
    async with replicas(1) as (fake, (replica,)):
        await eventually(replica.leadership.is_leader, within=RETRY * 2 + SLACK, what="it leads")

        async def written_meanwhile(request: web.Request) -> None:
            if request.method == "PUT":
                fake.before = None
                # Someone else writes the Lease between our read and our write: 409.
                lease = fake.store.get(LEASES, NS, "srd-leader")
                lease["metadata"]["annotations"] = {"touched": "yes"}
                fake.store.replace(LEASES, NS, "srd-leader", lease)

        fake.before = written_meanwhile
        await eventually(lambda: replica.losses.times, within=RETRY * 2 + SLACK, what="a loss")

        assert replica.losses.leading == [False], "the hook runs once leadership has ended"
        assert replica.gauge() == 0
        # The Lease still names this replica, unexpired: the next round renews it.
        await eventually(replica.leadership.is_leader, within=RETRY * 2 + SLACK, what="it leads")
        assert replica.leadership.term == 0


@pytest.mark.parametrize("outage", ["hanging", "unavailable"])
async def test_a_leader_that_cannot_renew_stops_leading_at_the_renew_deadline(outage: str) -> None:
    async with replicas(1) as (fake, (replica,)):
        await eventually(replica.leadership.is_leader, within=RETRY * 2 + SLACK, what="it leads")
        gate = asyncio.Event()

        async def cut_off(_: web.Request) -> None:
            if outage == "hanging":
                await gate.wait()
            else:
                raise ApiError(503, "ServiceUnavailable", "etcd is unavailable")

        fake.before = cut_off
        cut = time.monotonic()

        await eventually(
            lambda: not replica.leadership.is_leader(), within=RENEW + SLACK, what="stepped down"
        )
        took = time.monotonic() - cut

        # Fail closed: at the deadline measured from the last renewal (at or before the cut),
        # not later; seen by this test within one of eventually()'s polls (20 ms).
        assert took <= RENEW + 0.02
        await eventually(lambda: replica.losses.times, within=SLACK, what="a loss")
        assert replica.losses.times[0] - cut <= RENEW + 0.1
        assert replica.gauge() == 0
        assert replica.leadership.term is None

        # The API back, it stands again and leads (the Lease is its own or expired).
        fake.before = None
        gate.set()
        await eventually(replica.leadership.is_leader, within=LEASE + SLACK, what="it leads again")
        assert fake.lease()["holderIdentity"] == replica.leadership.identity


def ha_yaml(body: str) -> str:
    return "ha:\n" + "".join(f"  {line}\n" for line in body.strip().splitlines())


@pytest.mark.parametrize(
    ("durations", "reason"),
    [
        ("lease_duration: 10s\nrenew_deadline: 10s\nretry_period: 2s", "lease_duration (10s) >"),
        ("lease_duration: 15s\nrenew_deadline: 2s\nretry_period: 2s", "> retry_period (2s)"),
        ("lease_duration: 15.5s\nrenew_deadline: 10s\nretry_period: 2s", "whole seconds"),
    ],
)
def test_ha_durations_out_of_order_are_a_config_error_naming_the_section(
    durations: str, reason: str
) -> None:
    text = ha_yaml(f"mode: kubernetes\nnamespace: srd\n{durations}")

    with pytest.raises(ConfigError) as caught:
        parse_config(text, "srd.yaml")

    (issue,) = caught.value.issues
    assert issue.key == "ha"
    assert reason in issue.reason
    assert str(issue).startswith("srd.yaml:1: ha: ")


def test_kubernetes_mode_outside_a_pod_needs_a_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("srd.config.ha.SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")

    with pytest.raises(ConfigError, match="needs namespace"):
        parse_config(ha_yaml("mode: kubernetes"), "srd.yaml")


def test_kubernetes_mode_in_a_pod_takes_the_service_accounts_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("monitoring")
    monkeypatch.setattr("srd.config.ha.SERVICE_ACCOUNT_NAMESPACE", namespace_file)

    config = parse_config(ha_yaml("mode: kubernetes"), "srd.yaml")

    assert config.ha.namespace == "monitoring"
    assert (config.ha.lease_duration, config.ha.renew_deadline, config.ha.retry_period) == (
        15.0,
        10.0,
        2.0,
    )


def test_standalone_mode_is_a_single_instance_that_always_leads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "srd-7f9c")
    metrics = FailoverMetrics(CollectorRegistry())

    leadership, task = leadership_from_config(parse_config("", "srd.yaml"), metrics)

    assert isinstance(leadership, SingleInstance)
    assert task is None
    assert metrics.registry.get_sample_value("srd_leader", {"identity": "srd-7f9c"}) == 1


def test_kubernetes_mode_gives_each_process_a_new_holder_identity_from_the_pod_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "srd-7f9c")
    config = parse_config(ha_yaml("mode: kubernetes\nnamespace: srd"), "srd.yaml")
    metrics = FailoverMetrics(CollectorRegistry())

    first, task = leadership_from_config(config, metrics)
    second, _ = leadership_from_config(config, metrics)

    assert isinstance(first, LeaseLeadership)
    assert isinstance(second, LeaseLeadership)
    assert task == first.run
    assert first.identity.startswith("srd-7f9c_")
    assert first.identity != second.identity
    assert not first.is_leader()
    labels = {"identity": first.identity}
    assert metrics.registry.get_sample_value("srd_leader", labels) == 0
