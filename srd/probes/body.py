"""The one way srd reads a body off the network: whole, however it is chunked, within a limit.

Proxies and busy servers split bodies into many chunks; a single ``read(n)`` returns only what
has arrived so far. ``read_body`` loops to the end, and stops one byte past ``limit`` so an
endless or huge body is never buffered. ``parse_json`` bounds the nesting depth before parsing,
so a hostile document gives a reason instead of a RecursionError that kills the reading task.
Every failure is a ``BodyError`` whose ``reason`` is a bounded class (``too_big``, ``too_deep``,
``malformed``) and whose ``str()`` is for people. Probes, clients and the webhook share it.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import aiohttp

MAX_JSON_DEPTH = 128
"""Nesting srd accepts in a JSON document: real answers nest under 20 levels; Python's parser
recurses once per level and fails near 1,000."""

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BodyError(ValueError):
    """A body that cannot be used. ``reason``: ``too_big``, ``too_deep`` or ``malformed``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


async def read_stream(stream: aiohttp.StreamReader, limit: int, declared: int | None) -> bytes:
    """Every byte of ``stream`` up to its end; BodyError ``too_big`` as soon as the body is
    known to exceed ``limit`` bytes (``declared`` is the Content-Length, when sent)."""
    if declared is not None and declared > limit:
        raise BodyError("too_big", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    # Never asks for more than one byte past the limit, so a huge body is not buffered.
    while chunk := await stream.read(limit + 1 - size):
        size += len(chunk)
        if size > limit:
            raise BodyError("too_big", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """A client response's whole body within ``limit`` bytes (see ``read_stream``)."""
    return await read_stream(response.content, limit, response.content_length)


def json_depth(text: bytes) -> int:
    """Deepest nesting of arrays and objects in a JSON text (brackets in strings ignored)."""
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets))


def parse_json(body: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON document in ``body``; BodyError ``too_deep`` or ``malformed`` otherwise (its
    message completes a sentence: "the body " + message)."""
    raw = body.encode() if isinstance(body, str) else body
    # Counting brackets is only worth it when there are enough to be too deep.
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        raise BodyError("too_deep", f"is JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BodyError("malformed", f"is not JSON ({exc})") from None
