"""High availability end to end: real ``srd run`` replicas electing a leader on a Lease of the
fake Kubernetes API (which is also the actuators' target, beside moto), sharing one journal on
a real PostgreSQL server, running the shipped platform failover runbook from an Alertmanager
payload. Exactly one execution whichever replicas get the alert; a killed leader's execution
is finished by the next leader without repeating a done step; a deposed leader writes nothing
more."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from srd.cli.approve import approve
from srd.journal import ExecutionRecord, Journal, StepRecord, open_journal
from srd.simulate.sandbox.kubernetes import DR, LEASES, PRODUCTION, ApiError, FakeKubernetes
from tests.support.daemon import RunningSrd, free_port, running_srd
from tests.support.eventually import eventually
from tests.support.failover_e2e import (
    SHIPPED_STEPS,
    TOKEN,
    Platform,
    api_get,
    assert_dr_state,
    payload,
    post,
    serving_platform,
    shipped_runbook,
)
from tests.support.pgserver import PgDatabase, PgServer

NS = "srd"
LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
SLACK = 1.0
"""Scheduling slack for several processes on a small, busy machine."""
LOST = "lost leadership: this replica stops acting"
ACTING = {"step started", "step done", "step failed", "rolling back", "runbook ended"}


class RecordingKubernetes(FakeKubernetes):
    """The fake API, with what the tests ask of the requests it received; ``hold`` keeps the
    next write to that path waiting (``held`` set) until ``release``, then refuses it (503)
    without applying it: a leader killed meanwhile died before its action took effect."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: str | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def holding(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if request.path == self.hold and request.method in ("PATCH", "PUT"):
                self.hold = None
                self.held.set()
                await self.release.wait()
                return web.json_response({"kind": "Status", "code": 503}, status=503)
            return await handler(request)

        app.middlewares.append(holding)
        return app

    def scalings(self, namespace: str, name: str) -> int:
        """Writes to a deployment's replicas."""
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        writes = ("PATCH", "PUT")
        return sum(1 for method, p in self.requests if p == path and method in writes)

    def holder(self) -> str | None:
        try:
            spec = self.store.get(LEASES, NS, "srd-leader")["spec"]
        except ApiError:  # not created yet: nobody holds it
            return None
        holder: str | None = spec.get("holderIdentity")
        return holder


@dataclass
class Ha:
    platform: Platform
    kubernetes: RecordingKubernetes
    server: PgServer
    database: PgDatabase
    tmp_path: Path

    def terms(self) -> list[tuple[int, str, float]]:
        """The journal's terms of leadership: (term, holder, when it was claimed)."""
        with self.server.connect(self.database) as conn:
            rows = conn.execute("SELECT term, holder, at FROM leader_terms ORDER BY term")
            return [(int(t), str(h), float(a)) for t, h, a in rows.fetchall()]

    def assert_changed_once(self) -> None:
        """Each action of the runbook reached its target exactly once."""
        calls = self.platform.proxy.calls
        assert calls.count("RegisterTargets") == 1, calls
        assert calls.count("DeregisterTargets") == 1, calls
        assert calls.count("ChangeResourceRecordSets") == 1, calls
        assert self.kubernetes.scalings(DR, "web-backup") == 1, self.kubernetes.requests
        assert self.kubernetes.scalings(PRODUCTION, "web-primary") == 1, self.kubernetes.requests


@pytest.fixture
async def ha(moto_url: str, pg_server: PgServer, tmp_path: Path) -> AsyncIterator[Ha]:
    fake = RecordingKubernetes()
    async with serving_platform(moto_url, fake) as platform:
        yield Ha(platform, fake, pg_server, pg_server.create_database(), tmp_path)


