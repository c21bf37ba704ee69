"""Runbooks: which alerts trigger them and the ordered steps that restore health.

A runbook file holds ``runbooks:``, each with Alertmanager-style ``match`` matchers and either
``steps`` or ``remedies`` (ordered alternatives, each a list of steps). A step is exactly one
of ``action`` (an actuator action), ``check`` (must pass now), ``wait_until`` (must pass before
the step's timeout), ``approval`` (a human says go) or ``delay`` (a wait whose due time is
journaled, so it survives restarts and leader changes). ``${var}`` in any string is replaced
from ``vars``; ``for_each`` lists var sets, making one runbook per set (one per service). An
action step's ``bind`` names variables read at run time from its snapshot (the blue-green
runbook's ``${active}`` and ``${idle}`` colours); they are journaled with it, so a resumed
execution uses the values it read. A change's ``inputs`` are variables its caller sets
(``srd execute blue_green_deploy --var image=…``), each with a default: the values are
journaled with the execution, so a resumed execution uses the same ones.
Everything, actuator parameters included, is validated at load (with the inputs' defaults):
never at 3 a.m.

A runbook is a ``remedy`` (the default: it restores health after an alert) or a ``change``
(a deploy, started by hand). Only a change may have a ``budget_gate``: an outage burns the
error budget, and a gate on its remedy would let the outage block its own fix.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from srd.actuators.base import Actuator
from srd.config import ConfigError, ConfigIssue
from srd.config.durations import Duration
from srd.config.files import (
    issue_at,
    load_yaml,
    read_config_text,
    validate_model,
    validation_issues,
)
from srd.config.probes import BodyMatch, HttpTarget
from srd.config.types import Strict
from srd.model import unquote

Name = str
_NAME = r"^[A-Za-z0-9_.\[\]-]{1,100}$"
_MATCHER = re.compile(
    r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))\s*$'
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_INPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_INPUT = 1024
"""Characters of an input's value at most (an image reference is at most 255 + tag)."""
BOUND_SAMPLE = "bound"
"""Stands for a variable a step binds at run time when its users are validated at load."""


