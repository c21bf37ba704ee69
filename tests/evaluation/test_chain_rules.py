from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from srd.config import ConfigError
from srd.config.durations import format_duration
from srd.evaluation.chainrules import ChainHealth, load_chain_pack, parse_chain_pack
from srd.evaluation.engine import Engine
from srd.evaluation.export import alert_rule_test, rule_file, series_text
from srd.evaluation.metrics import EvaluationMetrics
from tests.support.evalkit import promtool

SHIPPED = Path(__file__).parents[2] / "rules" / "chain_health.yaml"
STEP = 15.0
"""Input spacing: finer than the 1 m increase() window, as the node's 5 s refresh is."""
EVAL = 60.0

Series = dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]


def rendered(health: ChainHealth) -> list[tuple[str, str, str, str]]:
    return [
        (r.name, r.expr(), format_duration(r.for_), r.labels["severity"])
        for r in health.group().alert_rules()
    ]


def test_the_defaults_are_the_operator_thresholds_and_the_shipped_pack_keeps_them() -> None:
    assert load_chain_pack(SHIPPED) == ChainHealth()
    assert rendered(ChainHealth()) == [
        ("ChainBlockProductionSlowCritical", "increase(srd_chain_best_block[1m]) < 1", "10m",
         "critical"),
        ("ChainBlockProductionSlow", "increase(srd_chain_best_block[1m]) < 1", "3m", "warning"),
        ("ChainFinalizationSlowCritical", "increase(srd_chain_finalized_block[1m]) < 1", "10m",
         "critical"),
        ("ChainFinalizationSlow", "increase(srd_chain_finalized_block[1m]) < 1", "3m", "warning"),
        ("ChainFinalityLagHigh", "srd_chain_finality_lag_blocks > 10", "8m", "critical"),
        ("ChainPeersLowCritical",
         "srd_chain_peers < 3 unless srd_chain_should_have_peers == 0", "15m", "critical"),
        ("ChainPeersLow",
         "srd_chain_peers < 3 unless srd_chain_should_have_peers == 0", "3m", "warning"),
        ("ChainHeadStalled",
         "srd_chain_head_age_blocks > 3 or srd_chain_head_age_seconds > 120", "0ms", "critical"),
        ("ChainFinalizedHashDisagreement", "srd_chain_finalized_hash_disagreement > 0", "1m",
         "critical"),
        ("ChainExporterDisagreement", "srd_chain_exporter_disagreement > 0", "5m", "warning"),
    ]  # fmt: skip


