"""``srd probe``: the real command against the sandbox's fakes on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from srd.simulate.sandbox import FakeService
from srd.simulate.sandbox.exporters import FakeNodeExporter, node_exporter_app
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode
from tests.support.daemon import free_port
from tests.support.servers import running

SRD = str(Path(sys.executable).with_name("srd"))


async def srd(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    process = await asyncio.create_subprocess_exec(
        SRD, "probe", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out else None, err.decode()


async def test_probe_substrate_prints_numbers_as_integers_and_the_methods_it_learned() -> None:
    chain = FakeChain(name="probe-chain", finality_lag=2)
    for _ in range(12):
        chain.produce()
    node = FakeSubstrateNode(chain, pad_numbers=True)
    async with node.serve() as url:
        code, report, _ = await srd("substrate", url)
    assert code == 0
    assert report is not None
    assert report["chain"] == "probe-chain"
    assert (report["best"], report["finalized"], report["finality_lag"]) == (12, 10, 2)
    assert report["peers"] == 5
    assert report["is_syncing"] is False
    assert "chain_getHeader" in report["methods"]
    assert "system_peers" not in report["methods"]


async def test_probe_of_a_down_target_exits_1_with_the_reason() -> None:
    port = free_port()
    code, report, _ = await srd("substrate", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert code == 1
    assert report is not None
    assert report["up"] is False
    assert f"cannot connect to host 127.0.0.1:{port}" in str(report["reason"]).lower()


async def test_probe_exporter_extracts_the_kept_series() -> None:
    exporter = FakeNodeExporter()
    async with running(node_exporter_app(exporter)) as server:
        code, report, _ = await srd("exporter", f"{server.url}/metrics", "--keep", "node_load1")
    assert code == 0
    assert report is not None
    [sample] = report["samples"]
    assert sample["name"] == "node_load1"


async def test_probe_http_reports_the_status_and_fails_on_an_unexpected_one() -> None:
    service = FakeService()
    async with running(service.app()) as server:
        url = f"{server.url}/health"
        code, report, _ = await srd("http", url)
        assert (code, report and report["status"]) == (0, 200)
        service.healthy = False
        code, report, _ = await srd("http", url)
        assert code == 1
        assert report is not None
        assert report["reason"] == "unexpected status 503"


async def test_probe_with_a_bad_url_exits_2_saying_what_is_wrong() -> None:
    code, report, err = await srd("http", "not-a-url")
    assert (code, report) == (2, None)
    assert "srd probe http: url:" in err
