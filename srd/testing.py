"""Fakes for testing without infrastructure (as ``structlog.testing``): srd's own tests use
them, and so can anyone writing runbooks, rules or actuator plug-ins.

- ``FakeActuator`` and ``FakeChecks``: run a runbook with no cloud and scripted health.
- ``FakeChain`` and ``FakeSubstrateNode``: a Substrate node's JSON-RPC (HTTP and WebSocket,
  legacy subscriptions and ``chainHead_v1``) with scriptable faults; ``node.serve()`` yields
  its URL.
- ``FakeKubernetes``: the Kubernetes API's wire protocol for Deployments, Services, Pods and
  Leases, with injectable API faults.
- ``FakeNodeExporter`` and ``FakeStreamPlatform``: a node exporter's page and the platform's
  stream stats.
- ``running_sandbox``: the whole simulated platform that ``srd run --sandbox`` monitors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from srd.actuators.base import ActuatorError, Params, Plan, State
from srd.failover.checks import CheckResult
from srd.failover.runbooks import Check
from srd.simulate.sandbox import running_sandbox
from srd.simulate.sandbox.exporters import FakeNodeExporter, FakeStreamPlatform
from srd.simulate.sandbox.kubernetes import FakeKubernetes
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode

__all__ = [
    "FakeActuator",
    "FakeChain",
    "FakeChecks",
    "FakeKubernetes",
    "FakeNodeExporter",
    "FakeStreamPlatform",
    "FakeSubstrateNode",
    "running_sandbox",
]


class FakeActuator:
    """An actuator over an in-memory dict with one action, ``set`` (key, value).

    ``errors[key]`` are raised, in order, by the next applies of ``key``; ``lag`` is how many
    ``converged`` polls answer False after an apply; ``calls`` lists every apply and restore.
    """

    def __init__(self, name: str = "fake", state: dict[str, Any] | None = None) -> None:
        self.name = name
        self.state: dict[str, Any] = dict(state or {})
        self.errors: dict[str, list[ActuatorError]] = {}
        self.lag = 0
        self.calls: list[tuple[str, str, Any]] = []
        self.before_apply: Callable[[str], None] | None = None
        """Called with the key before an apply changes anything (crash tests kill here)."""
        self._lagging: dict[str, int] = {}

    def actions(self) -> frozenset[str]:
        return frozenset({"set"})

    def validate(self, action: str, params: Params) -> None:
        if action != "set":
            raise ValueError(f"unknown action {action!r}")
        if not isinstance(params.get("key"), str) or "value" not in params:
            raise ValueError("params need 'key' (a string) and 'value'")

    async def snapshot(self, action: str, params: Params) -> State:
        return {"value": self.state.get(params["key"])}

    async def plan(self, action: str, params: Params) -> Plan:
        key, new = params["key"], params["value"]
        old = self.state.get(key)
        changes = () if old == new else (f"- {key}: {old}", f"+ {key}: {new}")
        return Plan("set", key, changes)

    async def apply(self, action: str, params: Params) -> State:
        key = params["key"]
        if self.before_apply is not None:
            self.before_apply(key)
        self.calls.append(("apply", key, params["value"]))
        if self.errors.get(key):
            raise self.errors[key].pop(0)
        self.state[key] = params["value"]
        self._lagging[key] = self.lag
        return {"value": params["value"]}

    async def converged(self, action: str, params: Params) -> bool:
        key = params["key"]
        if self._lagging.get(key, 0) > 0:
            self._lagging[key] -= 1
            return False
        return bool(self.state.get(key) == params["value"])

    async def restore(self, action: str, params: Params, prior: State) -> None:
        key = params["key"]
        self.calls.append(("restore", key, prior["value"]))
        if prior["value"] is None:
            self.state.pop(key, None)
        else:
            self.state[key] = prior["value"]

    async def close(self) -> None:
        return None


class FakeChecks:
    """Check results by probe name: ``healthy[name]`` True/False (missing: no data)."""

    def __init__(self, **healthy: bool) -> None:
        self.healthy = dict(healthy)

    async def __call__(self, check: Check) -> CheckResult:
        name = check.probe or (check.http.name if check.http is not None else "")
        ok = self.healthy.get(name)
        if ok is None:
            return CheckResult(False, f"no data for {name}")
        return CheckResult(ok, "" if ok else f"{name} is down")