def input_problem(value: str) -> str:
    """Why ``value`` cannot be an input's value; "" when it can."""
    if not value:
        return "is empty"
    if len(value) > MAX_INPUT:
        return f"is longer than {MAX_INPUT} characters"
    if not value.isprintable():
        return f"{value!r} holds control characters"
    return ""


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager route matcher; a missing label matches as the empty string, and
    regexes are anchored at both ends, as in Alertmanager."""

    label: str
    op: str
    """One of = != =~ !~."""
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        found = _MATCHER.match(text)
        if found is None:
            raise ValueError(
                f'cannot read matcher {text!r}; write label="value" with one of = != =~ !~'
            )
        label, op, quoted, bare = found.groups()
        value = unquote(quoted) if quoted is not None else bare
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {text!r}: invalid regular expression: {exc}") from None
        return cls(label, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit


class HttpCheck(HttpTarget):
    """An HTTP health check: the probe settings of ``probes.http`` (``interval`` is the wait
    between attempts of a wait_until or verify)."""

    name: str = Field("check", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


# HttpTarget names BodyMatch before config.py defines it; resolve it for this subclass.
HttpCheck.model_rebuild(_types_namespace={"BodyMatch": BodyMatch})


class Check(Strict):
    """A health check that must pass: an HTTP request, or the last result of a probe target
    srd already runs (``probe: <target name>``)."""

    http: HttpCheck | None = None
    probe: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Check:
        if (self.http is None) == (self.probe is None):
            raise ValueError("give exactly one of 'http' or 'probe'")
        return self

    def describe(self) -> str:
        return f"GET {self.http.url}" if self.http is not None else f"probe {self.probe}"


class ActionSpec(Strict):
    actuator: str = Field(description="The actuator's name (kubernetes, aws, a plug-in).")
    action: str
    params: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.actuator}.{self.action}"


class Step(Strict):
    name: Name = Field(pattern=_NAME)
    action: ActionSpec | None = None
    check: Check | None = None
    wait_until: Check | None = None
    approval: str | None = Field(None, description="What the approver is asked to confirm.")
    delay: Duration | None = Field(
        None,
        description="Wait this long before the next step; the due time is journaled, so a "
        "restart or a new leader waits only what is left.",
    )
    bind: dict[str, str] = Field(
        default_factory=dict,
        description="Variables for later steps (${name}), each read from this action's "
        "snapshot by key (the state before the action).",
    )
    requires_approval: bool = Field(False, description="Ask a human before this step runs.")
    timeout: Duration = Field(
        300.0, description="Deadline of the step: apply, convergence and verify together."
    )
    verify: Check | None = Field(
        None, description="Re-checked after the action until it passes or the timeout ends."
    )
    compensate: Literal["restore", "none"] | ActionSpec = Field(
        "restore",
        description="Undo on rollback: restore the actuator's snapshot (default), nothing, "
        "or another action.",
    )
    reduces_capacity: bool = Field(
        False,
        description="This step takes a serving side down; it runs only while other_side "
        "passes, so the last healthy side is never taken down.",
    )
    other_side: Check | None = None

    @model_validator(mode="after")
    def _shape(self) -> Step:
        kinds = [
            k
            for k in ("action", "check", "wait_until", "approval", "delay")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a step is exactly one of action, check, wait_until, approval or delay"
            )
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        if self.delay is not None and self.delay <= 0:
            raise ValueError("delay must be greater than 0")
        action_only = {"verify", "compensate", "reduces_capacity", "other_side", "bind"}
        if self.action is None and (misplaced := sorted(action_only & self.model_fields_set)):
            raise ValueError(f"{misplaced} only apply to action steps")
        if self.reduces_capacity and self.other_side is None:
            raise ValueError("reduces_capacity needs other_side: the check of the side kept up")
        return self

    @property
    def kind(self) -> Literal["action", "check", "wait_until", "approval", "delay"]:
        if self.action is not None:
            return "action"
        if self.check is not None:
            return "check"
        if self.delay is not None:
            return "delay"
        return "wait_until" if self.wait_until is not None else "approval"


class Remedy(Strict):
    name: Name = Field(pattern=_NAME)
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique(cls, steps: list[Step]) -> list[Step]:
        names = [step.name for step in steps]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"step names must be unique; repeated: {repeated}")
        return steps


class Runbook(Strict):
    name: Name = Field(pattern=_NAME)
    description: str = ""
    scenario: str | None = Field(
        None, description="The recovery scenario it carries out; its RTO is measured from it."
    )
    kind: Literal["remedy", "change"] = Field(
        "remedy",
        description="remedy: restores health after an alert; change: a deploy, started by hand "
        "(srd execute) or by an alert, and the only kind a budget_gate may hold back.",
    )
    match: list[str] = Field(
        default_factory=list,
        description='Alertmanager route matchers, all must hold: service="web". A change '
        "without any is started by hand only.",
    )
    settle: Duration = Field(
        0.0,
        description="Wait after the alert before the first step; a resolve within it cancels "
        "the execution (one failed check must not trigger failover).",
    )
    cooldown: Duration | None = Field(None, description="Overrides failover.cooldown.")
    health: Check | None = Field(
        None, description="The health this runbook restores, checked after each remedy."
    )
    deadline: Duration = Field(
        600.0, description="How long health may take to come back after a remedy's last step."
    )
    budget_gate: list[str] = Field(
        default_factory=list,
        description="SLOs whose exhausted error budget blocks this change (kind: change only).",
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="Variables the caller sets (srd execute --var NAME=VALUE, or the labels "
        "of the alert that starts it), each with its default (kind: change only). The "
        "default is what the steps are validated with at load.",
    )
    steps: list[Step] | None = None
    remedies: list[Remedy] | None = None

    @field_validator("match")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)
        return value

    @model_validator(mode="after")
    def _kind(self) -> Runbook:
        if self.kind == "remedy" and not self.match:
            raise ValueError("a remedy needs match: the alerts whose outage it remedies")
        if self.kind == "remedy" and self.budget_gate:
            raise ValueError(
                "budget_gate only holds back a change (kind: change): an outage burns the "
                "error budget, and gating its remedy would let the outage block its own fix"
            )
        return self

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, default in value.items():
            if not _INPUT.fullmatch(name):
                raise ValueError(f"input {name!r} is not a name (letters, digits and _)")
            if why := input_problem(default):
                raise ValueError(f"input {name}: default {why}")
        return value

    @model_validator(mode="after")
    def _inputs_of_a_change(self) -> Runbook:
        if self.inputs and self.kind != "change":
            raise ValueError(
                "inputs are for a change (kind: change), started by hand: a remedy acts on "
                "what its alert says, not on values a caller passes"
            )
        if clash := sorted(self.inputs.keys() & self.bound):
            raise ValueError(f"{clash} are both inputs and bound by a step; rename one")
        return self

    def input_values(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The inputs of an execution whose (alert's) labels are ``labels``: each given one,
        else its default."""
        return {name: labels.get(name) or default for name, default in self.inputs.items()}

    @property
    def variables(self) -> set[str]:
        """The variables filled in at run time: inputs, and those steps bind."""
        return self.inputs.keys() | self.bound

    @model_validator(mode="after")
    def _steps_or_remedies(self) -> Runbook:
        if (self.steps is None) == (self.remedies is None):
            raise ValueError("give exactly one of 'steps' or 'remedies'")
        if self.steps is not None:
            Remedy(name="main", steps=self.steps)  # the same checks as a remedy's steps
        names = [remedy.name for remedy in self.plan]
        if len(set(names)) != len(names):
            raise ValueError("remedy names must be unique")
        bound: set[str] = set()
        for remedy in self.plan:
            for step in remedy.steps:
                text = step.model_dump_json(exclude={"bind"})
                if early := sorted(n for n in self.bound - bound if f"${{{n}}}" in text):
                    raise ValueError(f"step {step.name} uses {early} before a step binds them")
                bound |= step.bind.keys()
        return self

    @property
    def plan(self) -> list[Remedy]:
        """The remedies in order; plain ``steps`` are one remedy named ``main``."""
        if self.steps is not None:
            return [Remedy(name="main", steps=self.steps)]
        return self.remedies or []

    @property
    def matchers(self) -> list[Matcher]:
        return [Matcher.parse(text) for text in self.match]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """No matchers match no alert: such a change is started by hand only."""
        matchers = self.matchers
        return bool(matchers) and all(m.matches(labels) for m in matchers)

    @property
    def bound(self) -> set[str]:
        """The variables its steps bind at run time."""
        return {name for remedy in self.plan for step in remedy.steps for name in step.bind}

    def step_at(self, index: int) -> tuple[int, Step]:
        """(remedy position, step) of the execution-wide step ``index``."""
        for position, remedy in enumerate(self.plan):
            if index < len(remedy.steps):
                return position, remedy.steps[index]
            index -= len(remedy.steps)
        raise IndexError(index)

    def first_index(self, remedy_position: int) -> int:
        return sum(len(r.steps) for r in self.plan[:remedy_position])


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runbooks: list[dict[str, Any]] = Field(default_factory=list)


