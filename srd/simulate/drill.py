"""Drill files: a game day written down (``drills/*.yaml``), validated like every srd file.

A drill names the recovery scenario it exercises and its objectives, the steady state that
must hold before and after, the faults to inject and when, the stop conditions that abort it,
the alert rules and runbooks the daemon runs with, what the simulated operator does at
approval steps, and what is expected. See docs/simulate.md for every key.

Durations in a drill are in the drill's own time. On the sandbox that is the time the drill
runs on (virtual: ``srd.simulate.clock``); on a real environment with ``--time-scale`` the
runner divides them by the scale to run and multiplies measured times back to report.

Runbooks are preferably the shipped ones by reference (``{from, name, vars}``): the drill
tests what ships. A drill's alerts are its own, in the one expression form it evaluates
(``selector OP number``): the shipped Prometheus rules use PromQL functions (``max``,
``absent``, ``label_replace``) that this form does not have, so a drill restates the alert
it needs, under the shipped alert's name so that the shipped runbook's match takes it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from srd.config import ConfigError, ConfigIssue
from srd.config.durations import Duration
from srd.config.files import load_yaml_model, parse_yaml_model
from srd.config.types import Strict, matching
from srd.evaluation.recovery import DisasterRecovery, ScenarioName
from srd.evaluation.rules import Outcome, Selector, SeriesNeed, SeriesReader
from srd.model import LabelSet, Sample
from srd.simulate.faults import KINDS

_EXPR = re.compile(
    r"^\s*(?P<selector>.+?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>-?[0-9.eE+-]+)\s*$"
)
OPS: Mapping[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DR = ROOT / "rules" / "disaster_recovery.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Condition:
    """``selector OP number`` — ``srd_probe_up{target="web-viewer"} == 1``: the one kind of
    expression a drill's probes, stop conditions and alerts use (a plain selector, no PromQL
    functions), so srd evaluates it itself on its own samples."""

    text: str
    selector: Selector
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Condition:
        found = _EXPR.match(text)
        if found is None:
            raise ValueError(
                f"cannot read {text!r}: write selector OP number, e.g. "
                'srd_probe_up{target="web-viewer"} == 1 (OP one of == != < <= > >=)'
            )
        try:
            value = float(found["value"])
        except ValueError:
            raise ValueError(f"{text!r}: {found['value']!r} is not a number") from None
        return cls(text, Selector.parse(found["selector"]), found["op"], value)

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.value)

    def series(self, samples: Iterable[Sample]) -> dict[LabelSet, float]:
        """The selected series' current values among ``samples``."""
        found: dict[LabelSet, float] = {}
        for sample in samples:
            if sample.name == self.selector.name and self.selector.matches(dict(sample.labels)):
                found[tuple(sorted(sample.labels))] = sample.value
        return found

    def all_hold(self, samples: Iterable[Sample]) -> tuple[bool, str]:
        """Steady state: every selected series meets it, and there is at least one."""
        values = self.series(samples)
        if not values:
            return False, f"{self.text}: no data"
        bad = [labels for labels, value in values.items() if not self.holds(value)]
        if bad:
            shown = ", ".join(
                f"{series_text(self.selector.name, b)} = {values[b]:g}" for b in bad[:3]
            )
            return False, shown
        return True, ""

    def any_holds(self, samples: Iterable[Sample]) -> str | None:
        """Stop condition: the first series that meets it, described; None when none does."""
        for labels, value in self.series(samples).items():
            if self.holds(value):
                return f"{self.text} ({series_text(self.selector.name, labels)} = {value:g})"
        return None


def series_text(name: str, labels: LabelSet) -> str:
    """A series as PromQL writes it: ``srd_probe_up{probe="http",target="web-viewer"}``."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _condition(text: str) -> str:
    Condition.parse(text)
    return text


class DrillAlert(Strict):
    """An alert rule the daemon evaluates during the drill, beside its rule packs."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    expr: str = Field(description='selector OP number: srd_probe_up{target="database"} == 0')
    for_: Duration = Field(0.0, alias="for", description="Drill time the condition must hold.")
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""

    _check_expr = field_validator("expr")(_condition)


class StopCondition(Strict):
    """A stop condition that must hold for a while before it aborts the drill."""

    expr: str = Field(description='selector OP number: srd_probe_up{target="web"} == 0')
    for_: Duration = Field(
        0.0, alias="for", description="Drill time it must hold, as an alert's for."
    )

    _check_expr = field_validator("expr")(_condition)


class FaultSpec(Strict):
    """One fault: ``kind`` (see ``srd.simulate.faults.KINDS``) with its ``params``, injected
    ``at`` this offset after the steady state is confirmed."""

    id: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$", description="Default: kind-N.")
    kind: str
    at: Duration = 0.0
    params: dict[str, Any] = Field(default_factory=dict)
    repaired_by: str | None = Field(
        None,
        description="A runbook step whose success repairs this fault (the simulated "
        "restore or traffic switch worked): the fault is reverted when that step ends ok.",
    )

    @model_validator(mode="after")
    def _known(self) -> FaultSpec:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {sorted(KINDS)}")
        KINDS[self.kind].check(self.params)
        return self


