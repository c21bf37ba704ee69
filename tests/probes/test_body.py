"""The one body reader: whole bodies however they are chunked, a size limit that never buffers
past itself, and JSON whose nesting is bounded before Python's parser recurses."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from srd.http.app import serving
from srd.probes.body import BodyError, json_depth, parse_json, read_body


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    text = json.dumps({"a": ["[[[[", {"b": '\\"{{{{'}], "c": "]]]]"}).encode()
    assert json_depth(text) == 3


def test_nesting_over_the_bound_is_too_deep_and_at_the_bound_parses() -> None:
    assert parse_json("[" * 128 + "]" * 128, max_depth=128) is not None
    with pytest.raises(BodyError) as deep:
        parse_json("[" * 129 + "]" * 129, max_depth=128)
    assert deep.value.reason == "too_deep"


def test_a_100000_deep_document_is_refused_without_a_recursion_error() -> None:
    with pytest.raises(BodyError) as deep:
        parse_json(b"{" * 100_000)
    assert deep.value.reason == "too_deep"


def test_malformed_json_and_bad_utf8_are_malformed() -> None:
    for body in (b'{"a": 1', b"\xff\xfe{}", b""):
        with pytest.raises(BodyError) as bad:
            parse_json(body)
        assert bad.value.reason == "malformed"


async def test_a_body_in_many_chunks_is_read_whole_and_one_over_the_limit_is_too_big() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(int(request.query["chunks"])):
            await response.write(b"x" * 1000)
            await asyncio.sleep(0.005)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", chunked)
    async with serving(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/?chunks=10") as response:
            assert len(await read_body(response, 10_000)) == 10_000
        async with session.get(f"http://127.0.0.1:{port}/?chunks=11") as response:
            with pytest.raises(BodyError) as big:
                await read_body(response, 10_000)
    assert big.value.reason == "too_big"