def test_thresholds_are_overridable_and_a_null_severity_turns_it_off() -> None:
    health = parse_chain_pack(
        """\
chain:
  peers_low: {min_peers: 8, warning: null}
  block_production_slow: {window: 2m, min_increase: 5, critical: {for: 20m}}
  finality_lag: {max_blocks: 2.5}
""",
        "chain.yaml",
    )
    rules = {name: (expr, dur, sev) for name, expr, dur, sev in rendered(health)}
    # With its warning off, the critical peers alert keeps the plain name.
    assert rules["ChainPeersLow"] == (
        "srd_chain_peers < 8 unless srd_chain_should_have_peers == 0",
        "15m",
        "critical",
    )
    assert "ChainPeersLowCritical" not in rules
    assert rules["ChainBlockProductionSlowCritical"][:2] == (
        "increase(srd_chain_best_block[2m]) < 5",
        "20m",
    )
    assert rules["ChainBlockProductionSlow"][1] == "3m"
    assert rules["ChainFinalityLagHigh"][0] == "srd_chain_finality_lag_blocks > 2.5"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_chain_pack(text, "chain.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_bad_thresholds_name_file_line_and_key() -> None:
    errors = errors_of(
        "chain:\n  peers_low:\n    warning: {for: soon}\n  head_staled: {max_age: 1m}\n"
    )
    assert errors[0].startswith("chain.yaml:3: chain.peers_low.warning.for: cannot read 'soon'")
    assert (
        errors[1] == "chain.yaml:4: chain.head_staled: unknown key (did you mean 'head_stalled'?)"
    )


def test_the_shipped_rules_pass_promtool_check(tmp_path: Path) -> None:
    binary = promtool()
    path = tmp_path / "chain.rules.yml"
    path.write_text(yaml.safe_dump(rule_file([load_chain_pack(SHIPPED).group()])))
    result = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


# --- in-process evaluation on fake series, and parity with promtool -------------------------

A = (("chain", "dev"), ("node", "a"))
B = (("chain", "dev"), ("node", "b"))
MINUTES = 35


def minutes(fn: Callable[[float], float]) -> list[float]:
    """One value per input step for ``MINUTES``, from a function of the minute."""
    return [float(fn(i * STEP / 60)) for i in range(int(MINUTES * 60 / STEP) + 1)]


def counting(stalls: tuple[float, float], start: float = 1000) -> list[float]:
    """A block number rising 1 per step, flat during ``stalls`` (minutes)."""
    values, value = [], start
    for i in range(int(MINUTES * 60 / STEP) + 1):
        if not stalls[0] <= i * STEP / 60 < stalls[1]:
            value += 1
        values.append(value)
    return values


def scenario() -> Series:
    """Node a: production stalls 5-20 min, finalization 5-30, lag high 10-30, few peers 2-25,
    head stalled 10-12, metrics page disagreeing 3-12; the chain's finalized hashes disagree
    15-20. Node b is healthy and a peerless dev node (shouldHavePeers false)."""
    return {
        ("srd_chain_best_block", A): counting((5, 20)),
        ("srd_chain_best_block", B): counting((99, 99)),
        ("srd_chain_finalized_block", A): counting((5, 30), start=998),
        ("srd_chain_finalized_block", B): counting((99, 99), start=998),
        ("srd_chain_finality_lag_blocks", A): minutes(lambda m: 15 if 10 <= m < 30 else 2),
        ("srd_chain_finality_lag_blocks", B): minutes(lambda m: 2),
        ("srd_chain_peers", A): minutes(lambda m: 1 if 2 <= m < 25 else 5),
        ("srd_chain_peers", B): minutes(lambda m: 0),
        ("srd_chain_should_have_peers", A): minutes(lambda m: 1),
        ("srd_chain_should_have_peers", B): minutes(lambda m: 0),
        ("srd_chain_head_age_seconds", A): minutes(lambda m: 200 if 10 <= m < 12 else 3),
        ("srd_chain_head_age_seconds", B): minutes(lambda m: 3),
        ("srd_chain_finalized_hash_disagreement", (("chain", "dev"),)): minutes(
            lambda m: 1 if 15 <= m < 20 else 0
        ),
        ("srd_chain_exporter_disagreement", A): minutes(lambda m: 1 if 3 <= m < 12 else 0),
        ("srd_chain_exporter_disagreement", B): minutes(lambda m: 0),
    }


def run_in_process(series: Series) -> dict[float, set[tuple[str, str]]]:
    """Firing (alertname, node) at every evaluation, time driven by the test, not a clock."""
    engine = Engine(
        [],
        EvaluationMetrics(CollectorRegistry()),
        extra_groups=[ChainHealth().group()],
    )
    firing: dict[float, set[tuple[str, str]]] = {}
    steps = len(next(iter(series.values())))
    for step in range(steps):
        at = step * STEP
        for (name, labels), values in series.items():
            engine.store.ingest(name, dict(labels), at, values[step])
        if at % EVAL == 0:
            engine.evaluate(at)
            firing[at] = {
                (a.name, dict(a.labels).get("node", "")) for a in engine.states.alerts()
                if a.state == "firing"
            }  # fmt: skip
    return firing


def test_alerts_fire_after_their_for_and_resolve_when_the_chain_recovers() -> None:
    firing = run_in_process(scenario())

    def fired(name: str, node: str = "a") -> list[float]:
        return [at / 60 for at, alerts in firing.items() if (name, node) in alerts]

    # Stall from 5 min: increase over [t-1m, t] is 0 from 6 min; pending, firing 3 m later.
    assert fired("ChainBlockProductionSlow")[0] == 9
    assert fired("ChainBlockProductionSlowCritical")[0] == 16
    assert fired("ChainBlockProductionSlow")[-1] == 19  # the block at 20 min clears it
    assert fired("ChainFinalizationSlowCritical")[-1] == 29
    assert fired("ChainFinalityLagHigh") == [float(m) for m in range(18, 30)]
    assert fired("ChainPeersLow")[0] == 5
    assert fired("ChainPeersLowCritical")[0] == 17
    assert fired("ChainHeadStalled") == [10.0, 11.0]
    assert fired("ChainFinalizedHashDisagreement", node="") == [16.0, 17.0, 18.0, 19.0]
    assert fired("ChainExporterDisagreement") == [8.0, 9.0, 10.0, 11.0]
    # Node b is healthy; its zero peers are expected of a node with none to have.
    assert not any(node == "b" for alerts in firing.values() for _, node in alerts)


def test_promtool_fires_the_same_chain_alerts_at_the_same_steps_as_srd(tmp_path: Path) -> None:
    binary = promtool()
    series = scenario()
    engine = Engine(
        [],
        EvaluationMetrics(CollectorRegistry()),
        extra_groups=[ChainHealth().group()],
    )
    names = [rule.name for rule in engine.groups[0].alert_rules()]
    checks: list[dict[str, Any]] = []
    for step in range(len(next(iter(series.values())))):
        at = step * STEP
        for (name, labels), values in series.items():
            engine.store.ingest(name, dict(labels), at, values[step])
        if at % EVAL:
            continue
        engine.evaluate(at)
        alerts = [a for a in engine.states.alerts() if a.state == "firing"]
        checks += [alert_rule_test(at, name, alerts) for name in names]
    assert sum(bool(c["exp_alerts"]) for c in checks) > 50
    test = {
        "interval": format_duration(STEP),
        "input_series": [
            {"series": series_text(key), "values": " ".join(f"{v:g}" for v in values)}
            for key, values in series.items()
        ],
        "alert_rule_test": checks,
    }
    (tmp_path / "chain.rules.yml").write_text(yaml.safe_dump(rule_file(engine.groups)))
    (tmp_path / "chain.test.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["chain.rules.yml"],
                "evaluation_interval": format_duration(EVAL),
                "tests": [test],
            }
        )
    )
    result = subprocess.run(
        [binary, "test", "rules", str(tmp_path / "chain.test.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
