"""The read-only preflight of a drill on a real environment (``srd simulate --target real``).

Before anything else, and changing nothing, every dependency of the drill is tried once:

- each probe target the drill's steady state reads (``srd_probe_up{target="web"}`` → the
  config's probe ``web``; a condition without a ``target`` matcher reads them all) and each
  ``probe:`` check of its runbooks must be up;
- each HTTP check of its runbooks (``check``, ``wait_until``, ``verify``, ``other_side``,
  ``health``) must answer (any status: the DR side may rightly be idle before a failover);
- each action step (and compensation action) must be readable: its actuator's ``snapshot``
  is the read the step starts with (Route 53 record sets, ELBv2 target health, a deployment's
  scale …), so the credentials, endpoints and names are right;
- each call the action will make must be allowed, where its actuator can say so (the optional
  ``PermissionChecker`` capability): on Kubernetes one SelfSubjectAccessReview per verb and
  resource (``patch deployments/scale in vilokanam-dr``), on AWS one IAM policy simulation
  of srd's own principal per resource (``route53:ChangeResourceRecordSets on
  arn:aws:route53:::hostedzone/Z…``). An actuator without the capability gets a passed
  check that says its permissions were not checked.

Each failed check says what failed and what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import aiohttp

from srd.actuators.base import ActuatorError, PermissionChecker
from srd.config.probes import ProbeTarget, SubstrateTarget
from srd.evaluation.rules import Selector
from srd.failover.runbooks import ActionSpec, Check, HttpCheck, Runbook
from srd.model import Observation
from srd.probes import make_probe
from srd.probes.http import HttpProbe
from srd.probes.substrate import SubstrateProbe
from srd.runtime import Setup
from srd.simulate.drill import Condition, Drill

CHECK_TIMEOUT = 10.0
"""Seconds at most for each preflight check: a dependency that cannot answer in that time
would not answer in a drill either."""


@dataclass(frozen=True)
class PreflightCheck:
    kind: Literal["probe", "check", "read", "permission"]
    name: str
    """What was checked: ``probe web-viewer``, ``GET https://…``, ``patch deployments/scale
    in vilokanam-dr`` …"""
    ok: bool
    detail: str = ""
    fix: str = ""
    """What to do about a failed check."""


def probes_used(drill: Drill, targets: list[ProbeTarget], runbooks: list[Runbook]) -> list[str]:
    """Names of the probe targets the steady state reads and the runbooks' checks name."""
    names = [t.name for t in targets]
    used: list[str] = []
    for text in drill.steady_state.probes:
        selector = Condition.parse(text).selector
        used += [n for n in names if _reads_target(selector, n) and n not in used]
    for _, check in _checks(runbooks):
        if check.probe is not None and check.probe not in used:
            used.append(check.probe)
    return used


def _reads_target(selector: Selector, name: str) -> bool:
    equal, not_equal = dict(selector.equal), dict(selector.not_equal)
    return equal.get("target", name) == name and not_equal.get("target") != name


def _checks(runbooks: list[Runbook]) -> Iterator[tuple[str, Check]]:
    for runbook in runbooks:
        if runbook.health is not None:
            yield f"{runbook.name} health", runbook.health
        for remedy in runbook.plan:
            for step in remedy.steps:
                for key in ("check", "wait_until", "verify", "other_side"):
                    check = getattr(step, key)
                    if check is not None:
                        yield f"{runbook.name}/{step.name} {key}", check


def _actions(runbooks: list[Runbook]) -> Iterator[tuple[str, ActionSpec, list[str]]]:
    """Each action with the run-time variables (``bind``) its parameters use."""
    for runbook in runbooks:
        for remedy in runbook.plan:
            for step in remedy.steps:
                for spec in (step.action, step.compensate):
                    if isinstance(spec, ActionSpec):
                        text = repr(spec.params)
                        used = sorted(n for n in runbook.bound if f"${{{n}}}" in text)
                        yield f"{runbook.name}/{step.name}", spec, used


