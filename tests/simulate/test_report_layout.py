"""report.html in a real browser (headless Chromium): it loads without console errors, and no
two text labels of its timeline overlap — also with simultaneous events and long names."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from srd.simulate.report import html_report, markdown

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Before the report: console errors and uncaught errors are kept for the check below.
PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
const consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); consoleError(...args); };
</script>"""
# After it: every text label's box; any two that intersect are an overlap.
PROBE_TAIL = """<script>
const boxes = [...document.querySelectorAll("svg text")].map((t) => {
  const r = t.getBoundingClientRect();
  return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
});
const overlaps = [];
for (let i = 0; i < boxes.length; i++) {
  for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) {
      overlaps.push([a.text, b.text]);
    }
  }
}
const out = document.createElement("pre");
out.id = "layout";
out.textContent = JSON.stringify({labels: boxes.length, overlaps, errors: window.__errors});
document.body.appendChild(out);
</script>"""


def report(events: list[tuple[float, str, str]], steps: list[tuple[str, float, float]]) -> str:
    """report.html of a drill with these (t, source, label) events and (name, start, end)
    steps, drill seconds since the fault at 1000."""
    injected = 1000.0
    data: dict[str, Any] = {
        "drill": "layout",
        "scenario": "complete_data_center_outage",
        "description": "",
        "mode": "armed",
        "outcome": "met",
        "exit_code": 0,
        "clock": "virtual",
        "time_scale": 1.0,
        "wall_seconds": 3.2,
        "precision_seconds": 60.0,
        "started_at": injected - 60,
        "ended_at": injected + 9000,
        "preflight": [],
        "objectives": [
            {
                "name": "RTO",
                "target_seconds": 86400.0,
                "measured_seconds": 5400.0,
                "met": True,
                "breached_by_seconds": None,
                "reason": "",
            }
        ],
        "rto": {
            "injected_at": injected,
            "measured_seconds": 5400.0,
            "phases": {"detect": 120.0, "decide": 60.0, "act": 5000.0, "converge": 220.0},
        },
        "rpo": {"state": "met", "measured_seconds": 600.0, "objective_seconds": 86400.0},
        "timeline": [
            {"at": injected + t, "t": t, "event": "e", "label": label, "source": source}
            for t, source, label in events
        ],
        "executions": [
            {
                "id": "x",
                "runbook": "platform_failover_web-viewer",
                "steps": [
                    {
                        "index": i,
                        "name": name,
                        "started_at": injected + a,
                        "ended_at": injected + b,
                        "result": "ok",
                        "compensation": False,
                    }
                    for i, (name, a, b) in enumerate(steps)
                ],
            }
        ],
        "faults": [],
        "stop": None,
        "rollback": {},
        "notes": [],
    }
    return html_report(data, markdown(data))


def layout(page: str, tmp_path: Path) -> dict[str, Any]:
    """The page as headless Chromium lays it out: labels, overlaps, console errors."""
    assert CHROMIUM is not None
    head, _, rest = page.partition("<head>")
    probe = tmp_path / "probe.html"
    probe.write_text(head + "<head>" + PROBE_HEAD + rest.replace("</body>", PROBE_TAIL + "</body>"))
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _, _, after = done.stdout.partition('<pre id="layout">')
    result: dict[str, Any] = json.loads(after.partition("</pre>")[0].replace("&quot;", '"'))
    return result


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test)")
def test_the_report_loads_in_chromium_without_errors_and_no_labels_overlap(
    tmp_path: Path,
) -> None:
    simultaneous = [(120.0, source, f"alert ServiceDown {source}") for source in
                    ("runner", "registry", "journal")]  # fmt: skip
    symptom = 'first symptom: srd_probe_up{probe="http",target="web-viewer"} = 0'
    events = [(0.0, "runner", "fault injected: production-site-down"), (60.0, "registry", symptom)]
    events += [*simultaneous, (5400.0, "journal", "execution succeeded")]
    steps = [
        ("restore_latest_database_backup_from_the_offsite_bucket", 300.0, 1800.0),
        ("apply_transaction_logs_since_backup", 1800.0, 1800.0),
        ("switch_traffic_to_restored_database", 1800.0, 5300.0),
    ]
    page = report(events, steps)
    found = layout(page, tmp_path)
    assert found["errors"] == []
    assert found["labels"] >= len(events) + len(steps)
    assert found["overlaps"] == []


def labels(page: str) -> list[str]:
    """The text of each row label of the page's timeline, its wrapped lines joined."""
    svg = page[page.index("<svg") : page.index("</svg>")]
    found = []
    for element in svg.split('<text class="label"')[1:]:
        body = element.partition("</text>")[0]
        found.append("".join(p.rpartition(">")[2] for p in body.split("</tspan>")[:-1]))
    return found


def test_long_step_names_are_wrapped_in_full_not_cut() -> None:
    name = "restore_latest_database_backup_from_the_offsite_bucket_and_verify_checksums"
    page = report([], [(name, 0.0, 10.0)])
    assert labels(page) == [f"step {name}"]
    assert page.count('<tspan x="8"') >= 2  # longer than a line: wrapped, not cut


def test_the_timeline_has_a_legend() -> None:
    page = report([(0.0, "runner", "fault injected")], [])
    for entry in ("seen by the registry", "step ok", "step failed", "RTO objective", "recovered"):
        assert f">{entry}</text>" in page