class _Expansion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    vars: dict[str, str] = Field(default_factory=dict)
    for_each: list[dict[str, str]] = Field(default_factory=list)


def parse_runbooks(
    text: str,
    filename: str,
    actuators: Mapping[str, Actuator] | None = None,
    probes: Collection[str] | None = None,
    slos: Collection[str] | None = None,
) -> list[Runbook]:
    """The runbooks of one file; ConfigError names file, line and key of every problem.
    With ``actuators`` each action is checked by its actuator; with ``probes`` each
    ``probe:`` check must name a probe target; with ``slos`` each ``budget_gate`` entry must
    name a loaded SLO (an unknown one would never block: a typo must not disarm the gate)."""
    node, data = load_yaml(text, filename)
    try:
        file = _File.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, filename, node, _File)) from None
    items = _items_node(node)
    runbooks: list[Runbook] = []
    issues: list[ConfigIssue] = []
    for index, raw in enumerate(file.runbooks):
        item = items[index] if index < len(items) else None
        prefix = f"runbooks[{index}]"
        for runbook, problems in _expand(raw, filename, item):
            issues += [_prefixed(p, prefix) for p in problems]
            if runbook is not None:
                found = _check_refs(runbook, filename, item, actuators, probes)
                found += _check_slos(runbook, filename, item, slos)
                issues += [_prefixed(p, prefix) for p in found]
                runbooks.append(runbook)
    names = [r.name for r in runbooks]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        issues.append(ConfigIssue(filename, "runbooks", f"names must be unique: {repeated}"))
    if issues:
        raise ConfigError(issues)
    return runbooks


