"""Faults a drill injects into the sandbox: a small typed registry, each kind with its params
model, an ``inject`` and the revert it returns (so rollback undoes exactly what ran).

Kinds: ``service_failing``, ``service_slow``, ``chain_stall``, ``finality_stall``,
``chain_reorg``, ``chain_reset``, ``node_down``, ``rpc_errors``, ``rpc_latency``,
``rpc_split_bodies``, ``rpc_websocket_only``, ``backups_deleted``,
``backups_aged``, ``dns_slow``, ``targets_slow``, ``aws_throttle``, ``kubernetes_conflicts``,
``kubernetes_errors``; and ``manual``, the one kind a real environment takes: srd injects
nothing, the operator does, and the drill waits for the symptom.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiobotocore.session import get_session
from pydantic import BaseModel, Field, ValidationError

from srd import clock
from srd.config.durations import Duration
from srd.config.types import Strict
from srd.simulate.sandbox import FakeService
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.cloud import SandboxCloud
from srd.simulate.sandbox.kubernetes import ApiFault, FakeKubernetes
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode

Revert = Callable[[], Awaitable[None]]


@dataclass
class Target:
    """What faults act on: the running sandbox, seen through the drill's AWS proxy (on a real
    environment: nothing, only ``manual`` faults run there)."""

    chain: FakeChain | None
    nodes: Mapping[str, FakeSubstrateNode]
    services: Mapping[str, FakeService]
    cloud: SandboxCloud | None
    proxy: AwsProxy | None
    scale: float
    """Drill seconds per wall second: fault durations are in drill time."""
    kubernetes: FakeKubernetes | None = None
    journal: Path | None = None
    """The drill daemon's SQLite journal (``journal_locked`` holds its write lock)."""


Inject = Callable[[Target, Any], Awaitable[Revert]]


