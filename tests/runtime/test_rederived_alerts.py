"""srd's own alerts have no Alertmanager to send them again: a firing transition whose
receipt never reached the journal (srd was killed in between) is derived again at the first
evaluation after the start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

from srd.journal import JOURNAL_FILE
from tests.support.daemon import free_port, running_srd

SLO = """
slos:
  - name: ghost
    service: ghost
    objective: 99.5
    period: 30d
    sli:
      events:
        bad: srd_ghost_total{result="failure"}
        total: srd_ghost_total
    alert_when_no_data: true
"""
LABELS = {
    "alertname": "GhostNoData",
    "severity": "ticket",
    "sloth_id": "ghost-ghost",
    "sloth_service": "ghost",
    "sloth_slo": "ghost",
}


def receipts(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT alert, status FROM alerts_received").fetchall()
    return [(json.loads(alert)["labels"]["alertname"], status) for alert, status in rows]


async def test_an_own_alert_firing_before_a_kill_but_never_journaled_is_submitted_at_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    now = time.time()
    # As srd left it when killed right after the transition: firing in the saved alert
    # state, no receipt in the journal.
    firing = {
        "alertname": "GhostNoData",
        "labels": LABELS,
        "annotations": {},
        "state": "firing",
        "active_since": now - 600,
        "fired_at": now - 10,
        "resolved_at": None,
        "keep_firing_since": None,
    }
    (state / "alerts.json").write_text(
        json.dumps({"version": 1, "saved_at": now - 5, "alerts": [firing]})
    )
    (tmp_path / "slo.yaml").write_text(SLO)
    port = free_port()
    config = tmp_path / "srd.yaml"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(state),
                "server": {"listen": f"127.0.0.1:{port}"},
                "evaluation": {"rules": ["slo.yaml"], "interval": "1s"},
            }
        )
    )
    async with running_srd("run", "--config", str(config), port=port):
        async with asyncio.timeout(15):
            while ("GhostNoData", "firing") not in receipts(state / JOURNAL_FILE):
                await asyncio.sleep(0.1)