def load_runbooks(
    paths: Iterable[Path],
    actuators: Mapping[str, Actuator] | None = None,
    probes: Collection[str] | None = None,
    slos: Collection[str] | None = None,
) -> list[Runbook]:
    """Runbooks of every file (directories: their *.yaml / *.yml), every problem listed."""
    files = [
        file
        for path in paths
        for file in (
            sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        )
    ]
    runbooks: list[Runbook] = []
    issues: list[ConfigIssue] = []
    for file in files:
        try:
            text = read_config_text(file)
            runbooks += parse_runbooks(text, str(file), actuators, probes, slos)
        except ConfigError as exc:
            issues += exc.issues
    names = [r.name for r in runbooks]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        issues.append(ConfigIssue(", ".join(map(str, files)), "", f"duplicate names {repeated}"))
    if issues:
        raise ConfigError(issues)
    return runbooks


def _items_node(node: yaml.Node | None) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "runbooks" and isinstance(value, yaml.SequenceNode):
                return list(value.value)
    return []


def _expand(
    raw: dict[str, Any], filename: str, node: yaml.Node | None
) -> Iterable[tuple[Runbook | None, list[ConfigIssue]]]:
    try:
        expansion = _Expansion.model_validate(raw)
    except ValidationError as exc:
        yield None, validation_issues(exc, filename, node, _Expansion)
        return
    body = {k: v for k, v in raw.items() if k not in ("vars", "for_each")}
    late = _bound_names(body) | _input_names(body)
    if clash := sorted(late & (expansion.vars.keys() | {k for e in expansion.for_each for k in e})):
        reason = f"{clash} are run-time variables (inputs or bound); do not set them in vars"
        yield None, [issue_at(filename, node, [], reason)]
        return
    for extra in expansion.for_each or [{}]:
        # A variable filled in at run time stays ${name} until then.
        values = {**{name: f"${{{name}}}" for name in late}, **expansion.vars, **extra}
        missing: set[str] = set()
        data = _substitute(body, values, missing)
        if missing:
            reason = f"undefined variables {sorted(missing)}; define them in vars or for_each"
            yield None, [issue_at(filename, node, [], reason)]
            continue
        try:
            runbook = validate_model(Runbook, data, filename, node)
        except ConfigError as exc:
            yield None, exc.issues
            continue
        yield runbook, []


def _input_names(body: Mapping[str, Any]) -> set[str]:
    inputs = body.get("inputs")
    return {str(name) for name in inputs} if isinstance(inputs, dict) else set()


def _bound_names(body: Mapping[str, Any]) -> set[str]:
    """The ``bind`` names of the raw steps (a malformed body is the model's to report)."""
    remedies = body.get("remedies")
    steps = [body.get("steps")]
    if isinstance(remedies, list):
        steps += [r.get("steps") for r in remedies if isinstance(r, dict)]
    return {
        str(name)
        for group in steps
        if isinstance(group, list)
        for step in group
        if isinstance(step, dict) and isinstance(step.get("bind"), dict)
        for name in step["bind"]
    }


def resolve(step: Step, values: Mapping[str, str]) -> Step:
    """``step`` with the run-time variables ``values`` filled in; ValueError when one it uses
    is not bound (yet) or the result is not a valid step."""
    missing: set[str] = set()
    dumped = step.model_dump(mode="json", exclude_unset=True, by_alias=True)
    data = _substitute(dumped, values, missing)
    if missing:
        raise ValueError(f"step {step.name} uses variables not bound yet: {sorted(missing)}")
    return Step.model_validate(data)


