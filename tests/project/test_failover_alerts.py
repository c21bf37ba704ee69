"""The shipped runbooks act on alerts something ships: the Prometheus rules in
rules/prometheus/ or srd's own rule packs, routed to srd by the Alertmanager example."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from srd.evaluation.rulepacks import load_rule_packs
from srd.evaluation.slo import SloGroup
from srd.failover.runbooks import Matcher, Runbook, load_runbooks
from tests.support.evalkit import promtool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "rules" / "prometheus"
ALERTS = PROMETHEUS / "failover_alerts.yml"
LITERAL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def prometheus_alerts() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def produced() -> set[str]:
    """Every alertname the shipped rules raise: the Prometheus file's and srd's rule packs'."""
    packs = load_rule_packs([ROOT / "rules"])
    groups = [g for p in packs for g in (*(SloGroup(s) for s in p.slos), *p.groups())]
    own = {rule.name for group in groups for rule in group.alert_rules()}
    return own | {str(rule["alert"]) for rule in prometheus_alerts()}


def alert_driven() -> list[Runbook]:
    """The shipped runbooks an alert starts (a change without matchers is started by hand)."""
    return [r for r in load_runbooks([ROOT / "rules" / "runbooks"]) if r.match]


def alertname_matcher(runbook: Runbook) -> Matcher:
    [matcher] = [m for m in runbook.matchers if m.label == "alertname"]
    return matcher


def named(matcher: Matcher) -> set[str]:
    """The alertnames a `=` or an alternation of literals `=~` matcher spells out."""
    assert matcher.op in ("=", "=~"), matcher
    names = set(matcher.value.split("|")) if matcher.op == "=~" else {matcher.value}
    assert all(LITERAL.fullmatch(n) for n in names), f"not literal names: {matcher.value}"
    return names


def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    binary = promtool()
    check = subprocess.run(
        [binary, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [binary, "test", "rules", "failover_alerts_test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_alert_a_shipped_runbook_matches_is_raised_by_a_shipped_rule() -> None:
    raised = produced()
    for runbook in alert_driven():
        missing = named(alertname_matcher(runbook)) - raised
        assert not missing, f"{runbook.name} waits for alerts nothing raises: {sorted(missing)}"


def test_the_blue_green_runbooks_get_the_colour_they_switch_to() -> None:
    colours = {
        str(labels["switch_to"])
        for rule in prometheus_alerts()
        if rule["alert"] == "WebColourUnhealthy"
        for labels in [rule["labels"]]
        if isinstance(labels, dict)
    }
    runbooks = load_runbooks([ROOT / "rules" / "runbooks" / "blue_green.yaml"])
    for colour in colours:
        labels = {"alertname": "WebColourUnhealthy", "switch_to": colour}
        assert [r.name for r in runbooks if r.matches(labels)] == [f"blue_green_to_{colour}"]
    assert colours == {"green", "blue"}


def test_the_alertmanager_example_routes_every_runbook_alert_to_srd() -> None:
    config = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
    [route] = [r for r in config["route"]["routes"] if r["receiver"] == "srd"]
    routed = [Matcher.parse(text) for text in route["matchers"]]
    for runbook in alert_driven():
        for name in named(alertname_matcher(runbook)):
            assert all(m.matches({"alertname": name}) for m in routed), (runbook.name, name)
