"""Each fault kind a drill can inject, on a running sandbox: inject, see the effect, revert."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

from srd.actuators.base import ActuatorError
from srd.actuators.kubernetes import KubernetesActuator, KubernetesSettings
from srd.journal import JournalFault, SqliteJournal
from srd.simulate.faults import KINDS, Target
from srd.simulate.sandbox import Sandbox, running_sandbox
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.kubernetes import DR, PRODUCTION, replicas


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Target]]:
    async with AsyncExitStack() as stack:
        box = await stack.enter_async_context(running_sandbox(tmp_path, "127.0.0.1:0", 0.05))
        assert box.cloud is not None
        proxy = AwsProxy(box.cloud.url)
        await stack.enter_async_context(proxy.serving())
        yield (
            box,
            Target(box.chain, box.nodes, box.services, box.cloud, proxy, 100.0, box.kubernetes),
        )
        # moto keeps its backends per process: the next sandbox seeds the same names.
        async with aiohttp.ClientSession() as session:
            await session.post(f"{box.cloud.url}/moto-api/reset")


async def _status(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "system_health", "params": []}
        ) as reply,
    ):
        await reply.read()
        return reply.status


async def _health(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as reply:
        return reply.status


async def _answers_slowly(answer: Awaitable[int], delay: float) -> None:
    """``answer`` is 200, but only after ``delay`` seconds or more."""
    began = time.monotonic()
    assert await answer == 200
    assert time.monotonic() - began >= delay


async def _keys(box: Sandbox, kind: str) -> list[str]:
    assert box.cloud is not None
    args: dict[str, Any] = {
        "endpoint_url": box.cloud.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "x",
        "aws_secret_access_key": "x",
    }
    async with get_session().create_client("s3", **args) as s3:
        listed = await s3.list_objects_v2(Bucket=box.cloud.bucket, Prefix=f"{kind}/")
        return sorted(str(o["Key"]) for o in listed.get("Contents", ()))


@asynccontextmanager
async def injected(target: Target, kind: str, /, **params: Any) -> AsyncIterator[None]:
    """The fault ``kind`` with ``params`` in place inside the ``async with``; reverted after."""
    revert = await KINDS[kind].apply(target, params)
    try:
        yield
    finally:
        await revert()


async def test_service_faults_fail_and_slow_the_health_endpoint_until_reverted(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    url = box.urls["web-viewer"]
    async with injected(target, "service_failing", service="web-viewer"):
        assert await _health(url) == 503
    assert await _health(url) == 200
    async with injected(target, "service_slow", service="web-viewer", delay=0.3):
        await _answers_slowly(_health(url), 0.3)
    assert box.services["web-viewer"].delay == 0


async def test_chain_faults_stall_production_and_finality_and_reorg(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    for kind, flag in (
        ("chain_stall", "production_stalled"),
        ("finality_stall", "finality_stalled"),
    ):
        async with injected(target, kind):
            assert getattr(box.chain, flag) is True
        assert getattr(box.chain, flag) is False
    while box.chain.best.number - box.chain.finalized.number < 2:
        box.chain.produce()
    before = box.chain.best
    await KINDS["chain_reorg"].apply(target, {"depth": 1})
    assert box.chain.blocks[before.number].hash != before.hash


async def test_node_faults_refuse_break_and_slow_its_rpc(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    node, url = box.nodes["validator-1"], box.urls["validator-1"]
    async with injected(target, "node_down", node="validator-1"):
        assert await _status(url) == 429
        assert await _status(box.urls["validator-2"]) == 200
    assert await _status(url) == 200
    async with injected(target, "rpc_errors", node="validator-1"):
        assert node.faults.malformed_json
    assert not node.faults.malformed_json
    async with injected(target, "rpc_latency", node="validator-1", delay=0.2):
        await _answers_slowly(_status(url), 0.2)
    assert node.faults.latency == 0


async def test_backup_faults_delete_backups_and_their_revert_puts_them_back(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    before = await _keys(box, "database")
    assert len(before) == 30
    # The newest database backup is 10 min old: deleting those under 2 h ages the newest.
    async with injected(target, "backups_aged", kind="database", newer_than=7200):
        assert len(await _keys(box, "database")) == 30 - 4
    assert await _keys(box, "database") == before
    async with injected(target, "backups_deleted", kind="blockchain"):
        assert await _keys(box, "blockchain") == []
    assert len(await _keys(box, "blockchain")) == 7


async def test_aws_faults_slow_dns_and_targets_in_drill_time_and_throttle(
    sandbox: tuple[Sandbox, Target],
) -> None:
    _, target = sandbox
    proxy = target.proxy
    assert proxy is not None
    async with injected(target, "dns_slow", seconds="1h"):
        assert proxy.dns_pending == pytest.approx(36.0)  # 1 h at ×100
    assert proxy.dns_pending == 0
    async with injected(target, "targets_slow", seconds=500):
        assert proxy.targets_initial == pytest.approx(5.0)
    assert proxy.targets_initial == 0
    await KINDS["aws_throttle"].apply(target, {"operation": "GetChange", "times": 2})
    assert proxy._throttles["GetChange"] == ["Throttling", "Throttling"]


async def test_a_journal_lock_holds_srds_writes_until_it_is_released(
    sandbox: tuple[Sandbox, Target], tmp_path: Path
) -> None:
    _, target = sandbox
    path = tmp_path / "journal.sqlite3"
    async with await SqliteJournal.open(path) as journal:
        target = replace(target, journal=path)
        # 100 drill seconds at ×100: held for 1 s, less than srd's retries (5 s).
        async with injected(target, "journal_locked", seconds=100):
            began = time.monotonic()
            await journal.set_kill_switch(True, "test", "under a held lock")
            waited = time.monotonic() - began
        assert 0.9 <= waited < 5.0  # it waited for the lock, then wrote
        state = await journal.kill_switch()
        assert state is not None and (state.on, state.reason) == (True, "under a held lock")
        # Held longer than the retries: the write fails as locked, and nothing is written.
        # (30 s at ×100; released when the block ends.)
        async with injected(target, "journal_locked", seconds=3000):
            with pytest.raises(JournalFault) as failed:
                await journal.set_kill_switch(False, "test", "still locked")
        assert failed.value.kind == "locked"
        state = await journal.kill_switch()
        assert state is not None and state.on  # the refused write left nothing


async def _k8s(
    url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, json=body, headers=headers) as reply,
    ):
        return reply.status, await reply.json(), reply.headers.get("Retry-After")


SCALE = "/apis/apps/v1/namespaces/vilokanam-dr/deployments/web-viewer-backup/scale"
BACKUP = {"namespace": DR, "name": "web-viewer-backup", "replicas": 3}
PRIMARY = {"namespace": PRODUCTION, "name": "web-viewer-primary", "replicas": 0}


async def test_kubernetes_conflicts_answer_writes_409_and_the_actuator_rereads_through_them(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    url = box.urls["kubernetes"]
    actuator = KubernetesActuator(KubernetesSettings(host=url))
    try:
        async with injected(target, "kubernetes_conflicts", times=3):
            code, status, _ = await _k8s(url, "PATCH", SCALE, {"spec": {"replicas": 2}})
            assert code == 409
            assert status["kind"] == "Status" and status["reason"] == "Conflict"
            message = 'Operation cannot be fulfilled on deployments.apps "web-'
            assert status["message"].startswith(message)
            assert (await _k8s(url, "GET", SCALE))[0] == 200  # reads are served
            # Two conflicts left: re-read, re-apply.
            await actuator.apply("scale_deployment", BACKUP)
            assert replicas(box.kubernetes, DR, "web-viewer-backup") == 3
            assert box.kubernetes.faults[0].answered == 3
        assert box.kubernetes.faults == []
        # For a duration (drill time): 1 h at ×100 is 36 s, beyond the actuator's 4 retries.
        async with injected(target, "kubernetes_conflicts", duration="1h"):
            with pytest.raises(ActuatorError, match="409, still after 4 fresh reads") as caught:
                await actuator.apply("scale_deployment", PRIMARY)
            assert caught.value.retryable
            assert replicas(box.kubernetes, PRODUCTION, "web-viewer-primary") == 3
        await actuator.apply("scale_deployment", PRIMARY)
        assert replicas(box.kubernetes, PRODUCTION, "web-viewer-primary") == 0
    finally:
        await actuator.close()


async def test_kubernetes_errors_answer_5xx_or_429_for_a_kind_and_verb_until_used_up(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    url = box.urls["kubernetes"]
    patch_429 = {"code": 429, "resource": "deployments/scale", "verb": "patch", "times": 1}
    async with injected(target, "kubernetes_errors", **patch_429):
        assert (await _k8s(url, "GET", SCALE))[0] == 200  # another verb: served
        code, status, retry_after = await _k8s(url, "PATCH", SCALE, {"spec": {"replicas": 1}})
        assert (code, status["reason"], retry_after) == (429, "TooManyRequests", "1")
        assert (await _k8s(url, "PATCH", SCALE, {"spec": {"replicas": 1}}))[0] == 200  # used up

    actuator = KubernetesActuator(KubernetesSettings(host=url))
    try:
        async with injected(target, "kubernetes_errors", code=503, times=2):
            code, status, _ = await _k8s(url, "GET", "/api/v1/namespaces/vilokanam-web/pods")
            assert (code, status["kind"], status["reason"]) == (503, "Status", "ServiceUnavailable")
            began = time.monotonic()
            assert await actuator.snapshot("scale_deployment", BACKUP) == {"replicas": 1}
            assert time.monotonic() - began >= 0.2  # backed off once before the call that worked
    finally:
        await actuator.close()
    assert box.kubernetes.faults == []


def test_fault_params_are_validated_strictly_naming_the_param() -> None:
    with pytest.raises(ValueError, match=r"params\.service"):
        KINDS["service_failing"].check({})
    with pytest.raises(ValueError, match=r"params\.nope"):
        KINDS["chain_stall"].check({"nope": 1})
    with pytest.raises(ValueError, match=r"params\.code"):
        KINDS["kubernetes_errors"].check({"code": 404})
    with pytest.raises(ValueError, match=r"params\.resources\.0"):
        KINDS["kubernetes_conflicts"].check({"resources": ["configmaps"]})
    with pytest.raises(ValueError, match=r"params\.instructions"):
        KINDS["manual"].check({})
