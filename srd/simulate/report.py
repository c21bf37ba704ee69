"""Drill reports: ``report.json`` (machine-readable, schema below), ``report.md`` (for a
ticket) and ``report.html`` (for people: an inline SVG timeline chart).

``report.json``, schema_version 1 — times are Unix seconds (``at``) and, in the timeline,
also drill seconds since the first fault (``t``); durations are drill seconds:

- ``schema_version`` (1), ``drill``, ``file``, ``scenario``, ``description``, ``target``
  (sandbox | real), ``clock`` (virtual on the sandbox, wall on a real target), ``mode``,
  ``time_scale`` (1 on the sandbox), ``started_at``, ``ended_at`` (drill time),
  ``wall_seconds`` (what the run took on the wall clock), ``precision_seconds`` (every
  measured time is exact to this much drill time: the interval of the drill's looks);
- ``outcome``: met | breached | not_restored | aborted | interrupted | preflight_failed;
  ``exit_code``;
  ``expect_breach``; ``passed`` (met, or breached when ``expect_breach``);
- ``objectives[]``: ``{name: RTO|RPO, target_seconds, measured_seconds, met,
  breached_by_seconds, reason}`` and, when the drill expects a runbook,
  ``{name: runbook, target, met, reason}``;
- ``rto``: ``{source: journal, injected_at, decided_at, recovered_at, sustained, execution,
  measured_seconds, phases: {detect, decide, act, converge}}``;
- ``rpo``: ``{state, measured_seconds, objective_seconds, reason, backups[]}`` — RPO is the age
  of the newest good backup at injection, in real seconds (backup ages are not scaled);
- ``timeline[]``: ``{at, t, event, label, source: runner|registry|journal, detail}``;
- ``executions[]``: ``{id, runbook, mode, state, alert_starts_at, created_at, updated_at,
  states[], steps[{index, name, started_at, ended_at, result, compensation}]}``;
- ``faults[]``: ``{id, kind, params, at_seconds, injected_at, reverted_at, reverted_by, error}``;
- ``stop``: ``{condition, at}`` or null; ``rollback``: ``{policy, ran, reverted[],
  steady_state_restored}``; ``recorded_rto_seconds``: what the journal's drill record feeds
  ``srd_rto_last_seconds``; ``notes[]``;
- ``preflight[]`` (target real): ``{kind: probe|check|read|permission, name, ok, detail,
  fix}``, every check, passed or not.
"""

from __future__ import annotations

import html
import json
from typing import Any

from srd.config.durations import format_duration
from srd.simulate.result import DrillResult

SCHEMA_VERSION = 1
COLORS = {"runner": "#c0392b", "registry": "#d68910", "journal": "#1f618d"}


