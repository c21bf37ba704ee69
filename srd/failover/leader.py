"""Leader election on a Kubernetes ``coordination.k8s.io/v1`` Lease: of several srd replicas,
only the one holding the Lease acts.

Each round (every ``retry_period``) reads the Lease and then creates it when absent, renews it
when this replica holds it, or takes it over when its holder let it expire or released it,
counting the takeover in ``leaseTransitions``. Expiry is client-go's rule: the Lease has
expired when this replica has not seen its record change for ``leaseDurationSeconds`` on its
own monotonic clock. The holder's ``renewTime`` is compared for change only, never with this
host's clock, so a replica whose clock is ahead cannot depose a healthy leader and one whose
clock is behind does not wait longer to take over a dead one. Every write carries the
``resourceVersion`` just read, so of two replicas racing for the Lease the API lets one win
and answers 409 to the other, which stays a follower.

Fail closed: ``is_leader()`` turns false as soon as a renewal is ``renew_deadline`` overdue,
whether or not the API could be reached to say so. The deadline is shorter than the lease, so
a leader cut off from the API has stopped acting before a follower can take over (the margin
also absorbs the difference between when a follower saw the last renewal and when it was
made, at most one retry period plus the API's latency). A loss
awaits the ``on_loss`` hook, which the runtime uses to cancel executions in flight; gaining the
Lease awaits ``on_acquire``, which the runtime uses to have the new leader claim its term in
the journal and take up what the previous leader left. After a loss the replica stands again;
the loop never returns before it is told to stop, and then it releases the Lease so a follower
takes over within one retry period. A replica that is killed releases nothing: its Lease
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiohttp
import structlog
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api, V1Lease
from kubernetes_asyncio.client.exceptions import ApiException

from srd import clock
from srd.config import Config
from srd.config.ha import HaConfig
from srd.failover.metrics import FailoverMetrics
from srd.journal import NO_TERM, Fence
from srd.kubeapi import api_configuration
from srd.supervisor import TaskFactory

log = structlog.get_logger("srd.failover.leader")

LossHook = Callable[[], Awaitable[None]]
"""Awaited when this replica stops leading (not when it is cancelled: the daemon is stopping)."""
AcquireHook = Callable[[], Awaitable[None]]
"""Awaited when this replica starts leading (``term`` and ``fence()`` already hold). It runs
inside the election round: keep it short, or the next renewal is late."""


class Leadership(Protocol):
    """Whether this srd instance may act (``LeaseLeadership``: a Kubernetes Lease)."""

    def is_leader(self) -> bool: ...

    def fence(self) -> Fence | None:
        """The holder and term the executor's journal writes carry, so the journal refuses
        them once another holder has led (``FencedError``); None: unfenced (one srd alone)."""
        ...


class SingleInstance:
    """Leadership of a single srd: always the leader, never fenced."""

    def is_leader(self) -> bool:
        return True

    def fence(self) -> None:
        return None


def base_identity(configured: str | None) -> str:
    """The configured identity, else the pod name (downward API ``POD_NAME``), else the host."""
    return configured or os.environ.get("POD_NAME") or socket.gethostname()


def holder_identity(configured: str | None) -> str:
    """``base_identity`` plus a random suffix: a restarted process is a new holder, so it never
    mistakes its predecessor's Lease (and term) for its own."""
    return f"{base_identity(configured)}_{secrets.token_hex(4)}"


def leadership_from_config(
    config: Config,
    metrics: FailoverMetrics,
    *,
    on_loss: LossHook | None = None,
    on_acquire: AcquireHook | None = None,
) -> tuple[Leadership, TaskFactory | None]:
    """The leadership the guards consult, and the task body that keeps it (None: nothing to
    keep, a standalone srd always leads)."""
    ha = config.ha
    if ha.mode == "standalone":
        metrics.leader.labels(base_identity(ha.identity)).set(1)
        return SingleInstance(), None
    leadership = LeaseLeadership(
        ha, holder_identity(ha.identity), metrics, on_loss=on_loss, on_acquire=on_acquire
    )
    return leadership, leadership.run