def _substitute(value: Any, values: Mapping[str, str], missing: set[str]) -> Any:
    if isinstance(value, str):

        def one(found: re.Match[str]) -> str:
            if found.group(1) not in values:
                missing.add(found.group(1))
                return found.group(0)
            return values[found.group(1)]

        return _VAR.sub(one, value)
    if isinstance(value, dict):
        return {k: _substitute(v, values, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, missing) for v in value]
    return value


def input_issues(
    runbook: Runbook, labels: Mapping[str, str], actuators: Mapping[str, Actuator]
) -> list[str]:
    """What is wrong with the inputs ``labels`` give ``runbook`` (``srd execute --var``):
    a value no input may have, or one that makes a step's action invalid for its actuator,
    as load validates it with the defaults. Empty: they are fine."""
    given = {name: labels[name] for name in runbook.inputs if name in labels}
    if bad := [
        f"input {name} {why}" for name, value in given.items() if (why := input_problem(value))
    ]:
        return bad
    found = _check_refs(runbook, "", None, actuators, None, given)
    return [f"{issue.key}: {issue.reason}" for issue in found]


def _check_refs(
    runbook: Runbook,
    filename: str,
    node: yaml.Node | None,
    actuators: Mapping[str, Actuator] | None,
    probes: Collection[str] | None,
    inputs: Mapping[str, str] | None = None,
) -> list[ConfigIssue]:
    """``inputs``: the inputs' values to validate actions with (default: their defaults)."""
    issues = []
    for r, remedy in enumerate(runbook.plan):
        base: list[Any] = ["steps"] if runbook.steps is not None else ["remedies", r, "steps"]
        for s, step in enumerate(remedy.steps):
            loc = [*base, s]
            for key, spec in (("action", step.action), ("compensate", step.compensate)):
                if not isinstance(spec, ActionSpec) or actuators is None:
                    continue
                if runbook.variables:
                    sample = dict.fromkeys(runbook.bound, BOUND_SAMPLE)
                    sample |= runbook.input_values(inputs or {})
                    spec = ActionSpec.model_validate(_substitute(spec.model_dump(), sample, set()))
                if reason := _action_problem(spec, actuators):
                    issues.append(issue_at(filename, node, [*loc, key], reason))
            checks = [("check", step.check), ("wait_until", step.wait_until)]
            checks += [("verify", step.verify), ("other_side", step.other_side)]
            for key, check in checks:
                probe = check.probe if check is not None else None
                if probe is not None and probes is not None and probe not in probes:
                    reason = f"no probe target named {probe!r}"
                    issues.append(issue_at(filename, node, [*loc, key, "probe"], reason))
    return issues


def _check_slos(
    runbook: Runbook, filename: str, node: yaml.Node | None, slos: Collection[str] | None
) -> list[ConfigIssue]:
    if slos is None:
        return []
    return [
        issue_at(
            filename,
            node,
            ["budget_gate", index],
            f"no SLO named {name!r} in the rule packs; known: {sorted(slos)}",
        )
        for index, name in enumerate(runbook.budget_gate)
        if name not in slos
    ]


def _action_problem(spec: ActionSpec, actuators: Mapping[str, Actuator]) -> str | None:
    actuator = actuators.get(spec.actuator)
    if actuator is None:
        return f"no actuator named {spec.actuator!r}; known: {sorted(actuators)}"
    if spec.action not in actuator.actions():
        return f"{spec.actuator} has no action {spec.action!r}; it has {sorted(actuator.actions())}"
    try:
        actuator.validate(spec.action, spec.params)
    except ValueError as exc:
        return f"{spec.describe()}: {exc}"
    return None


def _prefixed(issue: ConfigIssue, prefix: str) -> ConfigIssue:
    key = f"{prefix}.{issue.key}" if issue.key else prefix
    return ConfigIssue(issue.file, key, issue.reason, issue.line)
