"""The invariants a drill's exploration checks (``srd simulate --explore``), whatever faults
fall and when (docs/simulate.md lists them, and the ones not checked yet):

- ``min_healthy``: the drill's ``min_healthy`` deployments never have fewer ready replicas
  together than it asks, checked at every write to the sandbox's Kubernetes API;
- ``resolved_alert``: no execution is decided while none of the drill's alerts fires (at the
  drill's looks just before and just after the decision);
- ``deadline``: every execution ends (succeeded, rolled back, failed or escalated) within its
  runbook's budget: settle + the steps' timeouts + the health deadline;
- ``rollback``: the rollback restores the steady state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from srd import clock
from srd.failover.runbooks import Runbook
from srd.simulate.drill import Drill
from srd.simulate.result import DrillResult
from srd.simulate.sandbox.kubernetes import DEPLOYMENTS, FakeKubernetes

ENDED = ("succeeded", "failed", "rolled_back", "escalated", "cancelled", "dry_run", "blocked")


@dataclass(frozen=True)
class Violation:
    invariant: str
    at: float | None
    """Drill seconds since the first fault; None for one judged at the end."""
    detail: str


@dataclass
class Invariants:
    """What must hold however the faults fall, checked while one schedule runs."""

    drill: Drill
    violations: list[Violation] = field(default_factory=list)
    firing: list[tuple[float, bool]] = field(default_factory=list)
    """(at, whether one of the drill's alerts fired) at each look after the first fault."""
    injected_at: float | None = None
    _kubernetes: FakeKubernetes | None = None

    def attach(self, kubernetes: FakeKubernetes | None) -> None:
        self._kubernetes = kubernetes
        if kubernetes is not None and self.drill.min_healthy is not None:
            kubernetes.store.on_commit.append(self._capacity)

    def _capacity(self) -> None:
        spec, kubernetes = self.drill.min_healthy, self._kubernetes
        if spec is None or kubernetes is None:
            return
        ready = 0
        for ref in spec.deployments:
            namespace, _, name = ref.partition("/")
            # A deployment not there has no ready replicas.
            for deployment in kubernetes.store.select(DEPLOYMENTS, namespace):
                if deployment["metadata"]["name"] == name:
                    ready += int((deployment.get("status") or {}).get("readyReplicas") or 0)
        if ready < spec.replicas:
            at = clock.now() - self.injected_at if self.injected_at is not None else None
            detail = f"{ready} ready replicas in {', '.join(spec.deployments)} < {spec.replicas}"
            self.violations.append(Violation("min_healthy", at, detail))

    def look(self, now: float, injected_at: float, firing: bool) -> None:
        self.injected_at = injected_at
        self.firing.append((now, firing))

    def judge(self, result: DrillResult, runbooks: Sequence[Runbook]) -> None:
        """The invariants judged on the whole run: decisions, deadlines, the rollback."""
        injected = self.injected_at
        by_name = {r.name: r for r in runbooks}
        for execution in result.executions:
            created = execution["created_at"]
            since = (created - injected) if injected is not None else None
            before = [f for at, f in self.firing if at <= created][-1:]
            after = [f for at, f in self.firing if at >= created][:1]
            if injected is not None and created >= injected and not any(before + after):
                detail = f"{execution['runbook']} decided while none of the drill's alerts fired"
                self.violations.append(Violation("resolved_alert", since, detail))
            runbook = by_name.get(execution["runbook"])
            ended = [s["at"] for s in execution["states"] if s["state"] in ENDED]
            if runbook is None:
                continue
            budget = runbook.settle + runbook.deadline + sum(s.timeout for s in runbook.steps or [])
            if not ended or ended[0] - created > budget:
                took = f"{ended[0] - created:g}s" if ended else "never ended"
                detail = f"{execution['runbook']}: {took}, budget {budget:g}s"
                self.violations.append(Violation("deadline", since, detail))
        if result.rollback.get("ran") and result.rollback.get("steady_state_restored") is False:
            self.violations.append(Violation("rollback", None, "steady state not restored"))

    def first(self) -> Violation | None:
        return self.violations[0] if self.violations else None