class LeaseLeadership:
    """Holds (or waits for) the Lease; implements the guards' ``Leadership`` protocol."""

    def __init__(
        self,
        settings: HaConfig,
        identity: str,
        metrics: FailoverMetrics,
        *,
        on_loss: LossHook | None = None,
        on_acquire: AcquireHook | None = None,
        wall: Callable[[], float] = clock.now,
    ) -> None:
        """``wall``: the clock the Lease's times are written with (only written: tests skew it
        to show that nothing is judged by it)."""
        if settings.namespace is None:
            raise ValueError("the Lease needs a namespace (ha.namespace)")
        self.identity = identity
        self.namespace = settings.namespace
        self.name = settings.lease_name
        self._settings = settings
        self._gauge = metrics.leader.labels(identity)
        self._gauge.set(0)
        self._on_loss = on_loss
        self._on_acquire = on_acquire
        self._held = False
        self._renewed = 0.0
        """Monotonic time at which the last successful round began."""
        self.term: int | None = None
        """``leaseTransitions`` when this replica acquired the Lease (None while following):
        larger for every new holder, so a write fenced on it refuses a deposed leader."""
        self._leader: str | None = None
        self._last_error = ""
        self._api: ApiClient | None = None
        self._wall = wall
        self._seen: tuple[Any, ...] | None = None
        """The Lease's record as last read while another replica held it."""
        self._seen_at = 0.0
        """Monotonic time at which this replica saw ``_seen`` change."""

    def is_leader(self) -> bool:
        return self._held and clock.monotonic() - self._renewed < self._settings.renew_deadline

    def fence(self) -> Fence:
        """This replica's identity and term while it leads; while it follows (or once its
        renewal is overdue) a term every journal refuses."""
        term = self.term if self.term is not None and self.is_leader() else NO_TERM
        return Fence(self.identity, term)

    @property
    def leader(self) -> str | None:
        """The holder last seen on the Lease (this replica's identity while it leads)."""
        return self._leader

    async def run(self, stop: asyncio.Event) -> None:
        """The supervised task body: stand, lead, stand again after a loss, until ``stop``."""
        try:
            while not stop.is_set():
                await self._round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._pause())
            await self._release()
        except asyncio.CancelledError:
            self._step_down("leader election cancelled")
            raise
        except Exception:
            await self._lose("leader election failed")
            raise
        finally:
            if self._api is not None:
                await self._api.close()
                self._api = None

    def _pause(self) -> float:
        retry = self._settings.retry_period
        if self._held:
            # Wake at the renew deadline at the latest, so a loss is announced on time.
            left = self._renewed + self._settings.renew_deadline - clock.monotonic()
            return max(0.0, min(retry, left))
        # Followers spread their attempts, as client-go's jitter does.
        return retry * random.uniform(1.0, 1.2)  # noqa: S311 - not for security

    async def _round(self) -> None:
        started = clock.monotonic()
        limit = self._settings.renew_deadline
        if self._held:
            limit = self._renewed + self._settings.renew_deadline - started
        try:
            async with asyncio.timeout(max(0.0, limit)):
                holder, term = await self._attempt()
        except ApiException as exc:
            if exc.status == 409:
                await self._lose("another replica wrote the Lease first (409 conflict)")
                return
            self._failed(f"the API answered {exc.status} {exc.reason}", exc.status == 403)
        except kube_config.ConfigException as exc:
            self._failed(f"cannot load Kubernetes credentials: {exc}", True)
        except TimeoutError:
            self._failed(f"no answer within {max(0.0, limit):.3g}s", False)
        except (aiohttp.ClientError, OSError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}", False)
        else:
            self._last_error = ""
            self._observed(holder)
            if term is not None:
                self._renewed = started
                await self._lead(term)
            else:
                await self._lose(f"the Lease is held by {holder}")
            return
        if self._held and clock.monotonic() - self._renewed >= self._settings.renew_deadline:
            await self._lose(f"not renewed within {self._settings.renew_deadline:g}s")

    async def _attempt(self) -> tuple[str, int | None]:
        """One read and at most one write: the holder afterwards, and the term when it is us."""
        api = await self._client()
        leases = CoordinationV1Api(api)
        try:
            lease = await leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await leases.create_namespaced_lease(self.namespace, self._new_lease())
            return self.identity, 0
        spec = lease.spec
        holder = spec.holder_identity if spec is not None else None
        transitions = int(spec.lease_transitions or 0) if spec is not None else 0
        if holder == self.identity:
            body = self._written(api, lease, {"renewTime": self._now()})
            await leases.replace_namespaced_lease(self.name, self.namespace, body)
            return self.identity, transitions
        if holder and not self._expired(lease):
            return holder, None
        now = self._now()
        takeover = {
            "holderIdentity": self.identity,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions + 1,
        }
        body = self._written(api, lease, takeover)
        await leases.replace_namespaced_lease(self.name, self.namespace, body)
        log.info("took over the Lease", previous=holder or "(released)", lease=self.name)
        return self.identity, transitions + 1

    def _expired(self, lease: V1Lease) -> bool:
        """Whether this replica has not seen the Lease's record change for its duration, on
        its own monotonic clock (any write changes ``resourceVersion``)."""
        spec = lease.spec
        if spec is None or spec.renew_time is None:
            return True
        version = lease.metadata.resource_version if lease.metadata is not None else None
        record = (version, spec.holder_identity, spec.renew_time, spec.lease_transitions)
        now = clock.monotonic()
        if record != self._seen:
            self._seen, self._seen_at = record, now
        duration = spec.lease_duration_seconds or self._settings.lease_duration
        return bool(now - self._seen_at >= duration)

    def _new_lease(self) -> V1Lease:
        now = self._now()
        return _as_lease(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(self._settings.lease_duration),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
        )

    def _written(self, api: ApiClient, lease: V1Lease, changes: dict[str, Any]) -> V1Lease:
        """The Lease as read (resourceVersion included: the write is conditional on it) with
        ``changes`` to its spec."""
        body: dict[str, Any] = api.sanitize_for_serialization(lease)
        spec = body.setdefault("spec", {})
        if lease.spec is not None:
            # Times kept from the read are written back as MicroTime, not as isoformat gives.
            for key, value in (
                ("acquireTime", lease.spec.acquire_time),
                ("renewTime", lease.spec.renew_time),
            ):
                if value is not None:
                    spec[key] = _micro(value)
        spec["leaseDurationSeconds"] = int(self._settings.lease_duration)
        spec.update(changes)
        return _as_lease(body)

    async def _release(self) -> None:
        """On a clean stop: step down, then hand the Lease back so a follower need not wait
        for it to expire (what client-go's ReleaseOnCancel writes)."""
        if not self._held:
            return
        await self._lose("stopping")
        try:
            async with asyncio.timeout(self._settings.renew_deadline):
                api = await self._client()
                leases = CoordinationV1Api(api)
                lease = await leases.read_namespaced_lease(self.name, self.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.identity:
                    return
                now = self._now()
                released = {
                    "holderIdentity": "",
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseDurationSeconds": 1,
                }
                body = self._written(api, lease, released)
                await leases.replace_namespaced_lease(self.name, self.namespace, body)
            log.info("released the Lease", lease=self.name)
        except (ApiException, TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("could not release the Lease; it will expire", error=str(exc))

    async def _lead(self, term: int) -> None:
        if self._held:
            return
        self._held = True
        self.term = term
        self._gauge.set(1)
        log.warning("leading: this replica acts", identity=self.identity, term=term)
        if self._on_acquire is not None:
            await self._on_acquire()

    def _step_down(self, reason: str) -> bool:
        """Stop leading at once; False when this replica was not leading."""
        if not self._held:
            return False
        self._held = False
        self.term = None
        self._gauge.set(0)
        log.warning("lost leadership: this replica stops acting", reason=reason)
        return True

    async def _lose(self, reason: str) -> None:
        if self._step_down(reason) and self._on_loss is not None:
            await self._on_loss()

    def _observed(self, holder: str) -> None:
        if holder != self._leader and holder != self.identity:
            log.info("following", leader=holder, lease=self.name)
        self._leader = holder

    def _failed(self, reason: str, permanent: bool) -> None:
        if permanent:
            reason += " (check srd's RBAC and credentials: see deploy/kubernetes/rbac.yaml)"
        if reason != self._last_error:
            log.warning("leader election round failed", reason=reason, leading=self._held)
        self._last_error = reason

    def _now(self) -> str:
        return _micro(datetime.fromtimestamp(self._wall(), UTC))

    async def _client(self) -> ApiClient:
        if self._api is None:
            connection = self._settings.kubernetes
            configuration = await api_configuration(
                host=str(connection.host) if connection.host is not None else None,
                kubeconfig=connection.kubeconfig,
                context=connection.context,
            )
            self._api = ApiClient(configuration)
        return self._api


def _as_lease(body: dict[str, Any]) -> V1Lease:
    """A Lease body as JSON, sent as it is. Not a V1Lease model: its times serialise through
    ``datetime.isoformat()``, which drops the fraction at whole seconds, and the API server
    parses MicroTime with exactly six fractional digits."""
    return cast(V1Lease, body)


def _micro(moment: datetime) -> str:
    """A MicroTime, as the API server writes and parses it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
