"""srd.testing: the fakes a user imports into their own tests work as documented."""

from __future__ import annotations

from srd.cli.probe import probe_once
from srd.testing import FakeChain, FakeSubstrateNode


async def test_a_user_probes_the_public_fake_node_and_sees_its_chain() -> None:
    chain = FakeChain(name="user-chain")
    for _ in range(5):
        chain.produce()
    node = FakeSubstrateNode(chain)
    async with node.serve() as url:
        report, up = await probe_once(
            "substrate", url, timeout_seconds=2.0, keep=[], expect_status=[]
        )
    assert up
    assert report["chain"] == "user-chain"
    assert report["best"] == chain.best.number == 5
