from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from srd.actuators.aws import AwsActuator, AwsSettings
from srd.actuators.base import Actuator
from srd.actuators.kubernetes import KubernetesActuator, KubernetesSettings
from srd.config import ConfigError
from srd.evaluation.rulepacks import load_rule_packs
from srd.failover.runbooks import Matcher, input_issues, load_runbooks, parse_runbooks, resolve
from srd.testing import FakeActuator

SHIPPED = Path(__file__).parents[2] / "rules" / "runbooks"


def real_actuators() -> dict[str, Actuator]:
    return {
        "kubernetes": KubernetesActuator(KubernetesSettings()),
        "aws": AwsActuator(AwsSettings()),
    }


def test_shipped_runbooks_validate_against_the_real_actuators() -> None:
    names = {r.name for r in load_runbooks([SHIPPED], real_actuators())}
    assert {
        "platform_failover_web-creator",
        "platform_failover_web-viewer",
        "platform_failover_database",
        "platform_failover_blockchain",
        "blue_green_deploy",
        "blue_green_to_green",
        "blue_green_to_blue",
        "database_failure",
        "blockchain_node_failure",
        "complete_data_center_outage",
    } <= names


def test_platform_failover_brings_the_backup_up_before_taking_the_primary_down() -> None:
    [runbook] = [r for r in load_runbooks([SHIPPED]) if r.name == "platform_failover_web-viewer"]
    steps = runbook.plan[0].steps
    names = [s.name for s in steps]
    assert names.index("scale_backup_up") < names.index("backup_healthy")
    assert names.index("backup_healthy") < names.index("scale_primary_down")
    down = steps[names.index("scale_primary_down")]
    assert down.reduces_capacity and down.other_side is not None
    assert down.action is not None
    assert down.action.params == {
        "namespace": "vilokanam-production",
        "name": "web-viewer-primary",
        "replicas": 0,
    }
    dns = steps[names.index("dns_to_dr")].action
    assert dns is not None and dns.params["ttl"] == 300
    assert runbook.matches({"alertname": "ServiceDown", "service": "web-viewer"})
    assert not runbook.matches({"alertname": "ServiceDown", "service": "web-creator"})


@pytest.mark.parametrize(
    ("service", "approval"),
    [("web-creator", False), ("web-viewer", False), ("database", True), ("blockchain", True)],
)
def test_the_platform_failover_of_each_service_moves_both_target_groups_and_dns(
    service: str, approval: bool
) -> None:
    [runbook] = [r for r in load_runbooks([SHIPPED]) if r.name == f"platform_failover_{service}"]
    steps = {s.name: s for s in runbook.plan[0].steps}
    first = runbook.plan[0].steps[0]
    assert first.name == "scale_backup_up" and first.requires_approval is approval
    assert first.action is not None and first.action.params["replicas"] == 3
    move = steps["move_targets"].action
    assert move is not None and move.action == "elbv2_move_targets"
    assert "/primary-tg/" in move.params["from_target_group_arn"]
    assert "/dr-tg/" in move.params["to_target_group_arn"]
    assert move.params["deregister"] == [{"id": "10.0.1.10", "port": 80}]
    assert move.params["register"] == [{"id": "10.1.1.10", "port": 80}]
    dns = steps["dns_to_dr"].action
    assert dns is not None
    assert (dns.params["name"], dns.params["type"], dns.params["ttl"]) == (
        f"{service}.vilokanam.com",
        "A",
        300,
    )
    assert runbook.matches({"alertname": "ServiceDown", "service": service})


def test_a_budget_gate_on_a_remedy_is_refused_at_load_saying_why() -> None:
    [issue] = errors(one_runbook('match: [a="b"]', "budget_gate: [web-viewer-availability]"))
    assert "gating its remedy would let the outage block its own fix" in issue


def test_a_change_without_matchers_matches_no_alert_and_a_remedy_needs_them() -> None:
    change = one_runbook("kind: change")
    [runbook] = parse_runbooks(change, "rb.yaml", {"fake": FakeActuator()})
    assert not runbook.matches({}) and not runbook.matches({"alertname": "Down"})
    [issue] = errors(change.replace("    kind: change\n", ""))
    assert "a remedy needs match" in issue


