"""Drills on virtual time are reproducible: the same drill gives the same verdict and the same
RTO run after run, on an idle machine and on a busy one, and a day of drill time runs in
seconds of wall time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRD = str(Path(sys.executable).with_name("srd"))
RUNS = 5


def drill(name: str, out: Path) -> tuple[str, float, float]:
    """Run drills/NAME.yaml: its outcome, measured RTO (drill seconds) and wall seconds."""
    started = time.monotonic()
    done = subprocess.run(
        [SRD, "simulate", f"drills/{name}.yaml", "--report-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    wall = time.monotonic() - started
    assert done.returncode in (0, 3), done.stdout + done.stderr
    data = json.loads((out / "report.json").read_text())
    return data["outcome"], data["rto"]["measured_seconds"], wall


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two processes spinning on the machine's cores for as long as the test runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.fixture(scope="module")
def idle_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, float, float]]:
    return [drill("database_failure", tmp_path_factory.mktemp(f"idle{i}")) for i in range(RUNS)]


def test_five_runs_of_the_database_drill_give_the_same_verdict_and_rto(
    idle_runs: list[tuple[str, float, float]],
) -> None:
    outcomes = {outcome for outcome, _, _ in idle_runs}
    rtos = [rto for _, rto, _ in idle_runs]
    assert outcomes == {"met"}
    assert max(rtos) - min(rtos) < 1.0, rtos


def test_under_cpu_load_the_database_drill_gives_the_same_verdict_and_rto(
    idle_runs: list[tuple[str, float, float]], busy_cores: None, tmp_path: Path
) -> None:
    loaded = [drill("database_failure", tmp_path / f"loaded{i}") for i in range(RUNS)]
    rtos = [rto for _, rto, _ in idle_runs + loaded]
    assert {outcome for outcome, _, _ in loaded} == {"met"}
    assert max(rtos) - min(rtos) < 1.0, rtos


def test_the_day_long_data_center_drill_runs_in_under_ten_seconds_of_wall_time(
    tmp_path: Path,
) -> None:
    outcome, rto, wall = drill("complete_data_center_outage", tmp_path)
    assert outcome == "met"
    assert rto is not None
    assert wall < 10, f"{wall:.1f} s of wall time"
