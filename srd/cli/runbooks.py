"""``srd runbooks``: the runbooks a config loads — what starts each, its steps, the actuators
it acts through and the gates it passes — as a table, or ``--json`` for scripts.

What is listed is what ``srd run`` would load: ``for_each`` expanded, every reference
checked (an invalid runbook fails the listing as it would fail the start, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from srd.cli.exitcodes import OK, USAGE
from srd.cli.loading import load_or_report
from srd.config.root import resolve_config_path
from srd.failover.runbooks import ActionSpec, Runbook


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runbooks = commands.add_parser(
        "runbooks", help="list the runbooks a config loads (start one with srd execute)"
    )
    runbooks.add_argument(
        "--config", help="config file (default: $SRD_CONFIG or /etc/srd/srd.yaml)"
    )
    runbooks.add_argument("--json", action="store_true", help="print JSON")
    runbooks.set_defaults(handler=_runbooks)


def _runbooks(args: argparse.Namespace) -> int:
    setup = load_or_report(resolve_config_path(args.config))
    if setup is None:
        return USAGE
    show(setup.runbooks, as_json=args.json)
    return OK


def show(
    runbooks: tuple[Runbook, ...] | list[Runbook], *, as_json: bool, out: TextIO = sys.stdout
) -> None:
    described = [describe(runbook) for runbook in runbooks]
    if as_json:
        json.dump(described, out, indent=2)
        out.write("\n")
        return
    if not described:
        print("no runbooks (failover.runbooks lists none)", file=out)
        return
    rows = [
        (
            d["name"],
            str(len(d["steps"])),
            ",".join(d["actuators"]) or "-",
            _gates(d["gates"]),
            ",".join(d["inputs"]) or "-",
            " ".join(d["match"]),
        )
        for d in described
    ]
    lines = [("NAME", "STEPS", "ACTUATORS", "GATES", "INPUTS", "MATCH"), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[5]]).rstrip(), file=out)


def describe(runbook: Runbook) -> dict[str, Any]:
    """A runbook as ``srd runbooks --json`` shows it."""
    steps = []
    actuators: set[str] = set()
    approvals = []
    for remedy in runbook.plan:
        for step in remedy.steps:
            entry: dict[str, Any] = {"remedy": remedy.name, "name": step.name, "kind": step.kind}
            if step.action is not None:
                entry["action"] = step.action.describe()
                actuators.add(step.action.actuator)
            if isinstance(step.compensate, ActionSpec):
                actuators.add(step.compensate.actuator)
            check = step.check or step.wait_until
            if check is not None:
                entry["check"] = check.describe()
            if step.kind == "approval" or step.requires_approval:
                entry["approval"] = step.approval or f"run step {step.name}"
                approvals.append(step.name)
            entry["timeout_seconds"] = step.timeout
            steps.append(entry)
    return {
        "name": runbook.name,
        "description": runbook.description,
        "scenario": runbook.scenario,
        "match": list(runbook.match),
        "settle_seconds": runbook.settle,
        "inputs": dict(runbook.inputs),
        "steps": steps,
        "actuators": sorted(actuators),
        "gates": {"error_budget": list(runbook.budget_gate), "approval": approvals},
    }


def _gates(gates: dict[str, list[str]]) -> str:
    named = [f"budget:{slo}" for slo in gates["error_budget"]]
    named += [f"approval:{step}" for step in gates["approval"]]
    return ",".join(named) or "-"
