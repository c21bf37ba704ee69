"""Measuring a drill from the journal: the executions' account, RTO and its phases (detect,
decide, act, converge), RPO from the backups, the objectives; and the drill record that feeds
``srd_rto_last_seconds``."""

from __future__ import annotations

import uuid
from typing import Any

from srd import clock
from srd.evaluation.backups import BackupChecker
from srd.evaluation.recovery import RecoveryPack, RpoStatus, measure_rto
from srd.failover.intake import iso_utc
from srd.journal import Journal
from srd.runtime import DaemonMetrics
from srd.simulate.result import DrillResult, Event
from srd.simulate.verdict import judge


async def collect(journal: Journal, result: DrillResult) -> None:
    """The journal's account of the drill's executions: their states and steps, into the
    timeline and ``executions``."""
    for execution in reversed(await journal.executions(100)):
        if execution.alert.get("kind") != "drill" or execution.runbook.startswith("drill:"):
            continue
        states = await journal.states(execution.id)
        steps = await journal.steps(execution.id)
        for change in states:
            label = "decision" if change.state == "planned" else f"execution {change.state}"
            result.add(
                Event(
                    change.at,
                    "decision" if change.state == "planned" else f"execution_{change.state}",
                    f"{label}: {execution.runbook}",
                    "journal",
                    {"execution": execution.id},
                )
            )
        merged: dict[str, dict[str, Any]] = {}
        for step in steps:
            if step.key.endswith(":approval"):
                continue
            item = merged.setdefault(
                step.key,
                {
                    "index": step.index,
                    "name": step.name,
                    "started_at": None,
                    "ended_at": None,
                    "result": None,
                    "compensation": step.key.endswith(":compensate"),
                },
            )
            if step.phase == "started":
                item["started_at"] = item["started_at"] or step.at
            else:
                item["ended_at"], item["result"] = step.at, step.result
            kind = "step_started" if step.phase == "started" else "step_ended"
            text = f"step {step.name} {step.phase}" + (f" → {step.result}" if step.result else "")
            result.add(
                Event(
                    step.at,
                    kind,
                    text,
                    "journal",
                    {"execution": execution.id, "step": step.name, "result": step.result},
                )
            )
        result.executions.append(
            {
                "id": execution.id,
                "runbook": execution.runbook,
                "mode": execution.mode,
                "state": execution.state,
                "alert_starts_at": execution.alert.get("startsAt"),
                "created_at": execution.created_at,
                "updated_at": execution.updated_at,
                "states": [{"state": c.state, "at": c.at} for c in states],
                "steps": list(merged.values()),
            }
        )
    result.events.sort(key=lambda e: e.at)


def _ordered(marks: list[float | None]) -> list[float | None]:
    """The phase boundaries made to add up: none earlier than the one before it (the journal
    stamps a step's end and the execution's next state in separate writes), and a missing
    one between two known ones (no step ended: no act) set to the one before it. So the
    phases are never negative and sum to the last known boundary minus the first."""
    ordered: list[float | None] = []
    last: float | None = None
    for i, mark in enumerate(marks):
        later = any(m is not None for m in marks[i + 1 :])
        if mark is None and later and last is not None:
            mark = last
        if mark is not None and last is not None:
            mark = max(mark, last)
        ordered.append(mark)
        last = mark if mark is not None else last
    return ordered


