"""``srd simulate`` end to end: the real command running shipped drills on the sandbox with
the real daemon pipeline, its reports, exit codes, rollback and interruption."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from srd.config import ConfigError
from srd.failover.runbooks import Runbook, load_runbooks, parse_runbooks
from srd.journal import SqliteJournal
from srd.simulate.drill import Condition, load_drill, parse_drill, resolve_runbooks
from tests.support.simulating import SRD, simulate

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulate.md"


def report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return data


def doc_drill() -> str:
    """The example drill of docs/simulate.md, as written there."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)
    [drill] = [str(b) for b in blocks if b.startswith("scenario:")]
    return drill


@pytest.fixture(scope="module")
def database_drill(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    out = tmp_path_factory.mktemp("database")
    done = simulate("drills/database_failure.yaml", "--report-dir", str(out))
    return done.returncode, out, done.stdout + done.stderr


def test_the_database_drill_meets_its_objectives_and_writes_three_reports(
    database_drill: tuple[int, Path, str],
) -> None:
    code, out, output = database_drill
    assert code == 0, output
    for name in ("report.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    html = (out / "report.html").read_text()
    svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    chart = ElementTree.fromstring(svg)  # noqa: S314 - our own report, just written
    assert chart.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(chart.findall(".//{http://www.w3.org/2000/svg}rect")) > 4  # the steps' bars
    assert "| RTO | 2h |" in (out / "report.md").read_text()
    data = report(out)
    assert data["outcome"] == "met"
    assert data["passed"] is True
    assert [o["name"] for o in data["objectives"]] == ["RTO", "RPO", "runbook"]
    assert all(o["met"] for o in data["objectives"])


async def test_the_measured_rto_comes_from_the_journals_timestamps(
    database_drill: tuple[int, Path, str],
) -> None:
    code, out, output = database_drill
    data = report(out)
    rto = data["rto"]
    # Not recovered (a loaded machine can miss the deadline) is a failure to show, not a crash.
    assert rto["measured_seconds"] is not None, (code, data["notes"], output)
    async with await SqliteJournal.open(out / "state" / "journal.sqlite3", create=False) as journal:
        states = await journal.states(rto["execution"])
        records = await journal.recovery_records()
    succeeded = next(s.at for s in states if s.state == "succeeded")
    assert rto["recovered_at"] == succeeded
    expected = (succeeded - rto["injected_at"]) * data["time_scale"]
    assert rto["measured_seconds"] == pytest.approx(expected)
    # Phases add up to the whole; deciding ends when the execution runs (guards passed).
    assert sum(rto["phases"].values()) == pytest.approx(expected)
    running = next(s.at for s in states if s.state == "running")
    decided = (running - rto["decided_at"]) * data["time_scale"]
    assert rto["phases"]["decide"] == pytest.approx(decided)
    # The drill's own approvals take 55 min of drill time: the RTO includes them.
    assert rto["measured_seconds"] > 55 * 60
    # A drill record in drill time feeds srd_rto_last_seconds.
    drills = [r for r in records if r.kind == "drill" and r.scenario == "database_failure"]
    last = max(drills, key=lambda r: r.recovered_at)
    assert last.seconds == pytest.approx(rto["measured_seconds"], abs=5)
    assert data["recorded_rto_seconds"] == pytest.approx(rto["measured_seconds"], abs=5)


def test_the_report_json_keeps_its_documented_schema(
    database_drill: tuple[int, Path, str],
) -> None:
    data = report(database_drill[1])
    assert data["schema_version"] == 1
    assert set(data) >= {
        "drill", "file", "scenario", "mode", "time_scale", "started_at", "ended_at",
        "wall_seconds", "outcome", "exit_code", "expect_breach", "passed", "objectives", "rto",
        "rpo", "timeline", "executions", "faults", "stop", "rollback", "recorded_rto_seconds",
        "notes",
    }  # fmt: skip
    assert set(data["rto"]["phases"]) == {"detect", "decide", "act", "converge"}
    events = [e["event"] for e in data["timeline"]]
    for needed in (
        "fault_injected",
        "first_symptom",
        "alert_pending",
        "alert_firing",
        "decision",
        "step_started",
        "step_ended",
        "execution_succeeded",
        "service_healthy",
        "recovery_sustained",
    ):
        assert needed in events, needed
    assert events.index("fault_injected") < events.index("decision") < events.index("step_started")
    for event in data["timeline"]:
        assert set(event) == {"at", "t", "event", "label", "source", "detail"}
        assert event["source"] in ("runner", "registry", "journal")
    [fault] = data["faults"]
    assert fault["reverted_by"] == "repaired by step switch_traffic_to_restored_database"
    assert data["rpo"]["state"] == "met"
    assert data["rpo"]["measured_seconds"] < 3600


def test_the_breach_drill_exits_3_and_says_which_objective_failed_and_by_how_much(
    tmp_path: Path,
) -> None:
    done = simulate("drills/rto_breach.yaml", "--report-dir", str(tmp_path), timeout=400)
    assert done.returncode == 3, done.stdout + done.stderr
    data = report(tmp_path)
    assert data["outcome"] == "breached"
    assert data["passed"] is True  # expect_breach
    rto = next(o for o in data["objectives"] if o["name"] == "RTO")
    assert rto["met"] is False
    assert rto["target_seconds"] == 24 * 3600
    assert rto["measured_seconds"] is not None, rto["reason"]
    # Route 53 stayed PENDING for 30 h of drill time: well beyond the RTO.
    assert rto["measured_seconds"] > 30 * 3600
    assert rto["breached_by_seconds"] == pytest.approx(rto["measured_seconds"] - 24 * 3600)
    md = (tmp_path / "report.md").read_text()
    assert "**BREACHED** by" in md
    assert "RTO" in done.stdout
    assert "BREACHED" in done.stdout


def test_sigint_during_a_drill_rolls_back_and_exits_6(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [SRD, "simulate", "drills/database_failure.yaml", "--report-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "fault injected" in line or time.monotonic() > deadline:
            break
    assert any("fault injected" in line for line in seen), seen
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 6, "".join(seen) + err
    data = report(tmp_path)
    assert data["outcome"] == "interrupted"
    assert data["rollback"]["ran"] is True
    assert data["rollback"]["reverted"] == ["database-down"]
    assert data["rollback"]["steady_state_restored"] is True
    assert data["faults"][0]["reverted_by"] == "rollback"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_documented_example_drill_runs_and_meets_its_objectives(tmp_path: Path) -> None:
    path = _write(tmp_path, "promote_standby.yaml", doc_drill())
    done = simulate(str(path), "--report-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    data = report(tmp_path / "out")
    assert data["rto"]["measured_seconds"] <= 30 * 60


def test_a_tripped_stop_condition_aborts_with_5_and_rolls_back(tmp_path: Path) -> None:
    text = doc_drill().replace(
        "params: {service: database}", "params: {service: database}\n  - kind: service_failing\n"
        "    params: {service: web-viewer}"
    )  # fmt: skip
    path = _write(tmp_path, "stop.yaml", text)
    done = simulate(str(path), "--report-dir", str(tmp_path / "out"))
    assert done.returncode == 5, done.stdout + done.stderr
    data = report(tmp_path / "out")
    assert data["outcome"] == "aborted"
    assert 'srd_probe_up{target="web-viewer"} == 0' in data["stop"]["condition"]
    assert sorted(data["rollback"]["reverted"]) == ["primary-down", "service_failing-2"]
    assert data["rollback"]["steady_state_restored"] is True


def test_a_failed_runbook_breaches_and_the_rollback_still_restores_the_steady_state(
    tmp_path: Path,
) -> None:
    # Nobody approves in time: the step times out, the runbook rolls back, the fault stays
    # until the drill's own rollback reverts it.
    text = doc_drill().replace("promote_the_standby: 5m", "promote_the_standby: 10h")
    text = text.replace("deadline: 2h", "deadline: 40m")
    path = _write(tmp_path, "failing.yaml", text)
    done = simulate(str(path), "--report-dir", str(tmp_path / "out"))
    assert done.returncode == 3, done.stdout + done.stderr
    data = report(tmp_path / "out")
    failed = {o["name"]: o for o in data["objectives"] if not o["met"]}
    assert set(failed) == {"RTO", "runbook"}
    assert data["rollback"]["reverted"] == ["primary-down"]
    assert data["rollback"]["steady_state_restored"] is True


def test_no_rollback_leaves_the_faults_in_place_and_says_so(tmp_path: Path) -> None:
    text = doc_drill().replace("deadline: 2h", "deadline: 5m")
    text = text.replace("promote_the_standby: 5m", "promote_the_standby: 10h")
    path = _write(tmp_path, "kept.yaml", text)
    done = simulate(str(path), "--report-dir", str(tmp_path / "out"), "--no-rollback")
    assert done.returncode == 3, done.stdout + done.stderr
    data = report(tmp_path / "out")
    assert data["rollback"] == {
        "policy": "never",
        "ran": False,
        "reverted": [],
        "steady_state_restored": None,
    }
    assert data["faults"][0]["reverted_at"] is None


def test_hold_keeps_the_broken_sandbox_up_for_study_until_sigint(tmp_path: Path) -> None:
    # Nobody approves in time: the runbook fails, and the fault stays for study.
    text = doc_drill().replace("deadline: 2h", "deadline: 40m")
    text = text.replace("promote_the_standby: 5m", "promote_the_standby: 10h")
    path = _write(tmp_path, "held.yaml", text)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [SRD, "simulate", str(path), "--report-dir", str(out), "--no-rollback", "--hold"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoints: dict[str, str] = {}
        for line in process.stdout:
            if found := re.fullmatch(r"  ([\w -]+?(?: \(moto\))?): (http://\S+)\n", line):
                endpoints[found[1]] = found[2]
            if line.startswith("  journal: srd journal --journal "):
                break
        # The reports are written before the hold, and the fault is still in place.
        assert report(out)["outcome"] == "breached"
        health = endpoints["web-viewer"] + "/health"
        with urllib.request.urlopen(health, timeout=5) as ok:  # noqa: S310 - loopback http
            assert ok.status == 200
        with pytest.raises(urllib.error.HTTPError) as failing:
            urllib.request.urlopen(endpoints["database"] + "/health", timeout=5)  # noqa: S310
        assert failing.value.code == 503
        assert "kubernetes" in endpoints and "aws (moto)" in endpoints
        journal = subprocess.run(
            [SRD, *line.split("srd ", 1)[1].split(), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        # Beside the runbook's execution, the drill's own record (it did not recover).
        executions = {e["runbook"]: e for e in json.loads(journal.stdout)}
        assert set(executions) == {"promote_standby", "drill:held"}
        assert executions["drill:held"]["state"] == "failed"
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
        assert process.returncode == 3  # the drill's own outcome, not "interrupted"
    finally:
        process.kill()


def test_hold_is_refused_with_all_and_on_a_real_target() -> None:
    done = simulate("--all", "--hold")
    assert done.returncode == 2
    assert "--hold is for one drill on the sandbox" in done.stderr


def test_an_invalid_drill_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    text = doc_drill().replace("kind: service_failing", "kind: service_on_fire")
    text = text.replace("for: 1m", "for: soon")
    path = _write(tmp_path, "bad.yaml", text)
    done = simulate(str(path), "--report-dir", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "bad.yaml" in done.stderr
    assert "alerts[0].for" in done.stderr
    assert "unknown fault kind 'service_on_fire'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_drill_service_name_is_refused_at_its_own_item_saying_what_it_must_be() -> None:
    drill = yaml.safe_load(doc_drill())
    drill["services"] = ["web-creator", "Web_Creator"]
    with pytest.raises(ConfigError) as caught:
        parse_drill(yaml.safe_dump(drill), "d.yaml")
    [issue] = caught.value.issues
    assert issue.key == "services[1]"
    assert issue.reason.startswith("'Web_Creator' is not a service name (lower case letters")


def test_simulate_all_summarises_and_fails_when_one_drill_fails(tmp_path: Path) -> None:
    drills = tmp_path / "drills"
    drills.mkdir()
    _write(drills, "a_example.yaml", doc_drill())
    _write(drills, "b_broken.yaml", "scenario: database_failure\n")
    # A second sandbox in the same process: moto's state must not leak from the first.
    _write(drills, "c_again.yaml", doc_drill())
    done = simulate("--all", "--drills", str(drills), "--report-dir", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PASS  a_example.yaml" in done.stdout
    assert "FAIL  b_broken.yaml" in done.stdout
    assert "PASS  c_again.yaml" in done.stdout
    assert (tmp_path / "out" / "a_example" / "report.json").exists()


def test_every_shipped_drill_is_valid_and_names_a_platform_scenario_or_its_own_rto() -> None:
    paths = sorted((ROOT / "drills").glob("*.yaml"))
    names = {p.stem for p in paths}
    assert names >= {
        "database_failure",
        "blockchain_node_failure",
        "complete_data_center_outage",
        "rto_breach",
        "database_failover",
        "blockchain_failover",
        "web_creator_failover",
        "blue_green_deploy",
        "blue_green_switch_back",
    }
    for path in paths:
        drill = load_drill(path)
        assert drill.scenario in {
            "database_failure",
            "blockchain_node_failure",
            "complete_data_center_outage",
        } or (drill.objectives.rto is not None and drill.expect.objectives == ["rto"])
    assert load_drill(ROOT / "drills" / "rto_breach.yaml").expect_breach


def step_shape(runbook: Runbook) -> list[tuple[str, str, str, bool]]:
    """What a drill's copy of a runbook must keep: each step's name, kind, action, approval."""
    steps = runbook.plan[0].steps
    return [
        (s.name, s.kind, s.action.describe() if s.action else "", s.requires_approval)
        for s in steps
    ]


def test_every_shipped_failover_and_the_blue_green_deploy_are_drilled_with_the_same_steps() -> None:
    shipped = load_runbooks([ROOT / "rules" / "runbooks"])
    shipped = [r for r in shipped if r.name.startswith("platform_failover_")] + [
        r for r in shipped if r.name == "blue_green_deploy"
    ]
    drilled: dict[str, Runbook] = {}  # the first drill of each name
    for path in sorted((ROOT / "drills").glob("*.yaml")):
        drill = load_drill(path)
        # The sandbox's vars (its URLs, zone, target groups), as placeholders; shipped runbooks
        # by reference are resolved as the runner does.
        names = set(re.findall(r"\$\{(\w+)\}", json.dumps(drill.runbooks)))
        names -= {  # filled in at run time: not vars
            name
            for item in drill.runbooks
            for step in item.get("steps") or []
            for name in (*(step.get("bind") or {}), *(item.get("inputs") or {}))
        }
        values = {n: "http://sandbox.test" if n.endswith("_url") else "sandbox" for n in names}
        items = resolve_runbooks(drill, str(path), values)
        for runbook in parse_runbooks(yaml.safe_dump({"runbooks": items}), str(path)):
            drilled.setdefault(runbook.name, runbook)
    assert {r.name for r in shipped} <= drilled.keys()
    for runbook in shipped:
        assert step_shape(drilled[runbook.name]) == step_shape(runbook), runbook.name


def test_conditions_read_selectors_with_an_operator_and_refuse_anything_else() -> None:
    condition = Condition.parse('srd_probe_up{target="web-viewer"} == 1')
    assert (condition.selector.name, condition.op, condition.value) == ("srd_probe_up", "==", 1)
    assert condition.holds(1.0)
    assert not condition.holds(0.0)
    with pytest.raises(ValueError, match="selector OP number"):
        Condition.parse("rate(srd_probe_up[5m])")
    with pytest.raises(ConfigError) as caught:
        parse_drill("scenario: database_failure\nsteady_state: {probes: ['up >']}\n", "d.yaml")
    keys = {issue.key for issue in caught.value.issues}
    assert {"steady_state.probes", "runbooks", "faults"} <= keys
