"""``srd probe`` on the URLs and pages real users give it: an exporter page without ``--keep``,
a node as ``ws://``."""

from __future__ import annotations

from srd.http.app import serving
from srd.simulate.sandbox.exporters import FakeNodeExporter, node_exporter_app
from srd.simulate.sandbox.substrate import FakeSubstrateNode
from tests.cli.test_probe_cli import srd
from tests.support.substratekit import grown


async def test_probe_exporter_without_keep_summarises_the_page() -> None:
    exporter = FakeNodeExporter()
    async with serving(node_exporter_app(exporter), "127.0.0.1", 0) as port:
        code, report, err = await srd("exporter", f"http://127.0.0.1:{port}/metrics")
    assert code == 0, err
    assert report is not None
    assert report["up"] is True
    assert isinstance(report["families"], int) and report["families"] > 10
    assert isinstance(report["samples"], int) and report["samples"] >= report["families"]
    assert isinstance(report["bytes"], int) and report["bytes"] > 1000
    assert isinstance(report["parse_seconds"], float)


async def test_probe_substrate_takes_a_ws_url() -> None:
    node = FakeSubstrateNode(grown(4, "ws-probe"))
    async with node.serve() as url:
        code, report, err = await srd("substrate", url.replace("http://", "ws://"))
    assert code == 0, err
    assert report is not None
    assert (report["chain"], report["best"]) == ("ws-probe", 4)
