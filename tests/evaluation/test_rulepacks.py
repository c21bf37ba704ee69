from __future__ import annotations

from pathlib import Path

import pytest

from srd.config import ConfigError
from srd.evaluation.rulepacks import load_rule_packs, parse_rule_pack

ROOT = Path(__file__).parents[2]

BAD_TIER = """\
slos:
  - name: lax
    service: web
    objective: 97
    period: 30d
    sli:
      events: {bad: 'e_total{r="x"}', total: e_total}
    alerting:
      tiers:
        - {budget_percent: 2, long_window: 1h, short_window: 5m}
        - {budget_percent: 10, long_window: 1h, short_window: 5m}
"""


def test_a_tier_that_can_never_fire_is_rejected_with_file_line_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rule_pack(BAD_TIER, "lax.yaml")
    (issue,) = caught.value.issues
    assert (issue.file, issue.key, issue.line) == ("lax.yaml", "slos[0].alerting.tiers[1]", 11)
    assert "can never fire" in issue.reason


def test_unknown_keys_and_bad_selectors_name_file_line_and_key() -> None:
    text = BAD_TIER.replace("objective: 97", "objectiv: 99").replace("e_total}", "rate(x)}")
    with pytest.raises(ConfigError) as caught:
        parse_rule_pack(text, "typo.yaml")
    keys = {(i.key, i.line) for i in caught.value.issues}
    assert ("slos[0].objectiv", 4) in keys


def test_the_shipped_and_example_packs_load_in_every_format() -> None:
    packs = load_rule_packs([ROOT / "rules", ROOT / "examples" / "rules"])
    slos = {slo.name: slo for pack in packs for slo in pack.slos}
    assert slos["chain-rpc-availability"].timezone == "UTC"
    openslo = slos["viewer-availability-openslo"]
    assert openslo.alert_when_no_data and openslo.objective == 0.995 and openslo.evaluable
    assert slos["probe-availability"].evaluable
    assert not slos["requests-availability"].evaluable  # regex matcher: export-only
    assert [t.enabled for t in slos["probe-availability"].tiers] == [True, True, False, False]


def test_burn_rate_factors_follow_from_period_and_budget() -> None:
    (slo,) = parse_rule_pack(BAD_TIER.replace("objective: 97", "objective: 99.9"), "f").slos
    assert [round(t.factor(slo.period), 6) for t in slo.tiers] == [14.4, 72.0]
