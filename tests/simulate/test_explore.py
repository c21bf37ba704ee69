"""``srd simulate --explore``: random fault schedules from a seed, run on virtual time against
the shipped runbooks with invariants checked; a violation is shrunk and replays."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from srd.simulate.drill import load_drill
from srd.simulate.explore import generate
from tests.support.simulating import simulate

ROOT = Path(__file__).resolve().parents[2]
DRILL = ROOT / "drills" / "complete_data_center_outage.yaml"


def test_the_same_seed_gives_the_same_schedules_and_another_seed_others() -> None:
    drill = load_drill(DRILL)
    assert generate(drill, 20, 7) == generate(drill, 20, 7)
    assert generate(drill, 20, 7) != generate(drill, 20, 8)


def test_twenty_schedules_of_the_shipped_failover_break_no_invariant(tmp_path: Path) -> None:
    # About 85 s here: journal locks cost real time even on the virtual clock (SQLite's busy
    # wait); the timeout only bounds a hang.
    done = simulate("--explore", "20", "--seed", "7", "--report-dir", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "explore.json").read_text())
    assert data["seed"] == 7
    assert data["violations"] == []
    assert [s["faults"] for s in data["schedules"]] == generate(load_drill(DRILL), 20, 7)
    assert set(data["outcomes"]) == {"met"}


def broken_drill(directory: Path) -> Path:
    """The data-center drill with its own copy of the failover that takes the primary down
    first, before the backup is up: capacity drops to nothing."""
    drill = yaml.safe_load(DRILL.read_text())
    shipped = yaml.safe_load((ROOT / "rules/runbooks/platform_failover.yaml").read_text())
    runbook = shipped["runbooks"][0]
    steps = runbook["steps"]
    primary_down = next(s for s in steps if s["name"] == "scale_primary_down")
    del primary_down["reduces_capacity"], primary_down["other_side"]
    runbook["steps"] = [primary_down, *(s for s in steps if s is not primary_down)]
    web_viewer = runbook.pop("for_each")[1]
    runbook["vars"] |= web_viewer | drill["runbooks"][0]["vars"]
    drill["runbooks"] = [runbook]
    path = directory / "broken.yaml"
    path.write_text(yaml.safe_dump(drill, sort_keys=False))
    return path


def test_a_runbook_that_scales_the_primary_down_first_is_caught_shrunk_and_replays(
    tmp_path: Path,
) -> None:
    drill = broken_drill(tmp_path)
    out = tmp_path / "explore"
    done = simulate(str(drill), "--explore", "1", "--seed", "7", "--report-dir", str(out))
    assert done.returncode == 3, done.stdout + done.stderr
    data = json.loads((out / "explore.json").read_text())
    [violation] = data["violations"]
    assert violation["invariant"] == "min_healthy"
    assert violation["schedule"] == 0
    generated = data["schedules"][0]["faults"]
    shrunk = data["schedules"][violation["shrunk"]]
    assert shrunk["shrunk_from"] == 0
    # Only the outage itself is needed: every extra fault was shrunk away.
    assert len(generated) > 1
    assert [f["kind"] for f in shrunk["faults"]] == ["service_failing"]
    assert violation["replay"] == f"srd simulate --replay {out / 'explore.json'}#{shrunk['index']}"
    replayed = simulate("--replay", violation["replay"].rpartition(" ")[2])
    assert replayed.returncode == 3, replayed.stdout + replayed.stderr
    assert "violated min_healthy" in replayed.stderr
