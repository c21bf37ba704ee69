"""Drill results where the daemon reads them: each drill's last run, recorded in a journal,
comes back as srd_drill_last_*{drill}."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.recovery import export_drills
from srd.journal import SqliteJournal
from srd.simulate.measurement import journal_drill


async def test_the_last_run_of_each_drill_is_exported_from_the_journal(tmp_path: Path) -> None:
    journal = await SqliteJournal.open(tmp_path / "journal.sqlite3")
    metrics = EvaluationMetrics(CollectorRegistry())
    try:
        record = {"scenario": "database_failure", "report": "r"}
        await journal_drill(journal, drill="db", seconds=4000.0, passed=False, **record)
        await asyncio.sleep(0.01)
        await journal_drill(journal, drill="db", seconds=3660.0, passed=True, **record)
        await journal_drill(journal, drill="dc", seconds=None, passed=False, **record)
        await export_drills(journal, metrics)
        newest: dict[str, float] = {}
        for execution in await journal.executions(10):  # newest first
            newest.setdefault(execution.runbook, execution.created_at)
    finally:
        await journal.close()
    value = metrics.registry.get_sample_value
    assert value("srd_drill_last_rto_seconds", {"drill": "db"}) == 3660.0
    assert value("srd_drill_last_passed", {"drill": "db"}) == 1
    assert value("srd_drill_last_run_timestamp_seconds", {"drill": "db"}) == newest["drill:db"]
    assert value("srd_drill_last_passed", {"drill": "dc"}) == 0
    assert value("srd_drill_last_rto_seconds", {"drill": "dc"}) is None  # it measured none
    assert value("srd_drill_last_run_timestamp_seconds", {"drill": "dc"}) == newest["drill:dc"]
