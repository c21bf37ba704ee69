"""The drill faults for what real networks do to nodes: a body in two chunks, an endpoint that
serves only WebSocket, nodes restarted with a fresh database."""

from __future__ import annotations

import time

from srd.simulate.faults import KINDS, Target
from srd.simulate.sandbox import Sandbox
from tests.simulate.test_simulate_faults import _status, sandbox

__all__ = ["sandbox"]  # the fixture, shared


async def test_split_bodies_delay_every_answer_until_reverted(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    url = box.urls["validator-1"]
    revert = await KINDS["rpc_split_bodies"].apply(target, {"node": "validator-1", "delay": 0.2})
    began = time.monotonic()
    assert await _status(url) == 200
    assert time.monotonic() - began >= 0.2
    await revert()
    assert box.nodes["validator-1"].faults.split_body == 0


async def test_websocket_only_refuses_http_json_rpc_until_reverted(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    url = box.urls["validator-1"]
    revert = await KINDS["rpc_websocket_only"].apply(target, {"node": "validator-1"})
    assert await _status(url) == 405
    await revert()
    assert await _status(url) == 200


async def test_a_chain_reset_starts_heights_again_from_genesis(
    sandbox: tuple[Sandbox, Target],
) -> None:
    box, target = sandbox
    while box.chain.finalized.number < 10:
        box.chain.produce()
    old, old_finalized = box.chain.best, box.chain.finalized.number
    await KINDS["chain_reset"].apply(target, {})
    # The sandbox keeps producing: a block or two of the new chain may be there already.
    assert box.chain.best.number < old.number
    assert box.chain.finalized.number < old_finalized
    assert old.hash not in box.chain.by_hash