class MinHealthy(Strict):
    """The capacity a failover must never go below (exploration checks it at every write to
    the sandbox's Kubernetes API): ready replicas of these deployments, together."""

    deployments: list[str] = Field(min_length=1, description="namespace/name of each.")
    replicas: int = Field(1, ge=1)


class SteadyState(Strict):
    probes: list[str] = Field(min_length=1, description="Conditions that must all hold.")
    within: Duration = Field(
        300.0, description="Drill time to reach the steady state, before and after the drill."
    )

    _check_probes = field_validator("probes")(lambda v: [_condition(t) for t in v])


class Objectives(Strict):
    rto: Duration | None = Field(None, description="Default: the scenario's in the DR pack.")
    rpo: Duration | None = Field(None, description="Default: the scenario's in the DR pack.")


class Operator(Strict):
    """The humans of the drill: how long they take to grant each approval step."""

    approvals: dict[str, Duration] = Field(
        default_factory=dict, description="Step name → drill time until it is approved."
    )
    default_approval: Duration = Field(60.0, description="For approval steps not listed.")


ObjectiveName = Literal["rto", "rpo"]
OBJECTIVES: tuple[ObjectiveName, ...] = ("rto", "rpo")


class Expect(Strict):
    runbook: str | None = Field(None, description="The runbook that must run (and succeed).")
    objectives: list[ObjectiveName] = Field(default_factory=lambda: list(OBJECTIVES))


_SERVICE_NAME = "a service name (lower case letters, digits and -, a letter first)"


class Drill(Strict):
    name: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$", description="Default: file stem.")
    description: str = ""
    scenario: ScenarioName
    objectives: Objectives = Field(default_factory=Objectives)
    time_scale: float = Field(
        60.0,
        gt=0,
        description="Obsolete: the sandbox runs drills on virtual time (srd.simulate.clock); "
        "accepted, and ignored, so that older drills still load.",
    )
    probe_interval: Duration = Field(
        10.0,
        gt=0,
        description="On the sandbox: drill time between probes of each target, between rule "
        "evaluations and between the drill's looks at the registry and the journal; the "
        "precision of the measured times.",
    )
    expect_breach: bool = Field(
        False, description="The drill exists to show a breach: a breach counts as passing."
    )
    services: list[Annotated[str, matching(r"[a-z][a-z0-9-]{0,40}", _SERVICE_NAME)]] = Field(
        default_factory=list,
        description="Extra health endpoints the sandbox serves (and srd probes) by name.",
    )
    steady_state: SteadyState
    alerts: list[DrillAlert] = Field(default_factory=list)
    runbooks: list[dict[str, Any]] = Field(
        min_length=1,
        description="Shipped runbooks by reference ({from: rules/runbooks/FILE, name, vars}: "
        "what ships is what the drill tests, its vars overridden), or runbooks as in a "
        "runbook file; vars zone_id, target_group_arn, dr_target_group_arn, bucket, "
        "dr_address, primary_target, dr_target and <service>_url come from the sandbox.",
    )
    operator: Operator = Field(default_factory=Operator)
    faults: list[FaultSpec] = Field(min_length=1)
    stop_conditions: list[str | StopCondition] = Field(
        default_factory=list,
        description="Checked at every look after the first fault; one that holds (for its "
        "``for``, if given as {expr, for}) aborts.",
    )
    expect: Expect = Field(default_factory=Expect)
    sustain: Duration = Field(
        300.0, description="Drill time the steady state must hold to count as recovered."
    )
    deadline: Duration | None = Field(None, description="Give up after this; default 2 × RTO.")
    rollback: Literal["always", "never"] = "always"
    min_healthy: MinHealthy | None = Field(
        None, description="For --explore: the capacity never to go below."
    )

    @field_validator("stop_conditions")
    @classmethod
    def _stops(cls, value: list[str | StopCondition]) -> list[str | StopCondition]:
        for item in value:
            if isinstance(item, str):
                _condition(item)
        return value

    def stops(self) -> list[StopCondition]:
        """The stop conditions, each with its ``for`` (0 when written as a plain string)."""
        return [
            StopCondition.model_validate({"expr": s}) if isinstance(s, str) else s
            for s in self.stop_conditions
        ]

    def fault_ids(self) -> list[str]:
        return [f.id or f"{f.kind}-{i + 1}" for i, f in enumerate(self.faults)]


@dataclass(frozen=True)
class Targets:
    """The drill's objectives in drill seconds, resolved against the DR pack."""

    rto: float
    rpo: float


def targets(drill: Drill, recovery: DisasterRecovery | None, filename: str) -> Targets:
    """Objectives from the drill, else from the scenario in ``recovery`` (the platform's
    block); ConfigError when neither gives one."""
    found = {}
    scenario = next(
        (
            s
            for s in (recovery.recovery_scenarios if recovery else [])
            if s.scenario == drill.scenario
        ),
        None,
    )
    for kind in ("rto", "rpo"):
        value = getattr(drill.objectives, kind)
        if value is None and scenario is not None:
            value = getattr(scenario, kind)
        if value is None and recovery is not None:
            value = recovery.objective(kind)
        if value is None:
            reason = f"no {kind.upper()} for scenario {drill.scenario!r}: set objectives.{kind}"
            raise ConfigError([ConfigIssue(filename, f"objectives.{kind}", reason)])
        found[kind] = float(value)
    return Targets(found["rto"], found["rpo"])