async def preflight(setup: Setup, drill: Drill, runbooks: list[Runbook]) -> list[PreflightCheck]:
    """Every check, passed or failed, in order: probes, HTTP checks, reads, permissions."""
    probes = setup.config.probes
    targets: list[ProbeTarget] = [*probes.substrate, *probes.http, *probes.exporter]
    targets += probes.streams
    by_name = {t.name: t for t in targets}
    found: list[PreflightCheck] = []
    async with aiohttp.ClientSession() as session:
        for name in probes_used(drill, targets, runbooks):
            found.append(await _probe(by_name.get(name), name, session))
        for where, check in _checks(runbooks):
            if check.http is not None:
                found.append(await _http(where, check.http, session))
    seen: set[tuple[str, str, str]] = set()
    for where, spec, bound in _actions(runbooks):
        key = (spec.actuator, spec.action, repr(sorted(spec.params.items())))
        if bound:
            # Which object it acts on is known only once an earlier step has read it.
            what = f"{where}: {spec.actuator} {spec.action}"
            detail = f"not checked: its parameters use {bound}, read when the runbook runs"
            found.append(PreflightCheck("read", what, True, detail))
        elif key not in seen:
            seen.add(key)
            found += await _action(setup, where, spec)
    return found


async def _probe(
    target: ProbeTarget | None, name: str, session: aiohttp.ClientSession
) -> PreflightCheck:
    what = f"probe {name}"
    if target is None:
        fix = f"add a probe target named {name!r} to the config's probes"
        return PreflightCheck("probe", what, False, "no such probe target", fix)
    obs: Observation
    if isinstance(target, SubstrateTarget):
        obs = await SubstrateProbe(target, session)()
    else:
        obs = await make_probe(target, session)[1]()
    if obs.up:
        return PreflightCheck("probe", what, True, "up")
    fix = f"make probe {name}'s target answer srd (network path, URL, credentials) first"
    return PreflightCheck("probe", what, False, f"down: {obs.reason}", fix)


async def _http(where: str, check: HttpCheck, session: aiohttp.ClientSession) -> PreflightCheck:
    what = f"{where}: GET {check.url}"
    obs = await HttpProbe(check, session)()
    if obs.http_status is not None:
        return PreflightCheck("check", what, True, f"answered {obs.http_status}")
    fix = "the runbook would wait on this URL: fix it in the runbook or make it reachable"
    return PreflightCheck("check", what, False, f"no answer: {obs.reason}", fix)


async def _action(setup: Setup, where: str, spec: ActionSpec) -> list[PreflightCheck]:
    actuator = setup.actuators[spec.actuator]
    what = f"{where}: {spec.actuator} {spec.action}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await actuator.snapshot(spec.action, spec.params)
    except (ActuatorError, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {CHECK_TIMEOUT:g}s"
        fix = (
            f"check actuators.{spec.actuator} in the config (endpoint, credentials) and the "
            "step's params; srd must be able to read what the step changes"
        )
        return [PreflightCheck("read", what, False, reason, fix)]
    found = [PreflightCheck("read", what, True, "readable")]
    if not isinstance(actuator, PermissionChecker):
        detail = (
            f"not checked: the {spec.actuator} actuator cannot say what its credentials may do "
            "(it has no denied/grant); a refusal shows only when the step acts"
        )
        return [*found, PreflightCheck("permission", what, True, detail)]
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            denied = await actuator.denied(spec.action, spec.params)
    except (ActuatorError, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {CHECK_TIMEOUT:g}s"
        fix = getattr(exc, "fix", "") or (
            f"srd must be able to check its own permissions on {spec.actuator}: "
            f"see what happened, and actuators.{spec.actuator} in the config"
        )
        return [*found, PreflightCheck("permission", what, False, reason, fix)]
    for refusal in denied:
        call = refusal.split(" (")[0]
        fix = actuator.grant(refusal)
        found.append(PreflightCheck("permission", f"{where}: {call}", False, refusal, fix))
    if not denied:
        found.append(PreflightCheck("permission", what, True, "every call allowed"))
    return found