def report_data(result: DrillResult) -> dict[str, Any]:
    drill = result.drill
    injected = result.rto.get("injected_at") or result.started_at
    rpo = result.rpo
    verdict = result.judged
    return {
        "schema_version": SCHEMA_VERSION,
        "drill": drill.name,
        "file": str(result.path),
        "scenario": drill.scenario,
        "description": drill.description,
        "target": result.target,
        "mode": result.mode,
        "clock": "virtual" if result.target == "sandbox" else "wall",
        "time_scale": result.scale,
        "started_at": result.started_at,
        "ended_at": result.ended_at,
        "wall_seconds": result.wall_seconds,
        "precision_seconds": result.precision,
        "outcome": verdict.outcome,
        "exit_code": verdict.exit_code,
        "expect_breach": drill.expect_breach,
        "passed": verdict.passed,
        "objectives": result.objectives,
        "rto": result.rto,
        "rpo": {
            "state": rpo.state if rpo else "unknown",
            "measured_seconds": rpo.age if rpo else None,
            "objective_seconds": result.targets.rpo,
            "reason": rpo.reason if rpo else "not checked",
            "backups": [
                {
                    "location": loc.location,
                    "newest_good_key": loc.newest_good_key,
                    "age_seconds": loc.age,
                }
                for loc in (rpo.locations if rpo else ())
            ],
        },
        "timeline": [
            {
                "at": e.at,
                "t": (e.at - injected) * result.scale,
                "event": e.event,
                "label": e.label,
                "source": e.source,
                "detail": e.detail,
            }
            for e in sorted(result.events, key=lambda e: e.at)
        ],
        "executions": result.executions,
        "faults": [
            {
                "id": f.id,
                "kind": f.kind,
                "params": f.params,
                "at_seconds": f.at,
                "injected_at": f.injected_at,
                "reverted_at": f.reverted_at,
                "reverted_by": f.reverted_by,
                "error": f.error,
            }
            for f in result.faults
        ],
        "stop": result.stop,
        "rollback": result.rollback,
        "recorded_rto_seconds": result.recorded_rto,
        "notes": result.notes,
        "preflight": [
            {"kind": c.kind, "name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix}
            for c in result.preflight
        ],
    }


def _d(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if abs(seconds) < 1:
        return "0s"
    sign = "-" if seconds < 0 else ""
    return sign + format_duration(round(abs(seconds)))


def _preflight(checks: list[dict[str, Any]]) -> list[str]:
    if not checks:
        return []
    failed = [c for c in checks if not c["ok"]]
    lines = ["", "## Preflight (read-only)", ""]
    lines.append(f"{len(checks) - len(failed)} of {len(checks)} checks passed.")
    if failed:
        lines += ["", "| failed check | what happened | what to do |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['detail']} | {c['fix']} |" for c in failed]
    return lines


def _clock(data: dict[str, Any]) -> str:
    """How the drill kept time, and so how exact its figures are."""
    span = _d(data["ended_at"] - data["started_at"])
    p = data["precision_seconds"]
    precision = f"every time below is exact to ±{f'{p:g}s' if p < 60 else _d(p)} of drill time"
    if data["clock"] == "virtual":
        return (
            f"virtual time: {span} of drill time in {data['wall_seconds']:.1f} s wall; {precision}"
        )
    scale = f", time scale ×{data['time_scale']:g}" if data["time_scale"] != 1 else ""
    return f"wall time{scale}: {data['wall_seconds']:.1f} s; {precision}"


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Drill `{data['drill']}` — {data['outcome'].upper()} (exit {data['exit_code']})",
        "",
        f"Scenario **{data['scenario']}**, mode {data['mode']}, {_clock(data)}. "
        f"{data['description']}".rstrip(),
        *_preflight(data["preflight"]),
        "",
        "## Objectives",
        "",
        "| objective | target | measured | result |",
        "|---|---|---|---|",
    ]
    for o in data["objectives"]:
        if "target_seconds" in o:
            verdict = "met" if o["met"] else "**BREACHED**"
            if o.get("breached_by_seconds"):
                verdict += f" by {_d(o['breached_by_seconds'])}"
            if o["reason"]:
                verdict += f" — {o['reason']}"
            target, measured = _d(o["target_seconds"]), _d(o["measured_seconds"])
            lines.append(f"| {o['name']} | {target} | {measured} | {verdict} |")
        else:
            done = "planned (dry run)" if data["mode"] == "dry-run" else "ran and succeeded"
            verdict = done if o["met"] else f"**FAILED** — {o['reason']}"
            lines.append(f"| runbook | {o['target']} | | {verdict} |")
    rto = data["rto"]
    phases = rto.get("phases") or {}
    lines += [
        "",
        "## RTO, measured from the journal",
        "",
        "| detect | decide | act | converge | total |",
        "|---|---|---|---|---|",
        "| "
        + " | ".join(_d(phases.get(p)) for p in ("detect", "decide", "act", "converge"))
        + f" | {_d(rto.get('measured_seconds'))} |",
        "",
        "## Timeline (drill time since the first fault)",
        "",
        "| T | event | source |",
        "|---|---|---|",
    ]
    for e in data["timeline"]:
        lines.append(f"| {_d(e['t'])} | {e['label']} | {e['source']} |")
    rollback = data["rollback"]
    lines += ["", "## Rollback", ""]
    if rollback.get("ran"):
        restored = "restored" if rollback.get("steady_state_restored") else "NOT restored"
        lines.append(
            f"Reverted {', '.join(rollback['reverted']) or 'nothing'}; steady state {restored}."
        )
    else:
        lines.append("Skipped (--no-rollback): the faults were left in place.")
    if data["stop"]:
        lines += ["", f"Aborted by stop condition: `{data['stop']['condition']}`."]
    for note in data["notes"]:
        lines.append(f"\n- {note}")
    return "\n".join(lines) + "\n"


LABEL_CHARS = 46
"""Characters per line of a row's label (11 px sans-serif in a 300 px column): longer labels
wrap, so no name is cut and no label runs into the chart."""


def _wrap(text: str, width: int = LABEL_CHARS) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces where it can."""
    lines: list[str] = []
    for word in text.split(" "):
        while len(word) > width:
            head = width - len(lines[-1]) - 1 if lines and len(lines[-1]) < width - 1 else 0
            if head > 0:
                lines[-1] += " " + word[:head]
                word = word[head:]
            else:
                lines.append(word[:width])
                word = word[width:]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        elif word:
            lines.append(word)
    return lines or [""]


def svg_timeline(data: dict[str, Any]) -> str:
    """The drill as a chart on its time axis (drill time since the first fault): one row per
    event (a dot, coloured by who saw it) and per step (a bar, green ok, red not), each with
    its full label, wrapped, in the left column; a legend; the RTO objective and the
    recovery as vertical lines. Every label has a row of its own: none overlaps another."""
    injected = data["rto"].get("injected_at") or data["started_at"]
    scale = data["time_scale"]
    rows: list[tuple[str, float, float | None, str, str]] = []
    """(label, start, end or None for an event, colour, tooltip)"""
    for e in data["timeline"]:
        if e["source"] in COLORS:
            label = f"{_d(e['t'])}  {e['label']}"
            rows.append((label, e["t"], None, COLORS[e["source"]], f"{e['source']}: {label}"))
    for ex in data["executions"]:
        for s in ex["steps"]:
            if not s["started_at"]:
                continue
            a = (s["started_at"] - injected) * scale
            b = ((s["ended_at"] or data["ended_at"]) - injected) * scale
            color = "#27ae60" if s["result"] == "ok" else "#c0392b"
            tip = f"step {s['name']}: {_d(b - a)} → {s['result']}"
            rows.append((f"step {s['name']}", a, b, color, tip))
    rows.sort(key=lambda r: r[1])
    rto = data["rto"].get("measured_seconds")
    target = next((o["target_seconds"] for o in data["objectives"] if o["name"] == "RTO"), None)
    times = [t for _, a, b, _, _ in rows for t in (a, b) if t is not None]
    times += [t for t in (rto, target) if t is not None]
    lo, hi = float(min(0.0, *times, 0.0)), float(max(1.0, *times, 1.0))
    span = hi - lo
    width, left, right, line = 1000, 310, 30, 14

    def x(t: float) -> float:
        return left + (t - lo) / span * (width - left - right)

    legend = [
        *((f"seen by the {name}", "dot", color) for name, color in COLORS.items()),
        ("step ok", "bar", "#27ae60"),
        ("step failed", "bar", "#c0392b"),
        ("RTO objective", "dash", "#8e44ad"),
        ("recovered", "line", "#27ae60"),
    ]
    top = 50
    body: list[str] = []
    y = top
    for label, a, b, color, tip in rows:
        lines = _wrap(label)
        height = line * len(lines) + 6
        mid = y + height / 2
        spans = "".join(
            f'<tspan x="8" dy="{0 if i == 0 else line}">{html.escape(text)}</tspan>'
            for i, text in enumerate(lines)
        )
        body.append(f'<text class="label" y="{y + line - 2}">{spans}</text>')
        if b is None:
            mark = f'<circle cx="{x(a):.1f}" cy="{mid:.1f}" r="5" fill="{color}">'
            body.append(f"{mark}<title>{html.escape(tip)}</title></circle>")
        else:
            body.append(
                f'<rect x="{x(a):.1f}" y="{mid - 5:.1f}" width="{max(x(b) - x(a), 2):.1f}" '
                f'height="10" fill="{color}"><title>{html.escape(tip)}</title></rect>'
            )
        body.append(
            f'<line x1="{left}" y1="{y + height:.1f}" x2="{width - right}" y2="{y + height:.1f}" '
            'stroke="#eee"/>'
        )
        y += height
    axis_y = y + 10
    height = axis_y + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    lx = 8
    for name, kind, color in legend:
        if kind == "dot":
            out.append(f'<circle cx="{lx + 5}" cy="16" r="5" fill="{color}"/>')
        elif kind == "bar":
            out.append(f'<rect x="{lx}" y="11" width="10" height="10" fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if kind == "dash" else ""
            out.append(f'<line x1="{lx}" y1="16" x2="{lx + 10}" y2="16" stroke="{color}"{dash}/>')
        out.append(f'<text class="legend" x="{lx + 14}" y="20">{html.escape(name)}</text>')
        lx += 14 + len(name) * 7 + 16
    out.append(f'<text class="legend" x="8" y="{top - 8}">drill time since the first fault</text>')
    out += body
    out.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#333"/>'
    )
    for k in range(6):
        t = lo + span * k / 5
        out.append(
            f'<text class="tick" x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle">'
            f"{_d(t)}</text>"
        )
    if target is not None:
        out.append(
            f'<line x1="{x(target):.1f}" y1="{top}" x2="{x(target):.1f}" y2="{axis_y}" '
            'stroke="#8e44ad" stroke-dasharray="4 3"><title>RTO objective '
            f"{_d(target)}</title></line>"
        )
    if rto is not None:
        out.append(
            f'<line x1="{x(rto):.1f}" y1="{top}" x2="{x(rto):.1f}" y2="{axis_y}" '
            f'stroke="#27ae60"><title>recovered at {_d(rto)}</title></line>'
        )
    out.append("</svg>")
    return "\n".join(out)


def html_report(data: dict[str, Any], md: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(_d(e['t']))}</td><td>{html.escape(e['label'])}</td>"
        f"<td>{e['source']}</td></tr>"
        for e in data["timeline"]
    )
    objectives = "".join(
        f'<li class="{"ok" if o["met"] else "bad"}">{html.escape(o["name"])}: '
        + (
            f"{_d(o.get('measured_seconds'))} of {_d(o.get('target_seconds'))} "
            if "target_seconds" in o
            else f"{html.escape(str(o['target']))} "
        )
        + ("met" if o["met"] else f"BREACHED {html.escape(o['reason'])}")
        + "</li>"
        for o in data["objectives"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drill {html.escape(data["drill"])}: {data["outcome"]}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
.ok{{color:#1e8449}}.bad{{color:#c0392b;font-weight:bold}}
table{{border-collapse:collapse}}td{{border-bottom:1px solid #eee;padding:2px 8px}}</style>
</head><body>
<h1>Drill {html.escape(data["drill"])} — {data["outcome"]} (exit {data["exit_code"]})</h1>
<p>Scenario {html.escape(data["scenario"])}, mode {data["mode"]}, {html.escape(_clock(data))}.</p>
<ul>{objectives}</ul>
<h2>Timeline</h2>
{svg_timeline(data)}
<table><tr><th>T (drill time)</th><th>event</th><th>source</th></tr>{rows}</table>
</body></html>
"""


def summary_line(result: DrillResult) -> str:
    """One line for the terminal: the verdict and each objective."""
    parts = []
    for o in result.objectives:
        if "target_seconds" in o:
            measured = o["measured_seconds"]
            shown = format_duration(measured) if measured is not None else "—"
            mark = "ok" if o["met"] else "BREACHED"
            parts.append(f"{o['name']} {shown}/{format_duration(o['target_seconds'])} {mark}")
        else:
            parts.append(f"runbook {o['target']} {'ok' if o['met'] else 'FAILED'}")
    parts += [f"preflight FAILED {c.name}: {c.detail}" for c in result.preflight if not c.ok]
    verdict = result.judged
    head = f"{result.drill.name}: {verdict.outcome} (exit {verdict.exit_code}) — "
    return head + ", ".join(parts)


def write_reports(result: DrillResult) -> dict[str, Any]:
    data = report_data(result)
    result.report_dir.mkdir(parents=True, exist_ok=True)
    (result.report_dir / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = markdown(data)
    (result.report_dir / "report.md").write_text(md)
    (result.report_dir / "report.html").write_text(html_report(data, md))
    return data
