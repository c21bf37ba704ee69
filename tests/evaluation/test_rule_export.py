from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

from srd.cli.rules import rules_test
from srd.evaluation.export import (
    Scenario,
    SeriesKey,
    export_rules,
    rule_file,
    unit_test,
    unit_test_file,
)
from srd.evaluation.rulepacks import load_rule_packs
from srd.evaluation.rules import Selector
from srd.evaluation.slo import Sli, Slo, SloGroup
from tests.support.evalkit import promtool

ROOT = Path(__file__).parents[2]


def test_export_passes_promtool_check_and_tests_with_a_firing_test_per_tier(
    tmp_path: Path,
) -> None:
    binary = promtool()
    packs = load_rule_packs([ROOT / "rules", ROOT / "examples" / "rules"])
    written = export_rules(packs, tmp_path)
    rules = [str(p) for p in written if p.name.endswith(".rules.yml")]
    tests = [str(p) for p in written if p.name.endswith(".test.yml")]
    subprocess.run([binary, "check", "rules", *rules], check=True, capture_output=True)
    subprocess.run([binary, "test", "rules", *tests], check=True, capture_output=True)
    doc = yaml.safe_load((tmp_path / "slo.test.yml").read_text())
    fired = {t["alertname"] for g in doc["tests"] for t in g["alert_rule_test"] if t["exp_alerts"]}
    tiers = {r.name for p in packs[:1] for s in p.slos for r in SloGroup(s).alert_rules()}
    assert {n for n in tiers if "BurnRate" in n} <= fired
    quiet = next(g for g in doc["tests"] if g["name"].endswith("no errors"))
    assert not any(t["exp_alerts"] for t in quiet["alert_rule_test"])


def test_rules_test_command_succeeds_on_the_shipped_rules() -> None:
    promtool()
    assert rules_test([ROOT / "rules"]) == 0


def test_promtool_fires_and_resolves_at_the_same_steps_as_srd(tmp_path: Path) -> None:
    """A failure burst (20 min at 30 % errors inside 3 h of clean traffic): every alert at
    every step, as decided in-process, is what promtool expects."""
    binary = promtool()
    total = Selector.parse('srd_probe_results_total{target="web"}')
    bad = Selector.parse('srd_probe_results_total{target="web",result="failure"}')
    slo = Slo("web", "web", 0.999, 30 * 86400.0, Sli(total=total, bad=bad), min_events=50)
    good_v, bad_v, g, b = [], [], 0.0, 0.0
    for minute in range(181):
        burst = 30 <= minute < 50
        g, b = g + (70 if burst else 100), b + (30 if burst else 0)
        good_v.append(g)
        bad_v.append(b)
    series: dict[SeriesKey, Sequence[float]] = {
        ("srd_probe_results_total", (("result", "success"), ("target", "web"))): good_v,
        ("srd_probe_results_total", (("result", "failure"), ("target", "web"))): bad_v,
    }
    test = unit_test(slo, Scenario("burst", series, [3600.0, 10800.0]), every_step=True)
    assert any(t["exp_alerts"] for t in test["alert_rule_test"])
    assert test["promql_expr_test"]
    (tmp_path / "r.yml").write_text(yaml.safe_dump(rule_file([SloGroup(slo)])))
    (tmp_path / "t.yml").write_text(yaml.safe_dump(unit_test_file("r.yml", [test])))
    result = subprocess.run(
        [binary, "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
