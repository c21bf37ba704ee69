"""Exploration: ``srd simulate --explore N --seed S``: N random fault schedules, each run as a
drill on virtual time against the drill's (shipped) runbooks, with invariants checked
throughout; a schedule that breaks one is shrunk to a minimal one that still does.

A schedule keeps the drill's own repaired faults (the outage the runbook answers) and adds
up to ``MAX_EXTRA`` faults of the sandbox's kinds — Kubernetes conflicts and errors, slow
load-balancer targets, slow Route 53, the journal's write lock held by another process — at
random offsets, with random sizes. The generator is a ``random.Random(seed)``, so the same
seed gives the same schedules, and a run on virtual time is deterministic, so a violation
replays: ``srd simulate --replay DIR/explore.json#K``.

The invariants are in ``srd.simulate.invariants``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srd.simulate.clock import VirtualLoop
from srd.simulate.drill import Drill, FaultSpec, load_drill
from srd.simulate.invariants import Invariants, Violation
from srd.simulate.progress import Progress
from srd.simulate.report import write_reports
from srd.simulate.result import DrillResult
from srd.simulate.runner import DrillOptions, DrillRun

DEFAULT_DRILL = Path("drills/complete_data_center_outage.yaml")
MAX_EXTRA = 3
"""Extra faults at most in a schedule, beside the drill's own outage."""
LATEST = 600
"""Drill seconds: the latest offset of an extra fault (the failover runs in the first minutes)."""
EXIT_VIOLATED = 3

Fault = dict[str, Any]


def _extra(rng: random.Random) -> Fault:
    """One extra fault: a kind the sandbox injects, its size and offset drawn from ``rng``."""
    kind = rng.choice(
        ["kubernetes_conflicts", "kubernetes_errors", "targets_slow", "dns_slow", "journal_locked"]
    )
    params: dict[str, Any]
    if kind == "kubernetes_conflicts":
        params = {"resources": ["deployments/scale"], "times": rng.randint(1, 3)}
    elif kind == "kubernetes_errors":
        verb = rng.choice(["get", "patch"])
        code = rng.choice([503, 429])
        params = {"code": code, "resource": "deployments/scale", "verb": verb}
        params["times"] = rng.randint(1, 3)
    elif kind == "journal_locked":
        # Short: under the virtual clock each of srd's waits for the lock costs real time.
        params = {"seconds": rng.randint(5, 30)}
    else:
        params = {"seconds": rng.randint(30, 360)}
    return {"kind": kind, "at": float(rng.randint(0, LATEST)), "params": params}


def generate(drill: Drill, count: int, seed: int) -> list[list[Fault]]:
    """``count`` schedules from ``seed``: the drill's repaired faults, then extra ones."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    base = [_fault(f) for f in drill.faults if f.repaired_by is not None]
    return [base + [_extra(rng) for _ in range(rng.randint(0, MAX_EXTRA))] for _ in range(count)]


def _fault(spec: FaultSpec) -> Fault:
    fault: Fault = {"kind": spec.kind, "at": spec.at, "params": dict(spec.params)}
    if spec.repaired_by is not None:
        fault["repaired_by"] = spec.repaired_by
    return fault


def with_faults(drill: Drill, faults: Sequence[Fault]) -> Drill:
    specs = [FaultSpec.model_validate({"id": f"f{i}", **f}) for i, f in enumerate(faults)]
    return drill.model_copy(update={"faults": specs})


def run_schedule(
    drill: Drill, path: Path, faults: Sequence[Fault], report_dir: Path
) -> tuple[DrillResult, list[Violation]]:
    """One schedule as a drill on its own virtual loop, its reports in ``report_dir``."""

    invariants = Invariants(drill)
    run = DrillRun(
        with_faults(drill, faults),
        path,
        report_dir,
        DrillOptions(),
        Progress(drill.name, quiet=True),
        invariants,
    )
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        result = runner.run(run.run())
    write_reports(result)
    return result, invariants.violations


def shrink(
    drill: Drill, path: Path, faults: list[Fault], invariant: str, work: Path
) -> list[Fault]:
    """A smaller schedule that still breaks ``invariant``: drop extra faults one at a time,
    then move each left to offset 0, keeping every change that still breaks it."""
    current = list(faults)
    tries = 0

    def breaks(candidate: list[Fault]) -> bool:
        nonlocal tries
        tries += 1
        _, found = run_schedule(drill, path, candidate, work / f"shrink-{tries}")
        return any(v.invariant == invariant for v in found)

    i = 0
    while i < len(current):
        if "repaired_by" not in current[i] and breaks(current[:i] + current[i + 1 :]):
            current = current[:i] + current[i + 1 :]
        else:
            i += 1
    for i, fault in enumerate(current):
        if fault["at"] and breaks([*current[:i], {**fault, "at": 0.0}, *current[i + 1 :]]):
            current[i] = {**fault, "at": 0.0}
    return current


def explore(drill_path: Path, count: int, seed: int, report_dir: Path) -> int:
    """Run ``count`` schedules from ``seed``; write ``report_dir/explore.json``; 0 when no
    invariant broke, 3 when one did."""
    drill = load_drill(drill_path)
    schedules: list[dict[str, Any]] = [
        {"index": i, "faults": faults} for i, faults in enumerate(generate(drill, count, seed))
    ]
    out = report_dir / "explore.json"
    violations: list[dict[str, Any]] = []
    outcomes: list[str] = []
    for entry in list(schedules):
        i = entry["index"]
        result, found = run_schedule(drill, drill_path, entry["faults"], report_dir / f"s{i}")
        outcomes.append(result.judged.outcome)
        print(f"schedule {i}: {len(entry['faults'])} faults, {outcomes[-1]}", flush=True)
        if not found:
            continue
        first = found[0]
        shrunk = shrink(drill, drill_path, entry["faults"], first.invariant, report_dir / f"s{i}")
        k = len(schedules)
        schedules.append({"index": k, "faults": shrunk, "shrunk_from": i})
        violations.append(
            {
                "invariant": first.invariant,
                "schedule": i,
                "at_seconds": first.at,
                "detail": first.detail,
                "shrunk": k,
                "replay": f"srd simulate --replay {out}#{k}",
            }
        )
        print(f"  violated {first.invariant}: {first.detail}; replay: {violations[-1]['replay']}")
    data = {
        "drill": str(drill_path),
        "seed": seed,
        "schedules": schedules,
        "outcomes": outcomes,
        "violations": violations,
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"{count} schedules, {len(violations)} violations: {out}")
    return EXIT_VIOLATED if violations else 0


def replay(reference: str, report_dir: Path | None) -> int:
    """Run schedule K of an ``explore.json`` (``PATH#K``) again; 3 when it breaks an
    invariant (each printed), else 0."""
    file, _, index = reference.partition("#")
    data = json.loads(Path(file).read_text(encoding="utf-8"))
    entry = data["schedules"][int(index or 0)]
    path = Path(data["drill"])
    out = report_dir or Path(file).parent / f"replay-{entry['index']}"
    result, found = run_schedule(load_drill(path), path, entry["faults"], out)
    for violation in found:
        print(f"violated {violation.invariant}: {violation.detail}", file=sys.stderr)
    print(f"schedule {entry['index']}: {result.judged.outcome}; reports: {out}")
    return EXIT_VIOLATED if found else 0