SCALE_TO = (
    "{name: scale, action: {actuator: kubernetes, action: scale_deployment, "
    'params: {namespace: web, name: "web-${colour}", replicas: "${count}"}}}'
)


def test_a_changes_inputs_are_left_for_run_time_and_validated_with_each_value_given() -> None:
    text = one_runbook("kind: change", "inputs: {colour: blue, count: '3'}", step=SCALE_TO)
    actuators = real_actuators()
    [runbook] = parse_runbooks(text, "rb.yaml", actuators)
    [step] = runbook.plan[0].steps
    assert step.action is not None and step.action.params["name"] == "web-${colour}"
    assert runbook.input_values({"count": "5", "other": "x"}) == {"colour": "blue", "count": "5"}
    resolved = resolve(step, runbook.input_values({"colour": "green"}))
    assert resolved.action is not None
    assert resolved.action.params == {"namespace": "web", "name": "web-green", "replicas": "3"}
    assert input_issues(runbook, {"colour": "green", "count": "5"}, actuators) == []
    [bad] = input_issues(runbook, {"colour": "Green!", "count": "5"}, actuators)
    assert bad.startswith("steps[0].action: kubernetes.scale_deployment: ")
    assert "name" in bad
    [bad] = input_issues(runbook, {"count": "many"}, actuators)
    assert "replicas" in bad
    assert input_issues(runbook, {"count": "1\n2"}, actuators) == [
        "input count '1\\n2' holds control characters"
    ]


def test_inputs_are_refused_on_a_remedy_in_vars_or_with_a_default_steps_refuse() -> None:
    [issue] = errors(one_runbook('match: [a="b"]', "inputs: {image: x}"))
    assert "inputs are for a change (kind: change)" in issue
    [issue] = errors(one_runbook("kind: change", "inputs: {image: x}", "vars: {image: y}"))
    assert "['image'] are run-time variables (inputs or bound); do not set them in vars" in issue
    [issue] = errors(one_runbook("kind: change", "inputs: {image: ''}"))
    assert "rb.yaml:4: runbooks[0].inputs: " in issue and "input image: default is empty" in issue
    text = one_runbook("kind: change", "inputs: {colour: Blue!, count: '3'}", step=SCALE_TO)
    with pytest.raises(ConfigError) as refused:
        parse_runbooks(text, "rb.yaml", real_actuators())
    [found] = refused.value.issues
    assert found.key == "runbooks[0].steps[0].action"


def test_a_variable_a_step_binds_is_left_for_run_time_and_validated_with_a_sample() -> None:
    text = """runbooks:
  - name: x
    kind: change
    steps:
      - {name: read, bind: {colour: value}, action: {actuator: fake, action: set, params: {key: k, value: 1}}}
      - {name: use, action: {actuator: fake, action: set, params: {key: "web-${colour}", value: 1}}}
"""  # noqa: E501
    [runbook] = parse_runbooks(text, "rb.yaml", {"fake": FakeActuator()})
    use = runbook.plan[0].steps[1]
    assert use.action is not None and use.action.params["key"] == "web-${colour}"
    assert runbook.bound == {"colour"}
    resolved = resolve(use, {"colour": "green"})
    assert resolved.action is not None and resolved.action.params["key"] == "web-green"
    with pytest.raises(ValueError, match=r"not bound yet: \['colour'\]"):
        resolve(use, {})


def test_a_variable_used_before_the_step_that_binds_it_is_refused_at_load() -> None:
    text = """runbooks:
  - name: x
    kind: change
    steps:
      - {name: use, action: {actuator: fake, action: set, params: {key: "web-${colour}", value: 1}}}
      - {name: read, bind: {colour: value}, action: {actuator: fake, action: set, params: {key: k, value: 1}}}
"""  # noqa: E501
    [issue] = errors(text)
    assert "step use uses ['colour'] before a step binds them" in issue


