"""Run every benchmark and merge its numbers into ``bench/results.json`` (one JSON object).

Keys written by benchmarks not run here are kept, so later benchmarks can add their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from . import chain_follow, exporter_parse, poll_schedule, webhook

RESULTS = Path(__file__).parent / "results.json"
BENCHMARKS: list[Callable[[], dict[str, float]]] = [
    chain_follow.run,
    exporter_parse.run,
    poll_schedule.run,
    webhook.run,
]


def main() -> None:
    try:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
    except FileNotFoundError:
        results = {}
    if not isinstance(results, dict):
        raise SystemExit(f"{RESULTS} must hold one JSON object")
    for benchmark in BENCHMARKS:
        results.update(benchmark())
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
