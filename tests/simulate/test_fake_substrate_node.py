"""The fake Substrate node speaks the wire format of REFERENCE.md §1 and §2 on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from srd.probes.chain import Header
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode


async def post(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    request = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    async with session.post(url, json=request) as response:
        return await response.json()


def chain_of(blocks: int, **settings: Any) -> FakeChain:
    """A fake chain that has produced ``blocks`` blocks past genesis."""
    chain = FakeChain(**settings)
    for _ in range(blocks):
        chain.produce()
    return chain


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
    chain = chain_of(3)
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
    chain = chain_of(5, name="vilokanam", finality_lag=2)
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
    chain = chain_of(6, finality_lag=2)
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


async def call(
    ws: aiohttp.ClientWebSocketResponse, request_id: int, method: str, *params: Any
) -> Any:
    """Send a request and read until its reply; notifications meanwhile are returned too."""
    await ws.send_json(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
    )
    while True:
        message = await ws.receive_json(timeout=2)
        if message.get("id") == request_id:
            return message


async def events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    received = [await ws.receive_json(timeout=2) for _ in range(count)]
    assert all(m["method"] == "chainHead_v1_followEvent" for m in received)
    return [m["params"]["result"] for m in received]


async def test_chainhead_follow_sends_the_spec_events_and_headers_in_scale(
    session: aiohttp.ClientSession,
) -> None:
    chain = chain_of(3, name="v2", finality_lag=2)
    node = FakeSubstrateNode(chain)
    async with node.serve() as url, session.ws_connect(url) as ws:
        follow = (await call(ws, 1, "chainHead_v1_follow", False))["result"]
        assert isinstance(follow, str)
        first = await events(ws, 4)
        header = await call(ws, 2, "chainHead_v1_header", follow, chain.blocks[2].hash)
        produced = chain.produce()
        later = await events(ws, 3)
        unpin = await call(ws, 3, "chainHead_v1_unpin", follow, [chain.blocks[1].hash])
        again = await call(ws, 4, "chainHead_v1_unpin", follow, chain.blocks[1].hash)
        duplicate = await call(ws, 5, "chainHead_v1_unpin", follow, [produced.hash] * 2)
        stale = await call(ws, 6, "chainHead_v1_header", "nope", produced.hash)
        await call(ws, 7, "chainHead_v1_unfollow", follow)
        gone = await call(ws, 8, "chainHead_v1_header", follow, produced.hash)
    b = chain.blocks
    assert first == [
        {"event": "initialized", "finalizedBlockHashes": [b[1].hash]},
        {"event": "newBlock", "blockHash": b[2].hash, "parentBlockHash": b[1].hash},
        {"event": "newBlock", "blockHash": b[3].hash, "parentBlockHash": b[2].hash},
        {"event": "bestBlockChanged", "bestBlockHash": b[3].hash},
    ]
    assert Header.from_scale(header["result"], b[2].hash) == Header(2, b[2].hash, b[1].hash)
    assert later == [
        {"event": "newBlock", "blockHash": b[4].hash, "parentBlockHash": b[3].hash},
        {"event": "bestBlockChanged", "bestBlockHash": b[4].hash},
        {"event": "finalized", "finalizedBlockHashes": [b[2].hash], "prunedBlockHashes": []},
    ]
    assert unpin["result"] is None
    assert again["error"]["code"] == -32801  # already unpinned
    assert duplicate["error"]["code"] == -32804
    assert stale["result"] is None and gone["result"] is None


async def test_a_reorg_reports_the_fork_then_prunes_the_old_branch(
    session: aiohttp.ClientSession,
) -> None:
    chain = chain_of(5, finality_lag=3)
    node = FakeSubstrateNode(chain)
    async with node.serve() as url, session.ws_connect(url) as ws:
        await call(ws, 1, "chainHead_v1_follow", False)
        await events(ws, 5)  # initialized (2), newBlock 3, 4, 5, bestBlockChanged
        old = [block.hash for block in chain.blocks[4:6]]
        chain.reorg(depth=2)  # 4', 5', 6' on 3
        fork = await events(ws, 5)  # … and 3 finalized: the old branch still descends from it
        chain.produce()  # 7: finalizes 4', so the old 4 and 5 are pruned
        after = await events(ws, 3)
    b = chain.blocks
    assert [e.get("blockHash") for e in fork[:3]] == [b[4].hash, b[5].hash, b[6].hash]
    assert fork[0]["parentBlockHash"] == b[3].hash
    assert fork[3] == {"event": "bestBlockChanged", "bestBlockHash": b[6].hash}
    assert fork[4] == {
        "event": "finalized",
        "finalizedBlockHashes": [b[3].hash],
        "prunedBlockHashes": [],
    }
    assert after[2]["event"] == "finalized"
    assert after[2]["finalizedBlockHashes"] == [b[4].hash]
    assert sorted(after[2]["prunedBlockHashes"]) == sorted(old)


async def test_chainhead_only_hides_legacy_subscriptions_and_too_many_pins_stop_a_follow(
    session: aiohttp.ClientSession,
) -> None:
    chain = FakeChain()
    chain.finality_stalled = True
    node = FakeSubstrateNode(chain)
    node.chainhead_only = True
    node.max_pinned = 3
    async with node.serve() as url, session.ws_connect(url) as ws:
        methods = (await post(session, url, "rpc_methods"))["result"]["methods"]
        legacy = await call(ws, 1, "chain_subscribeNewHeads")
        await call(ws, 2, "chainHead_v1_follow", False)
        await events(ws, 2)  # initialized, bestBlockChanged (genesis)
        for _ in range(3):
            chain.produce()
        pinned = await events(ws, 6)  # 2 × (newBlock, bestBlockChanged), newBlock, stop
    assert "chainHead_v1_follow" in methods and "chain_subscribeNewHeads" not in methods
    assert "chain_unsubscribeNewHeads" not in methods and "chain_getHeader" in methods
    assert legacy["error"]["code"] == -32601
    assert [e["event"] for e in pinned][-2:] == ["newBlock", "stop"]
    assert node.follows == 0
