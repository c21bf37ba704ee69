"""The fake Substrate node speaks the wire format of REFERENCE.md §1 and §2 on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from srd.probes.chain import Header
from srd.simulate.substrate import FakeChain, FakeSubstrateNode


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    request = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    async with session.post(url, json=request) as response:
        return await response.json()


async def test_head_subscription_notifications_have_the_substrate_format(
    session: aiohttp.ClientSession,
) -> None:
    chain = FakeChain(name="fmt")
    node = FakeSubstrateNode(chain)
    async with node.serve() as url, session.ws_connect(url) as ws:
        await ws.send_json(
            {"jsonrpc": "2.0", "id": 1, "method": "chain_subscribeNewHeads", "params": []}
        )
        reply = await ws.receive_json(timeout=2)
        assert reply["id"] == 1 and isinstance(reply["result"], str)
        current = await ws.receive_json(timeout=2)  # the current best comes first
        assert current["params"]["result"]["number"] == "0x00000000"
        block = chain.produce()
        notification = await ws.receive_json(timeout=2)
    assert notification == {
        "jsonrpc": "2.0",
        "method": "chain_newHead",
        "params": {"subscription": reply["result"], "result": node.header(block)},
    }
    assert Header.from_rpc(notification["params"]["result"]).hash == block.hash


async def test_subscription_ids_can_be_integers_and_finalized_heads_notify_too(
    session: aiohttp.ClientSession,
) -> None:
    chain = FakeChain(finality_lag=1)
    node = FakeSubstrateNode(chain, pad_numbers=False)
    node.integer_subscription_ids = True
    async with node.serve() as url, session.ws_connect(url) as ws:
        request = {"jsonrpc": "2.0", "id": 1, "method": "chain_subscribeFinalizedHeads"}
        await ws.send_json(request)
        reply = await ws.receive_json(timeout=2)
        assert isinstance(reply["result"], int)
        await ws.receive_json(timeout=2)
        chain.produce()
        chain.produce()
        notification = await ws.receive_json(timeout=2)
    assert notification["method"] == "chain_finalizedHead"
    assert notification["params"]["result"]["number"] == "0x1"


async def test_subscriptions_are_refused_over_http_and_unsafe_methods_answer_32601(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeSubstrateNode(FakeChain()).serve() as url:
        subscribe = await post(session, url, "chain_subscribeNewHeads")
        unsafe = await post(session, url, "system_peers")
    assert subscribe["error"]["code"] == -32601
    assert unsafe["error"] == {
        "code": -32601,
        "message": "RPC call is unsafe to be called externally",
    }


async def test_missing_methods_are_neither_listed_nor_answered_and_codes_can_be_omitted(
    session: aiohttp.ClientSession,
) -> None:
    node = FakeSubstrateNode(FakeChain())
    node.missing_methods = {"system_syncState"}
    node.faults.omit_error_codes = True
    async with node.serve() as url:
        methods = await post(session, url, "rpc_methods")
        answer = await post(session, url, "system_syncState")
    assert "system_syncState" not in methods["result"]["methods"]
    assert "chain_subscribeNewHeads" in methods["result"]["methods"]
    assert answer["error"] == {"message": "Method not found: system_syncState"}


async def test_block_hash_accepts_a_list_of_numbers(session: aiohttp.ClientSession) -> None:
    chain = FakeChain()
    for _ in range(3):
        chain.produce()
    async with FakeSubstrateNode(chain).serve() as url:
        answer = await post(session, url, "chain_getBlockHash", [1, "0x2", 9])
    assert answer["result"] == [chain.blocks[1].hash, chain.blocks[2].hash, None]


async def test_health_and_readiness_follow_peers_and_syncing(
    session: aiohttp.ClientSession,
) -> None:
    node = FakeSubstrateNode(FakeChain(), peers=3)
    async with node.serve() as url:
        async with session.get(f"{url}/health") as response:
            health = await response.json()
        async with session.get(f"{url}/health/readiness") as response:
            ready = response.status
        node.syncing = True
        async with session.get(f"{url}/health/readiness") as response:
            syncing = response.status
    assert health == {"peers": 3, "isSyncing": False, "shouldHavePeers": True}
    assert (ready, syncing) == (200, 500)


async def test_metrics_page_has_the_node_names_and_parses_as_prometheus_text(
    session: aiohttp.ClientSession,
) -> None:
    chain = FakeChain(name="vilokanam", finality_lag=2)
    for _ in range(5):
        chain.produce()
    async with FakeSubstrateNode(chain).serve() as url, session.get(f"{url}/metrics") as response:
        page = await response.text()
    samples = {
        (sample.name, sample.labels.get("status")): sample
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }
    assert samples[("substrate_block_height", "best")].value == 5
    assert samples[("substrate_block_height", "finalized")].value == 3
    assert samples[("substrate_block_height", "best")].labels["chain"] == "vilokanam"
    names = {name for name, _ in samples}
    for name in (
        "substrate_number_leaves",
        "substrate_sub_libp2p_peers_count",
        "substrate_sub_libp2p_is_major_syncing",
        "substrate_import_queue_processed_total",
        "substrate_block_verification_time_bucket",
        "substrate_finality_grandpa_round",
        "substrate_build_info",
    ):
        assert name in names


async def test_faults_429_and_malformed_json_and_latency(session: aiohttp.ClientSession) -> None:
    node = FakeSubstrateNode(FakeChain())
    async with node.serve() as url:
        node.faults.too_many_connections = True
        async with session.post(url, json={"id": 1, "method": "system_health"}) as response:
            assert response.status == 429
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
        assert refused.value.status == 429
        node.faults.too_many_connections = False
        node.faults.malformed_json = True
        async with session.post(url, json={"id": 1, "method": "system_health"}) as response:
            with pytest.raises(json.JSONDecodeError):
                json.loads(await response.text())
        node.faults.malformed_json = False
        node.faults.latency = 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        await post(session, url, "system_health")
        assert loop.time() - started >= 0.3


def test_a_reorg_never_reverts_finalized_blocks() -> None:
    chain = FakeChain(finality_lag=2)
    for _ in range(6):
        chain.produce()
    with pytest.raises(ValueError, match="unfinalized"):
        chain.reorg(depth=3)
    old_best = chain.best
    new_best = chain.reorg(depth=2)
    assert new_best.number == old_best.number + 1
    assert chain.blocks[old_best.number].hash != old_best.hash
    assert (
        chain.blocks[old_best.number - 2] == chain.by_hash[chain.blocks[old_best.number - 2].hash]
    )


def test_stalls_stop_production_and_finality_independently() -> None:
    chain = FakeChain(finality_lag=1)
    chain.finality_stalled = True
    for _ in range(4):
        chain.produce()
    assert (chain.best.number, chain.finalized.number) == (4, 0)
    chain.finality_stalled = False
    chain.produce()
    assert chain.finalized.number == 4
