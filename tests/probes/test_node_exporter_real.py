"""The exporter probe against the real Debian ``prometheus-node-exporter`` on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from srd.config.probes import ExporterTarget
from srd.probes.exporter import ExporterProbe, Extractor
from tests.probes.test_exporter_probe import extracted, reference
from tests.support.daemon import free_port, reaped
from tests.support.eventually import eventually

BINARY = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
NAMES = {
    "node_cpu_seconds_total",
    "node_load1",
    "node_memory_MemAvailable_bytes",
    "node_network_receive_bytes_total",
    "node_filesystem_avail_bytes",
    "go_gc_duration_seconds",
    "node_scrape_collector_success",
}


@pytest.fixture
def binary() -> str:
    if BINARY is None:
        reason = (
            "prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    return BINARY


@asynccontextmanager
async def node_exporter(binary: str) -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    async with reaped(process, asyncio.subprocess.Process.terminate):
        await _wait_until_serving(url, process)
        yield url


async def _wait_until_serving(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:

        async def serving() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"node exporter exited with {process.returncode}")
            try:
                async with session.get(url) as reply:
                    return reply.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(serving, within=10, what="node exporter serves /metrics", every=0.1)


async def test_real_node_exporter_page_extracts_the_same_values_as_the_reference_parser(
    binary: str,
) -> None:
    async with node_exporter(binary) as url, aiohttp.ClientSession() as session:
        async with session.get(url) as reply:
            page = await reply.text()
        obs = await ExporterProbe(
            ExporterTarget.model_validate(
                {"name": "node", "url": url, "keep": sorted(NAMES), "timeout": 5}
            ),
            session,
        )()

    assert len(page.splitlines()) > 500
    mine = extracted(page, NAMES)
    assert mine == reference(page, NAMES)
    assert {name for name, *_ in mine} >= {"node_cpu_seconds_total", "node_load1"}
    modes = {s.label("mode") for s in Extractor({"node_cpu_seconds_total"})(page)}
    assert {"idle", "user", "system"} <= modes

    assert obs.up, obs.reason
    assert obs.samples is not None
    # Counters move between the two scrapes; the series scraped are the same.
    assert {(s.name, s.labels) for s in obs.samples} == {(k[0], k[1]) for k in mine}