class RunbookRef(Strict):
    """A shipped runbook named by file and name; only its ``vars`` may be overridden. A value
    may use the sandbox's vars: ``zone: ${zone_id}``."""

    from_: str = Field(alias="from", description="The runbook file: rules/runbooks/FILE.yaml.")
    name: str = Field(description="The runbook's name (as for_each expands it).")
    vars: dict[str, str] = Field(default_factory=dict)


def resolve_runbooks(
    drill: Drill, filename: str, values: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The drill's runbooks as runbook-file entries, each with its ``vars`` complete: a
    shipped one is read from its file (one ``for_each`` set of it) with the drill's vars over
    its own, and ``values`` (the sandbox's) between the two; an inline one gets ``values``
    under its own vars. A var's value may use ``values``: ``zone: ${zone_id}``. ConfigError
    when a reference names no shipped runbook."""
    resolved: list[dict[str, Any]] = []
    for i, raw in enumerate(drill.runbooks):
        if "from" not in raw:
            own = {k: _fill(str(v), values) for k, v in dict(raw.get("vars") or {}).items()}
            resolved.append({**raw, "vars": {**values, **own}})
            continue
        key = f"runbooks.{i}"
        try:
            ref = RunbookRef.model_validate(raw)
        except ValueError as exc:
            reason = f"a shipped runbook takes from, name and vars only ({exc})"
            raise ConfigError([ConfigIssue(filename, key, reason)]) from None
        overrides = {k: _fill(v, values) for k, v in ref.vars.items()}
        shipped = _shipped(ref, filename, key)
        shipped["vars"] = {**shipped["vars"], **values, **overrides}
        resolved.append(shipped)
    return resolved


def _fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``${name}`` that ``values`` has replaced; others left as they are."""
    return _VAR.sub(lambda m: values.get(m[1], m[0]), text)


def _shipped(ref: RunbookRef, filename: str, key: str) -> dict[str, Any]:
    path = Path(ref.from_)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([ConfigIssue(filename, f"{key}.from", f"cannot read: {exc}")]) from None
    names = []
    for raw in data.get("runbooks") or []:
        own = dict(raw.get("vars") or {})
        for extra in raw.get("for_each") or [{}]:
            name = _fill(str(raw["name"]), {**own, **extra})
            names.append(name)
            if name == ref.name:
                body = {k: v for k, v in raw.items() if k not in ("vars", "for_each")}
                return body | {"vars": {**own, **extra}}
    reason = f"{path} has no runbook {ref.name!r} (it has {', '.join(names) or 'none'})"
    raise ConfigError([ConfigIssue(filename, f"{key}.name", reason)])


def parse_drill(text: str, filename: str) -> Drill:
    """Validate a drill; ConfigError names file, line and key of each problem."""
    drill = parse_yaml_model(text, filename, Drill)
    if not drill.name:
        drill = drill.model_copy(update={"name": Path(filename).stem})
    resolve_runbooks(drill, filename, {})  # a reference to no shipped runbook fails here
    return drill


def load_drill(path: Path) -> Drill:
    drill = load_yaml_model(path, Drill)
    if not drill.name:
        drill = drill.model_copy(update={"name": path.stem})
    resolve_runbooks(drill, str(path), {})  # a reference to no shipped runbook fails here
    return drill


@dataclass(frozen=True)
class ConditionAlert:
    """A drill alert as an ``AlertRule`` the engine evaluates (``for`` in the time it runs)."""

    name: str
    condition: Condition
    for_: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    keep_firing_for: float = 0.0

    def expr(self) -> str:
        return f"{self.condition.selector.promql()} {self.condition.op} {self.condition.value:g}"

    def needs(self) -> list[SeriesNeed]:
        return [SeriesNeed(self.condition.selector, 0.0)]

    def evaluate(
        self, store: SeriesReader, at: float, firing: Mapping[str, bool]
    ) -> dict[LabelSet, Outcome]:
        values = store.last(self.condition.selector, at)
        return {labels: self.condition.holds(value) for labels, value in values.items()}


@dataclass(frozen=True)
class DrillAlerts:
    """The drill's alerts as one rule group."""

    rules: tuple[ConditionAlert, ...]
    name: str = "drill"

    def recording_rules(self) -> list[Any]:
        return []

    def alert_rules(self) -> tuple[ConditionAlert, ...]:
        return self.rules


def alert_group(drill: Drill, scale: float) -> DrillAlerts:
    return DrillAlerts(
        tuple(
            ConditionAlert(
                a.name,
                Condition.parse(a.expr),
                a.for_ / scale,
                {"severity": "critical", **a.labels},
                {"summary": a.summary or a.name},
            )
            for a in drill.alerts
        )
    )