def measure(result: DrillResult) -> None:
    """RTO from the journal: injection → the expected execution's ``succeeded`` event
    (its health check passed), counted only when the steady state then held for
    ``sustain``. Split: detect (→ decision: the firing alert reached failover), decide
    (→ the execution ``running``: settle and guards), act (→ last step ended: the
    actuators' reads, retries and writes), converge (→ succeeded)."""
    drill, scale = result.drill, result.scale
    injected = min((f.injected_at for f in result.faults if f.injected_at), default=None)
    expected = drill.expect.runbook
    # A decision taken before the first fault is not this drill's response to it.
    execution = next(
        (
            e
            for e in result.executions
            if (expected is None or e["runbook"] == expected)
            and (injected is None or e["created_at"] >= injected)
        ),
        None,
    )
    sustained = any(e.event == "recovery_sustained" for e in result.events)
    succeeded = next(
        (s["at"] for s in (execution or {}).get("states", []) if s["state"] == "succeeded"),
        None,
    )
    rto: dict[str, Any] = {
        "source": "journal",
        "injected_at": injected,
        "decided_at": execution["created_at"] if execution else None,
        "recovered_at": succeeded,
        "sustained": sustained,
        "execution": execution["id"] if execution else None,
        "measured_seconds": None,
        "phases": {},
    }
    if injected is not None and execution is not None:
        steps = [s for s in execution["steps"] if not s["compensation"]]
        running = next((s["at"] for s in execution["states"] if s["state"] == "running"), None)
        last = max((s["ended_at"] for s in steps if s["ended_at"]), default=None)
        marks = _ordered([injected, execution["created_at"], running, last, succeeded])
        names = ["detect", "decide", "act", "converge"]
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            rto["phases"][name] = (b - a) * scale if a is not None and b is not None else None
        if succeeded is not None and sustained:
            rto["measured_seconds"] = (succeeded - injected) * scale
    result.rto = rto
    objectives = []
    if result.mode == "dry-run":
        result.notes.append("dry run: nothing acted, so no RTO is measured")
    elif "rto" in drill.expect.objectives:
        measured = rto["measured_seconds"]
        target = result.targets.rto
        met = measured is not None and measured <= target
        reason = (
            ""
            if measured is not None
            else "not recovered (no sustained recovery within the deadline)"
        )
        objectives.append(_objective("RTO", target, measured, met, reason))
    if "rpo" in drill.expect.objectives:
        rpo = result.rpo
        age = rpo.age if rpo is not None else None
        met = rpo is not None and rpo.state == "met"
        reason = rpo.reason if rpo is not None else "backups could not be checked"
        objectives.append(_objective("RPO", result.targets.rpo, age, met, reason))
    if expected is not None:
        done = "dry_run" if result.mode == "dry-run" else "succeeded"
        ran = execution is not None and execution["state"] == done
        why = "" if ran else (f"execution ended {execution['state']}" if execution else "never ran")
        objectives.append({"name": "runbook", "target": expected, "met": ran, "reason": why})
    result.objectives = objectives


def _objective(
    name: str, target: float, measured: float | None, met: bool, reason: str
) -> dict[str, Any]:
    by = measured - target if measured is not None and measured > target else None
    return {
        "name": name,
        "target_seconds": target,
        "measured_seconds": measured,
        "met": met,
        "breached_by_seconds": by,
        "reason": "" if met else reason,
    }


async def check_rpo(pack: RecoveryPack | None, result: DrillResult) -> RpoStatus | None:
    """The drill scenario's RPO as the backups show it now (a note when S3 cannot be read)."""
    if pack is None:
        return None
    try:
        return (await BackupChecker(pack).check()).get(result.drill.scenario)
    except Exception as exc:  # an unreadable S3 makes RPO unknown, not a crash
        result.notes.append(f"RPO not measured: {exc}")
        return None


async def record_drill(journal: Journal, metrics: DaemonMetrics, result: DrillResult) -> None:
    """The drill's result as a record in ``journal`` (``journal_drill``); the journal's RTO of
    the scenario, with the drill's counted, noted in the result and exported."""
    if result.mode != "armed":
        return
    verdict = judge(
        result.halted,
        result.objectives,
        result.rollback.get("steady_state_restored"),
        expect_breach=result.drill.expect_breach,
    )
    drill = result.drill
    recovered = await journal_drill(
        journal,
        drill=drill.name,
        scenario=drill.scenario,
        seconds=result.rto.get("measured_seconds"),
        passed=verdict.passed,
        report=str(result.report_dir),
    )
    if not recovered:
        return
    measured = measure_rto(await journal.recovery_records()).get(drill.scenario)
    if measured is not None:
        metrics.evaluation.rto_last.labels(drill.scenario).set(measured.last_seconds)
        result.recorded_rto = measured.last_seconds


async def journal_drill(
    journal: Journal, *, drill: str, scenario: str, seconds: float | None, passed: bool, report: str
) -> bool:
    """A drill's result as an execution of runbook ``drill:NAME``, which ``srd run`` on that
    journal reads back as ``srd_drill_last_*{drill}``. When it recovered (``seconds``, its RTO
    in drill time), the record is a recovery, so ``srd_rto_last_seconds`` and the
    DR-readiness summary report the drill's RTO; whether it was recorded as one."""
    now = clock.now()
    alert = {
        "kind": "drill",
        "scenario": scenario,
        "drill": drill,
        "startsAt": iso_utc(now - (seconds or 0.0)),
        "report": report,
        "passed": passed,
        "rto_seconds": seconds,
    }
    key = f"drill/{drill}/{uuid.uuid4().hex}"
    execution = await journal.start_execution(
        f"drill:{drill}", key, "armed", uuid.uuid4().hex, alert
    )
    if execution is None:
        return False
    if seconds is None:
        await journal.set_state(execution.id, "failed", {"reason": "drill did not recover"})
        return False
    await journal.set_state(execution.id, "succeeded", {"reason": "drill recovered"})
    return True