def replica_config(ha: Ha, n: int, port: int) -> Path:
    config = ha.tmp_path / f"srd-{n}.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        mode: armed
        state_dir: {ha.tmp_path / f"state-{n}"}
        server: {{listen: "127.0.0.1:{port}"}}
        ha:
          mode: kubernetes
          namespace: {NS}
          lease_duration: {LEASE:g}s
          renew_deadline: {RENEW:g}s
          retry_period: {RETRY:g}s
          identity: replica-{n}
          kubernetes: {{host: "{ha.platform.kubernetes_url}"}}
        failover:
          runbooks: [runbook.yaml]
          auth: {{bearer_token: {{env: SRD_E2E_TOKEN}}}}
          journal: {ha.database.url}
          journal_password: {{env: SRD_JOURNAL_PASSWORD}}
        actuators:
          kubernetes: {{host: "{ha.platform.kubernetes_url}"}}
          aws: {{endpoint_url: "{ha.platform.aws_url}", region: us-east-1}}
        """)
    )
    return config


@asynccontextmanager
async def replicas(
    ha: Ha, count: int, runbook: str | None = None
) -> AsyncIterator[list[RunningSrd]]:
    (ha.tmp_path / "runbook.yaml").write_text(runbook or shipped_runbook(ha.platform))
    env = {"SRD_E2E_TOKEN": TOKEN, "SRD_JOURNAL_PASSWORD": ha.database.password}
    async with AsyncExitStack() as stack:
        group = []
        for n in range(count):
            port = free_port()
            config = replica_config(ha, n, port)
            srd = running_srd("run", "--config", str(config), port=port, env=env)
            group.append(await stack.enter_async_context(srd))
        yield group


async def identity(srd: RunningSrd) -> str:
    """The replica's holder identity, from its ``srd_leader`` gauge."""
    _, text = await srd.get("/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "srd_leader":
                return sample.labels["identity"]
    raise AssertionError("no srd_leader gauge")


async def leading(ha: Ha, group: list[RunningSrd]) -> tuple[RunningSrd, list[RunningSrd]]:
    """The replica the Lease names, once it knows it leads; and the others."""
    names = [await identity(srd) for srd in group]

    async def elected() -> bool:
        holder = ha.kubernetes.holder()
        if holder not in names:
            return False
        return await group[names.index(holder)].metric("srd_leader") == 1

    await eventually(elected, within=LEASE + SLACK * 3, what="a replica leads")
    leader = group[names.index(str(ha.kubernetes.holder()))]
    return leader, [srd for srd in group if srd is not leader]


async def finished(journal: Journal, state: str, within: float) -> ExecutionRecord:
    async def done() -> list[ExecutionRecord]:
        found = list(await journal.executions())
        return found if found and found[0].state == state else []

    [execution] = await eventually(done, within=within, what=f"an execution {state}")
    return execution


def assert_each_step_once(steps: list[StepRecord]) -> None:
    """Every step started and ended once, none re-run (a re-run has a ``:retryN`` key)."""
    assert [s.key for s in steps if ":retry" in s.key] == []
    assert Counter((s.name, s.phase) for s in steps) == {
        (name, phase): 1 for name in SHIPPED_STEPS for phase in ("started", "ended")
    }
    assert [s.name for s in steps if s.phase == "ended" and s.result == "ok"] == SHIPPED_STEPS


async def fenced_writes(srd: RunningSrd) -> float | None:
    return await srd.metric("srd_journal_fenced_writes_total")


async def dns_change_made(ha: Ha) -> bool:
    return "ChangeResourceRecordSets" in ha.platform.proxy.calls


@asynccontextmanager
async def reading(ha: Ha) -> AsyncIterator[Journal]:
    journal = await open_journal(ha.database.url, create=False, password=ha.database.password)
    try:
        yield journal
    finally:
        await journal.close()


async def test_three_replicas_sent_the_same_alert_run_it_once_each_step_once(ha: Ha) -> None:
    async with replicas(ha, 3) as group, reading(ha) as journal:
        leader, followers = await leading(ha, group)
        posted = time.monotonic()
        statuses = await asyncio.gather(*(post(srd, payload()) for srd in group))
        assert statuses == [200, 200, 200]
        execution = await finished(journal, "succeeded", 30)
        took = time.monotonic() - posted

        assert len(await journal.executions()) == 1
        assert_each_step_once(list(await journal.steps(execution.id)))
        ha.assert_changed_once()
        await assert_dr_state(ha.platform)
        assert leader.logged("runbook started")
        for srd in followers:
            assert not srd.logged("runbook started")
            assert not [line for line in srd.log_lines if line.get("event") in ACTING]
        for srd in group:
            assert await fenced_writes(srd) == 0
    print(f"\nthree replicas, alert to all: alert → succeeded in {took:.2f}s")


async def test_an_alert_sent_only_to_a_follower_is_run_by_the_leader(ha: Ha) -> None:
    async with replicas(ha, 2) as group, reading(ha) as journal:
        leader, (follower,) = await leading(ha, group)
        posted = time.monotonic()
        assert await post(follower, payload()) == 200
        execution = await finished(journal, "succeeded", 30)
        took = time.monotonic() - posted

        # The follower recorded the alert and planned the execution; the leader ran it.
        assert follower.logged("execution planned; the leader runs it")
        assert not [line for line in follower.log_lines if line.get("event") in ACTING]
        assert leader.logged("runbook started")
        assert not leader.logged("execution planned")  # it never received the alert
        assert_each_step_once(list(await journal.steps(execution.id)))
        ha.assert_changed_once()
        await assert_dr_state(ha.platform)
        assert await fenced_writes(follower) == 0
    print(f"\nalert to a follower only: alert → succeeded in {took:.2f}s")


async def test_a_leader_killed_mid_runbook_is_replaced_and_nothing_done_is_done_again(
    ha: Ha,
) -> None:
    # Route 53 reports the change PENDING for 8 s: the leader is killed while it waits.
    ha.platform.proxy.dns_pending = 8
    async with replicas(ha, 2) as group, reading(ha) as journal:
        leader, (follower,) = await leading(ha, group)
        successor = await identity(follower)
        posted = time.time()
        statuses = await asyncio.gather(*(post(srd, payload()) for srd in group))
        assert statuses == [200, 200]
        await eventually(lambda: dns_change_made(ha), within=30, what="the leader changed DNS")
        killed = time.time()
        leader.process.send_signal(signal.SIGKILL)
        await leader.process.wait()

        async def taken_over() -> bool:
            return ha.kubernetes.holder() == successor

        # The Lease expires at most LEASE after the leader's last renewal (before the kill);
        # the successor's next attempt comes within 1.2 retry periods.
        waited = time.monotonic()
        await eventually(taken_over, within=LEASE + 1.2 * RETRY + SLACK, what="the Lease moved")
        lease_taken = time.monotonic() - waited
        execution = await finished(journal, "succeeded", 30)
        ended = time.time()

        steps = list(await journal.steps(execution.id))
        assert_each_step_once(steps)
        [interrupted] = [s for s in steps if s.name == "dns_to_dr" and s.phase == "ended"]
        assert interrupted.detail == {"reconciled": True}  # judged by the successor
        assert [c.state for c in await journal.states(execution.id)] == [
            "planned",
            "running",
            "succeeded",
        ]
        ha.assert_changed_once()
        await assert_dr_state(ha.platform)
        (first, _, _), (term, holder, claimed) = ha.terms()
        assert (term, holder) == (first + 1, successor)
        assert follower.logged("resuming runbook")
    takeover = claimed - killed
    assert 0 < takeover < LEASE + 1.2 * RETRY + SLACK
    print(
        f"\nSIGKILL: Lease moved {lease_taken:.2f}s after the kill; the successor's first"
        f" journal write {takeover:.2f}s after it; alert → succeeded {ended - posted:.2f}s"
    )


async def test_a_leader_deposed_inside_a_step_writes_no_further_step(ha: Ha) -> None:
    ha.platform.proxy.dns_pending = 8
    async with replicas(ha, 2) as group, reading(ha) as journal:
        leader, (follower,) = await leading(ha, group)
        thief = await identity(follower)
        assert await post(leader, payload()) == 200
        await eventually(lambda: dns_change_made(ha), within=30, what="the leader changed DNS")

        # Steal the Lease for the follower, as a takeover writes it.
        lease = ha.kubernetes.store.get(LEASES, NS, "srd-leader")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease["spec"] |= {
            "holderIdentity": thief,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": lease["spec"]["leaseTransitions"] + 1,
        }
        ha.kubernetes.store.replace(LEASES, NS, "srd-leader", lease)
        stolen = time.time()

        async def stepped_down() -> bool:
            return bool(leader.logged(LOST))

        theft = time.monotonic()
        await eventually(stepped_down, within=RETRY + SLACK, what="the deposed leader stepped down")
        noticed = time.monotonic() - theft
        execution = await finished(journal, "succeeded", 30)

        # The journal: nothing between the theft and the new leader's claim of its term
        # (only the old leader could have written then), and the step it was inside was
        # ended by the new leader's reconciliation, not by the old leader.
        (_, _, _), (_, holder, claimed) = ha.terms()
        assert holder == thief
        steps = list(await journal.steps(execution.id))
        assert [s for s in steps if stolen <= s.at < claimed] == []
        assert_each_step_once(steps)
        [interrupted] = [s for s in steps if s.name == "dns_to_dr" and s.phase == "ended"]
        assert interrupted.detail == {"reconciled": True}
        assert interrupted.at > claimed
        # The deposed leader: cancelled inside the step, it tried no write at all after.
        [cancelled] = leader.logged("cancelling executions in flight; the leader reconciles them")
        assert cancelled["executions"] == [execution.id]
        loss = next(i for i, line in enumerate(leader.log_lines) if line.get("event") == LOST)
        after = [str(line.get("event")) for line in leader.log_lines[loss:]]
        assert not [event for event in after if event in ACTING or event.startswith("fenced")]
        assert await fenced_writes(leader) == 0
        assert follower.logged("resuming runbook")
        ha.assert_changed_once()
        await assert_dr_state(ha.platform)
    print(
        f"\nstolen Lease: the old leader stepped down {noticed:.2f}s after the theft;"
        f" the new leader claimed its term {claimed - stolen:.2f}s after it"
    )


async def test_an_approval_posted_to_a_follower_lets_the_leaders_execution_go_on(ha: Ha) -> None:
    flagged = shipped_runbook(ha.platform).replace(
        "        reduces_capacity: true\n",
        "        reduces_capacity: true\n        requires_approval: true\n",
    )
    assert "requires_approval" in flagged
    async with replicas(ha, 2, flagged) as group, reading(ha) as journal:
        leader, (follower,) = await leading(ha, group)
        assert await post(leader, payload()) == 200
        pending: dict[str, str] = {}

        async def asked() -> bool:
            nonlocal pending
            status, text = await api_get(follower, "/api/approvals")
            pending = json.loads(text) if status == 200 else {}
            return bool(pending)

        await eventually(asked, within=30, what="the follower lists the leader's pending approval")
        [(approval_id, what)] = pending.items()
        assert what.startswith("run step scale_primary_down")
        assert leader.logged("approval needed")
        ok, _ = await approve(follower.base_url, approval_id, f"Bearer {TOKEN}")
        assert ok
        execution = await finished(journal, "succeeded", 30)

        assert approval_id == f"{execution.id}-4"
        steps = list(await journal.steps(execution.id))
        [given] = [s for s in steps if s.name.endswith(":approval") and s.phase == "ended"]
        assert given.detail == {"by": "bearer_token"}  # the credential's name
        assert not [line for line in follower.log_lines if line.get("event") in ACTING]
        ha.assert_changed_once()
        await assert_dr_state(ha.platform)


async def test_an_execution_a_journal_outage_interrupted_is_resumed_by_the_leader(ha: Ha) -> None:
    """PostgreSQL stops while the leader waits for Route 53: the step's write fails. The
    execution is not left running for the term: the leader's /readyz and
    srd_executions_stuck show it, and once the journal is back the leader resumes it from
    the journal, repeating no actuator write."""
    ha.platform.proxy.dns_pending = 6
    async with replicas(ha, 2) as group:
        leader, _ = await leading(ha, group)
        assert await post(leader, payload()) == 200
        await eventually(lambda: dns_change_made(ha), within=30, what="the leader changed DNS")
        await asyncio.to_thread(ha.server.stop)
        try:

            async def stuck() -> bool:
                status, text = await leader.get("/readyz")
                return status == 503 and "interrupted, being resumed" in text

            await eventually(stuck, within=30, what="the leader's /readyz names it", every=0.5)
            assert await leader.metric("srd_executions_stuck") == 1
        finally:
            await asyncio.to_thread(ha.server.start)
        back = time.monotonic()
        async with reading(ha) as journal:
            execution = await finished(journal, "succeeded", 60)
            resumed = time.monotonic() - back
            steps = list(await journal.steps(execution.id))
        assert_each_step_once(steps)
        [interrupted] = [s for s in steps if s.name == "dns_to_dr" and s.phase == "ended"]
        assert interrupted.detail == {"reconciled": True}
        ha.assert_changed_once()
        await assert_dr_state(ha.platform)
        assert leader.logged("execution interrupted; resuming it from the journal")
        assert (await leader.get("/readyz"))[0] == 200
        assert await leader.metric("srd_executions_stuck") == 0
    print(f"\njournal outage: succeeded {resumed:.2f}s after PostgreSQL was back")


async def test_a_leader_killed_before_its_action_reached_the_api_is_replaced_and_it_is_applied(
    ha: Ha,
) -> None:
    """The leader journals scale_backup_up as started and dies before the API applies the
    scale. The successor finds the deployment still at its recorded prior state, applies the
    scale itself and goes on, instead of polling "converged" for the step's 10 minutes and
    rolling back."""
    scale = f"/apis/apps/v1/namespaces/{DR}/deployments/web-backup/scale"
    ha.kubernetes.hold = scale
    async with replicas(ha, 2) as group, reading(ha) as journal:
        leader, (follower,) = await leading(ha, group)
        assert await post(leader, payload()) == 200
        await asyncio.wait_for(ha.kubernetes.held.wait(), 30)
        leader.process.send_signal(signal.SIGKILL)
        await leader.process.wait()
        ha.kubernetes.release.set()  # the dead leader's write is refused, never applied
        killed = time.monotonic()
        execution = await finished(journal, "succeeded", 30)
        took = time.monotonic() - killed

        steps = list(await journal.steps(execution.id))
        assert_each_step_once(steps)
        [first] = [s for s in steps if s.name == "scale_backup_up" and s.phase == "ended"]
        assert first.detail is not None
        assert (first.detail["reconciled"], first.detail["reapplied"]) == (True, True)
        assert follower.logged(
            "the interrupted step's action never reached the actuator; applying it"
        )
        # Two scale writes reached the API: the dead leader's, refused, and the successor's.
        assert ha.kubernetes.scalings(DR, "web-backup") == 2
        calls = ha.platform.proxy.calls
        assert calls.count("ChangeResourceRecordSets") == 1, calls
        assert ha.kubernetes.scalings(PRODUCTION, "web-primary") == 1
        await assert_dr_state(ha.platform)
    print(f"\nkilled before the action applied: succeeded {took:.2f}s after the kill")


SKEWED_CLOCK = '''\
"""Loaded at interpreter start-up (test only): this process's wall clock is off by
SRD_TEST_CLOCK_SKEW seconds, as a host whose NTP failed; its monotonic clock is not."""
import os
import time

_skew = float(os.environ["SRD_TEST_CLOCK_SKEW"])
_wall = time.time
time.time = lambda: _wall() + _skew
'''


@asynccontextmanager
async def replica_with_skew(ha: Ha, n: int, skew: float) -> AsyncIterator[RunningSrd]:
    """Replica ``n`` whose wall clock (``time.time``) is ``skew`` seconds off."""
    site = ha.tmp_path / f"skew-{n}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEWED_CLOCK)
    env = {
        "SRD_E2E_TOKEN": TOKEN,
        "SRD_JOURNAL_PASSWORD": ha.database.password,
        "SRD_TEST_CLOCK_SKEW": str(skew),
        "PYTHONPATH": str(site),
    }
    port = free_port()
    config = replica_config(ha, n, port)
    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        yield srd


@pytest.mark.parametrize("skew", [30.0, -30.0], ids=["ahead", "behind"])
async def test_a_replica_with_a_skewed_clock_neither_deposes_the_leader_nor_delays_takeover(
    ha: Ha, skew: float
) -> None:
    """A replica whose clock was 30 s ahead deposed a healthy leader a second after it
    started; one 30 s behind took 30 s more than the lease to replace a dead leader. Expiry
    is judged on each replica's own monotonic clock now."""
    (ha.tmp_path / "runbook.yaml").write_text(shipped_runbook(ha.platform))
    async with replica_with_skew(ha, 0, 0.0) as healthy:
        await leading(ha, [healthy])
        async with replica_with_skew(ha, 1, skew) as skewed:
            await asyncio.sleep(2 * LEASE)
            assert ha.kubernetes.holder() == await identity(healthy)
            assert not healthy.logged(LOST)
            assert await skewed.metric("srd_leader") == 0
            successor = await identity(skewed)
            healthy.process.send_signal(signal.SIGKILL)
            await healthy.process.wait()
            killed = time.monotonic()

            async def taken_over() -> bool:
                return ha.kubernetes.holder() == successor

            # The lease from when the follower saw the last renewal, noticed at its next round.
            within = LEASE + 2 * 1.2 * RETRY + SLACK
            await eventually(taken_over, within=within, what="the skewed replica took over")
            took = time.monotonic() - killed
    print(f"\nclock {skew:+g}s: leader kept; dead leader replaced in {took:.2f}s")
