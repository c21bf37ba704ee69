"""The actuator contract: how failover acts on infrastructure, safely.

An actuator names a system srd can change (``kubernetes``, ``aws``, or a plug-in registered
under the entry point group ``srd.actuators``). Every action goes through the same four calls,
so the executor can journal, dry-run, verify and roll back any of them the same way:

1. ``snapshot`` reads the prior state of exactly what the action will change;
2. ``plan`` says what would change, as a readable diff, without changing anything (dry-run);
3. ``apply`` makes the change — idempotent: applying twice leaves the same state;
4. ``converged`` tells whether the change has taken effect (rollout done, DNS INSYNC, targets
   healthy); the executor polls it until the step's deadline;

and ``restore`` puts back a snapshot (rollback restores exactly what the action changed).

Optionally, an actuator can also say which calls its credentials would be refused
(``PermissionChecker``: ``denied`` and ``grant``), read-only, so ``srd simulate --target real``
finds a missing permission before a drill or a 3 a.m. failover does. The preflight looks for
the capability, not for a class: a plug-in that implements both methods is checked like the
shipped actuators; one that does not gets a passed check saying its permissions were not
checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "srd.actuators"

Params = Mapping[str, Any]
"""An action's parameters, from the runbook step (already validated by the actuator)."""

State = dict[str, Any]
"""A JSON-serialisable snapshot of what an action changes; stored in the journal."""


@dataclass(frozen=True)
class Plan:
    """What an action would do. ``changes`` are human-readable lines (``- old`` / ``+ new``);
    empty when the target state already holds (applying would be a no-op)."""

    action: str
    target: str
    changes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def noop(self) -> bool:
        return not self.changes


class ActuatorError(Exception):
    """An action failed. ``retryable`` True for throttling, conflicts and timeouts (the
    executor retries within the step's timeout); False for permanent errors (bad request,
    forbidden, not found), which fail the step at once."""

    def __init__(self, message: str, *, retryable: bool, fix: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.fix = fix
        """What to do about it, when the actuator knows better than its caller."""


@runtime_checkable
class Actuator(Protocol):
    name: str
    """The name runbook steps use (``actuator: kubernetes``)."""

    def actions(self) -> frozenset[str]:
        """The actions this actuator offers (``scale_deployment``, ``route53_upsert`` …)."""
        ...

    def validate(self, action: str, params: Params) -> None:
        """Raise ValueError naming the parameter when ``params`` cannot work; runbooks are
        validated at load, never at 3 a.m."""
        ...

    async def snapshot(self, action: str, params: Params) -> State: ...

    async def plan(self, action: str, params: Params) -> Plan: ...

    async def apply(self, action: str, params: Params) -> State:
        """Make the change; return the state after it (journaled)."""
        ...

    async def converged(self, action: str, params: Params) -> bool: ...

    async def restore(self, action: str, params: Params, prior: State) -> None: ...

    async def close(self) -> None:
        """Release clients and sessions."""
        ...


@runtime_checkable
class PermissionChecker(Protocol):
    """The optional capability of an actuator to check its own permissions, changing nothing.

    ``srd simulate --target real`` runs ``denied`` for each action step of the drill's
    runbooks and fails its preflight for each refusal, with ``grant`` as the fix."""

    async def denied(self, action: str, params: Params) -> list[str]:
        """The calls ``action`` with ``params`` needs (snapshot to restore) that srd's
        credentials would be refused, each a readable line: the call and its resource, then
        why in parentheses (``patch deployments/scale in vilokanam-dr (…why…)``); the
        preflight names the check after the part before `` (``. Empty when all are allowed.
        Raise ActuatorError (with its ``fix``) when the check itself cannot be made."""
        ...

    def grant(self, refusal: str) -> str:
        """What to grant srd's credentials so that the call ``refusal`` (a line ``denied``
        returned) is allowed: RBAC for Kubernetes, an IAM policy statement for AWS …"""
        ...