@dataclass(frozen=True)
class FaultKind:
    params: type[BaseModel]
    inject: Inject
    summary: str

    def check(self, params: Mapping[str, Any]) -> None:
        """ValueError naming the bad param (drill validation reports it at the fault)."""
        try:
            self.params.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(
                f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(problems) from None

    async def apply(self, target: Target, params: Mapping[str, Any]) -> Revert:
        return await self.inject(target, self.params.model_validate(params))


async def _nothing() -> None:
    return None


def _set(owner: object, name: str, value: object, restore: object) -> Revert:
    """Set ``owner.<name>`` to ``value``; the revert sets it to ``restore``."""
    setattr(owner, name, value)

    async def revert() -> None:
        setattr(owner, name, restore)

    return revert


class ServiceParams(Strict):
    service: str


class SlowParams(Strict):
    service: str
    delay: Duration = Field(description="Real seconds added to every health answer.")


class NodeParams(Strict):
    node: str = "validator-1"


class LatencyParams(Strict):
    node: str = "validator-1"
    delay: Duration = Field(description="Real seconds added to every RPC answer.")


class SplitParams(Strict):
    node: str = "validator-1"
    delay: Duration = Field(0.03, description="Real seconds between the two halves of a body.")


class ReorgParams(Strict):
    depth: int = Field(1, ge=1)


class BackupParams(Strict):
    kind: Literal["database", "blockchain"] = "database"
    newer_than: Duration | None = Field(
        None,
        description="backups_aged: delete the backups younger than this (real time), so the "
        "newest good one is at least this old.",
    )


class DelayParams(Strict):
    seconds: Duration = Field(description="Drill time the change stays unconverged.")


class ThrottleParams(Strict):
    operation: str = Field(description="AWS operation: GetChange, RegisterTargets …")
    times: int = Field(3, ge=1)
    code: str = "Throttling"


KubernetesVerb = Literal["get", "list", "create", "update", "patch", "delete"]
KubernetesResource = Literal["deployments", "deployments/scale", "services", "pods", "leases"]


def _written_by_runbooks() -> list[KubernetesResource]:
    return ["deployments", "deployments/scale", "services"]


class KubernetesConflictParams(Strict):
    resources: list[KubernetesResource] = Field(
        default_factory=_written_by_runbooks,
        min_length=1,
        description="Whose writes (update, patch) answer 409 Conflict.",
    )
    times: int | None = Field(None, ge=1, description="The next N writes; unset: no limit.")
    duration: Duration | None = Field(None, description="Drill time; unset: until reverted.")


class KubernetesErrorParams(Strict):
    code: Literal[429, 500, 503] = 503
    resource: KubernetesResource | None = Field(None, description="Only this; unset: any.")
    verb: KubernetesVerb | None = Field(None, description="Only this; unset: any.")
    times: int | None = Field(None, ge=1, description="The next N calls; unset: no limit.")
    duration: Duration | None = Field(None, description="Drill time; unset: until reverted.")
    retry_after: int = Field(1, ge=1, le=60, description="429: the Retry-After, real seconds.")


class ManualParams(Strict):
    instructions: str = Field(min_length=1, description="What the operator breaks, and how.")
    undo: str = Field("", description="What the operator does at rollback to repair it.")


def _chain(target: Target) -> FakeChain:
    if target.chain is None:
        raise RuntimeError("chain faults need the sandbox's chain")
    return target.chain


def _service(target: Target, name: str) -> FakeService:
    if name not in target.services:
        raise KeyError(f"no sandbox service {name!r}; have {sorted(target.services)}")
    return target.services[name]


def _node(target: Target, name: str) -> FakeSubstrateNode:
    if name not in target.nodes:
        raise KeyError(f"no sandbox node {name!r}; have {sorted(target.nodes)}")
    return target.nodes[name]


def _proxy(target: Target) -> AwsProxy:
    if target.proxy is None:
        raise RuntimeError("this fault needs the sandbox's AWS (pip install 'srd[sandbox]')")
    return target.proxy


async def service_failing(target: Target, p: ServiceParams) -> Revert:
    return _set(_service(target, p.service), "healthy", False, True)


async def service_slow(target: Target, p: SlowParams) -> Revert:
    service = _service(target, p.service)
    return _set(service, "delay", p.delay, service.delay)


async def chain_stall(target: Target, _: Any) -> Revert:
    return _set(_chain(target), "production_stalled", True, False)


async def finality_stall(target: Target, _: Any) -> Revert:
    return _set(_chain(target), "finality_stalled", True, False)


async def chain_reorg(target: Target, p: ReorgParams) -> Revert:
    # A reorg cannot be undone; the chain simply goes on from the new fork.
    _chain(target).reorg(p.depth)
    return _nothing


async def chain_reset(target: Target, _: Any) -> Revert:
    # The nodes come back with a fresh database: heights start again; nothing to undo.
    _chain(target).reset()
    for node in target.nodes.values():
        await node.close_websockets()
    return _nothing


async def node_down(target: Target, p: NodeParams) -> Revert:
    node = _node(target, p.node)
    revert = _set(node.faults, "too_many_connections", True, False)
    await node.close_websockets()
    return revert


async def rpc_errors(target: Target, p: NodeParams) -> Revert:
    return _set(_node(target, p.node).faults, "malformed_json", True, False)


async def rpc_split_bodies(target: Target, p: SplitParams) -> Revert:
    node = _node(target, p.node)
    before, node.faults.split_body = node.faults.split_body, p.delay

    async def revert() -> None:
        node.faults.split_body = before

    return revert


async def rpc_websocket_only(target: Target, p: NodeParams) -> Revert:
    node = _node(target, p.node)
    node.faults.websocket_only = True

    async def revert() -> None:
        node.faults.websocket_only = False

    return revert


async def rpc_latency(target: Target, p: LatencyParams) -> Revert:
    faults = _node(target, p.node).faults
    return _set(faults, "latency", p.delay, faults.latency)


def _s3_args(cloud: SandboxCloud) -> dict[str, Any]:
    return {
        "endpoint_url": cloud.url,
        "region_name": cloud.region,
        "aws_access_key_id": "sandbox",
        "aws_secret_access_key": "sandbox",
    }


_STAMP = "%Y%m%d-%H%M%S"


def _key_time(key: str) -> float | None:
    stem = key.rsplit("-", 2)
    if len(stem) < 3:
        return None
    text = f"{stem[-2][-8:]}-{stem[-1][:6]}"
    try:
        return datetime.strptime(text, _STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


async def _delete_backups(target: Target, p: BackupParams) -> Revert:
    """Delete backups (all, or those younger than ``newer_than``); the revert puts every
    deleted object back. The sandbox's backup job writes on the platform's real cadence (every
    30 min), so within a drill it does not refill what was deleted."""
    cloud = target.cloud
    if cloud is None:
        raise RuntimeError("backup faults need the sandbox's AWS (pip install 'srd[sandbox]')")
    session = get_session()
    saved: dict[str, bytes] = {}
    async with session.create_client("s3", **_s3_args(cloud)) as s3:
        listed = await s3.list_objects_v2(Bucket=cloud.bucket, Prefix=f"{p.kind}/")
        now = clock.now()
        for obj in listed.get("Contents", ()):
            key = str(obj["Key"])
            at = _key_time(key)
            if p.newer_than is not None and (at is None or now - at >= p.newer_than):
                continue
            body = await s3.get_object(Bucket=cloud.bucket, Key=key)
            async with body["Body"] as stream:
                saved[key] = await stream.read()
            await s3.delete_object(Bucket=cloud.bucket, Key=key)

    async def revert() -> None:
        async with session.create_client("s3", **_s3_args(cloud)) as s3:
            for key, data in saved.items():
                await s3.put_object(Bucket=cloud.bucket, Key=key, Body=data)

    return revert


async def backups_deleted(target: Target, p: BackupParams) -> Revert:
    return await _delete_backups(target, p.model_copy(update={"newer_than": None}))


async def backups_aged(target: Target, p: BackupParams) -> Revert:
    if p.newer_than is None:
        raise ValueError("backups_aged needs params.newer_than")
    return await _delete_backups(target, p)


async def dns_slow(target: Target, p: DelayParams) -> Revert:
    proxy = _proxy(target)
    return _set(proxy, "dns_pending", p.seconds / target.scale, proxy.dns_pending)


async def targets_slow(target: Target, p: DelayParams) -> Revert:
    proxy = _proxy(target)
    return _set(proxy, "targets_initial", p.seconds / target.scale, proxy.targets_initial)


async def journal_locked(target: Target, p: DelayParams) -> Revert:
    """Another process holds the journal's write lock (``BEGIN IMMEDIATE``, as a backup tool
    or a stray ``sqlite3`` shell does) for ``seconds`` of drill time: srd's writes wait out
    the busy timeout, retry, and then fail as ``locked``."""
    if target.journal is None:
        raise RuntimeError("journal_locked needs the drill's own SQLite journal (the sandbox's)")
    holder = sqlite3.connect(target.journal, timeout=0, isolation_level=None)
    while True:
        try:
            holder.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError:  # srd is inside a write: take the lock right after
            await asyncio.sleep(0.01)

    def release() -> None:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()

    loop = asyncio.get_running_loop()
    releasing = loop.call_later(p.seconds / target.scale, release)

    async def revert() -> None:
        releasing.cancel()
        with contextlib.suppress(sqlite3.ProgrammingError):  # released already
            release()

    return revert


async def aws_throttle(target: Target, p: ThrottleParams) -> Revert:
    _proxy(target).throttle(p.operation, p.times, p.code)
    # Throttles are used up by the calls they answer; nothing is left to undo.
    return _nothing


def _kubernetes(target: Target) -> FakeKubernetes:
    if target.kubernetes is None:
        raise RuntimeError("this fault needs the sandbox's Kubernetes API")
    return target.kubernetes


async def _api_fault(target: Target, fault: ApiFault, duration: float | None) -> Revert:
    fake = _kubernetes(target)
    if duration is not None:
        fault.until = clock.monotonic() + duration / target.scale
    fake.faults.append(fault)

    async def revert() -> None:
        if fault in fake.faults:
            fake.faults.remove(fault)

    return revert


async def kubernetes_conflicts(target: Target, p: KubernetesConflictParams) -> Revert:
    verbs = frozenset({"update", "patch"})
    fault = ApiFault(409, verbs, frozenset(p.resources), p.times)
    return await _api_fault(target, fault, p.duration)


async def kubernetes_errors(target: Target, p: KubernetesErrorParams) -> Revert:
    verbs = frozenset({p.verb}) if p.verb else None
    resources = frozenset({p.resource}) if p.resource else None
    fault = ApiFault(p.code, verbs, resources, p.times, retry_after=p.retry_after)
    return await _api_fault(target, fault, p.duration)


async def manual(target: Target, p: ManualParams) -> Revert:
    # The operator breaks it (the runner shows the instructions) and repairs it at rollback.
    return _nothing


class NoParams(Strict):
    pass


KINDS: dict[str, FaultKind] = {
    "service_failing": FaultKind(ServiceParams, service_failing, "health endpoint answers 503"),
    "service_slow": FaultKind(SlowParams, service_slow, "health endpoint answers late"),
    "chain_stall": FaultKind(NoParams, chain_stall, "no new blocks"),
    "finality_stall": FaultKind(NoParams, finality_stall, "finalized head stops"),
    "chain_reorg": FaultKind(ReorgParams, chain_reorg, "best chain replaced by a fork"),
    "chain_reset": FaultKind(NoParams, chain_reset, "nodes restart with a fresh database"),
    "node_down": FaultKind(NodeParams, node_down, "node refuses RPC and drops WebSockets"),
    "rpc_errors": FaultKind(NodeParams, rpc_errors, "node answers malformed JSON"),
    "rpc_latency": FaultKind(LatencyParams, rpc_latency, "node answers late"),
    "rpc_split_bodies": FaultKind(SplitParams, rpc_split_bodies, "node answers in two chunks"),
    "rpc_websocket_only": FaultKind(
        NodeParams, rpc_websocket_only, "node refuses HTTP JSON-RPC (405), serves WebSocket"
    ),
    "backups_deleted": FaultKind(BackupParams, backups_deleted, "all backups of a kind deleted"),
    "backups_aged": FaultKind(BackupParams, backups_aged, "recent backups deleted (RPO breach)"),
    "dns_slow": FaultKind(DelayParams, dns_slow, "Route 53 changes stay PENDING"),
    "targets_slow": FaultKind(DelayParams, targets_slow, "new ELBv2 targets stay initial"),
    "aws_throttle": FaultKind(ThrottleParams, aws_throttle, "AWS answers Throttling"),
    "journal_locked": FaultKind(
        DelayParams, journal_locked, "another process holds the journal's write lock"
    ),
    "kubernetes_conflicts": FaultKind(
        KubernetesConflictParams, kubernetes_conflicts, "Kubernetes writes answer 409 Conflict"
    ),
    "kubernetes_errors": FaultKind(
        KubernetesErrorParams, kubernetes_errors, "Kubernetes API answers 5xx or 429"
    ),
    "manual": FaultKind(ManualParams, manual, "injected by the operator"),
}
REAL_KINDS = frozenset({"manual"})
"""The kinds a drill on a real environment may have: srd injects nothing there."""
