"""srd's exporter extraction vs prometheus-client's ``text_string_to_metric_families`` on a
real node exporter page, side by side in one run, with identical values asserted.

The page comes from the real ``prometheus-node-exporter`` when it is installed (started on a
free loopback port for the run), else from ``bench/data/node_exporter.txt``, captured from it.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from srd.probes.exporter import SUFFIXES, Extractor

FIXTURE = Path(__file__).parent / "data" / "node_exporter.txt"
# What srd's rules and dashboards read from a node exporter (REFERENCE.md §3, DESIGN.md).
NAMES = frozenset(
    {
        "node_cpu_seconds_total",
        "node_load1",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
    }
)
ROUNDS = 30

Key = tuple[str, tuple[tuple[str, str], ...], str, str]


def real_page() -> tuple[str, str]:
    """(page, where it came from)."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        return FIXTURE.read_text(encoding="utf-8"), f"fixture {FIXTURE.name}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return reply.read().decode(), f"live {Path(binary).name}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("node exporter did not answer within 10 s")
    finally:
        process.terminate()
        process.wait(timeout=10)


def reference(page: str) -> list[Key]:
    found = []
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            base = next((s.name[: -len(x)] for x in SUFFIXES if s.name.endswith(x)), None)
            if s.name in NAMES or base in NAMES:
                found.append((s.name, tuple(s.labels.items()), repr(float(s.value)), repr(None)))
    return sorted(found)


def srd_extract(extractor: Extractor, page: str) -> list[Key]:
    return sorted((s.name, s.labels, repr(s.value), repr(s.timestamp)) for s in extractor(page))


def median_of(function: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> dict[str, float]:
    page, source = real_page()
    extractor = Extractor(NAMES)
    expected = reference(page)
    assert expected, "the page has none of the names"
    assert srd_extract(extractor, page) == expected, "values differ from the reference parser"

    # Interleaved rounds, so both see the same machine state.
    ref_times, srd_times = [], []
    for _ in range(ROUNDS):
        ref_times.append(median_of(lambda: list(text_string_to_metric_families(page)), 1))
        srd_times.append(median_of(lambda: extractor(page), 5))
    ref, ours = statistics.median(ref_times), statistics.median(srd_times)
    speedup = ref / ours
    lines = len(page.splitlines())
    print(
        f"exporter_parse: {source}, {lines} lines, {len(page) // 1024} KiB, "
        f"{len(expected)} series kept: reference {ref * 1e3:.2f} ms, srd {ours * 1e3:.3f} ms, "
        f"{speedup:.1f}x, identical values"
    )
    return {"exporter_parse_speedup": round(speedup, 1)}


if __name__ == "__main__":
    run()