def test_recovery_scenario_steps_that_need_a_human_are_approvals() -> None:
    [runbook] = [r for r in load_runbooks([SHIPPED]) if r.name == "database_failure"]
    assert runbook.scenario == "database_failure"
    assert [s.kind for s in runbook.plan[0].steps] == ["approval"] * 4


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ('service="web"', {"service": "web"}, True),
        ('service!="web"', {"service": "api"}, True),
        ("service=~web|api", {"service": "api"}, True),
        ('service=~"web"', {"service": "web-viewer"}, False),  # anchored
        ('service!~"web.*"', {"service": "api"}, True),
        ('team=""', {}, True),  # a missing label is the empty string
    ],
)
def test_matchers_behave_like_alertmanager_routes(
    matcher: str, labels: dict[str, str], expected: bool
) -> None:
    assert Matcher.parse(matcher).matches(labels) is expected


def errors(text: str, slos: Collection[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_runbooks(text, "rb.yaml", {"fake": FakeActuator()}, slos=slos)
    return [str(issue) for issue in info.value.issues]


SET_K = "{name: s, action: {actuator: fake, action: set, params: {key: k, value: 1}}}"


def one_runbook(*keys: str, step: str = SET_K) -> str:
    """A runbook file ``rb.yaml`` of one runbook, ``x``, with ``keys`` (a YAML line each) and
    one ``step``."""
    lines = "".join(f"    {key}\n" for key in keys)
    return f"runbooks:\n  - name: x\n{lines}    steps:\n      - {step}\n"


def test_an_unknown_key_is_named_with_file_and_line() -> None:
    text = """runbooks:
  - name: x
    match: [a="b"]
    steps:
      - name: s
        action: {actuator: fake, action: set, params: {key: k, value: 1}}
        timout: 5s
"""
    assert errors(text) == [
        "rb.yaml:7: runbooks[0].steps[0].timout: unknown key (did you mean 'timeout'?)"
    ]


def test_bad_actuator_parameters_are_refused_at_load() -> None:
    text = """runbooks:
  - name: x
    match: [a="b"]
    steps:
      - {name: s, action: {actuator: fake, action: set, params: {value: 1}}}
      - {name: t, action: {actuator: nope, action: set}}
"""
    assert errors(text) == [
        "rb.yaml:5: runbooks[0].steps[0].action: fake.set: params need 'key' (a string) and "
        "'value'",
        "rb.yaml:6: runbooks[0].steps[1].action: no actuator named 'nope'; known: ['fake']",
    ]


def test_undefined_variables_and_bad_matchers_are_refused() -> None:
    text = """runbooks:
  - name: x_${svc}
    match: ['a=~"("']
    steps: [{name: s, check: {probe: p}}]
"""
    [issue] = errors(text)
    assert "undefined variables ['svc']" in issue
    [issue] = errors(text.replace("x_${svc}", "x"))
    assert issue.startswith("rb.yaml:3: runbooks[0].match: matcher 'a=~\"(\"': invalid regular")


def test_a_reduces_capacity_step_must_say_which_side_stays_up() -> None:
    step = "{name: s, reduces_capacity: true, action: {actuator: fake, action: set, params: {key: k, value: 0}}}"  # noqa: E501
    [issue] = errors(one_runbook('match: [a="b"]', step=step))
    assert "reduces_capacity needs other_side" in issue


def test_a_budget_gate_naming_no_loaded_slo_is_refused_at_load() -> None:
    text = one_runbook("kind: change", "budget_gate: [web-viewer-availability, web-availabilty]")
    assert errors(text, slos=["web-viewer-availability"]) == [
        "rb.yaml:4: runbooks[0].budget_gate[1]: no SLO named 'web-availabilty' in the rule packs; "
        "known: ['web-viewer-availability']"
    ]


def test_the_shipped_budget_gates_name_shipped_slos() -> None:
    slos = [slo.name for pack in load_rule_packs([SHIPPED.parent]) for slo in pack.slos]
    gated = [r for r in load_runbooks([SHIPPED], slos=slos) if r.budget_gate]
    assert {r.name for r in gated} == {"blue_green_deploy"}
    assert all(r.kind == "change" for r in gated)
