"""The platform's JSON stream stats endpoint, e.g. ``{"active_streams": 3, "viewers": 120}``,
observed as samples under the platform's metric names (see srd.probes.stream_metrics)."""

from __future__ import annotations

import math

import aiohttp

from srd.config.probes import StreamStatsTarget
from srd.model import Observation, Sample
from srd.probes.body import BodyError, parse_json, read_body
from srd.probes.fetch import Payload, ScrapeError, observe
from srd.probes.stream_metrics import ACTIVE_STREAMS, VIEWER_COUNT

MAX_BODY_BYTES = 64 * 1024
"""A stats object is a few dozen bytes; anything near this is not one."""
FIELDS = {"active_streams": ACTIVE_STREAMS, "viewers": VIEWER_COUNT}


def parse_stats(body: bytes) -> tuple[Sample, ...]:
    """The two counts as samples; ScrapeError naming the field when one is missing or bad."""
    try:
        data = parse_json(body)
    except BodyError as exc:
        raise ScrapeError(f"invalid JSON: the body {exc}") from None
    if not isinstance(data, dict):
        raise ScrapeError("expected a JSON object")
    samples = []
    for field, name in FIELDS.items():
        value = data.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScrapeError(f"{field!r} is missing or not a number")
        if not math.isfinite(value) or value < 0:
            raise ScrapeError(f"{field!r} is not a count: {value}")
        samples.append(Sample(name, (), float(value)))
    return tuple(samples)


class StreamStatsProbe:
    kind = "streams"

    def __init__(self, target: StreamStatsTarget, session: aiohttp.ClientSession) -> None:
        self.target = target
        self._session = session

    async def __call__(self) -> Observation:
        return await observe(self.kind, self.target, self._read)

    async def _read(self, payload: Payload) -> None:
        async with self._session.get(str(self.target.url), allow_redirects=False) as response:
            if response.status != 200:
                raise ScrapeError(f"unexpected status {response.status}")
            body = await read_body(response, MAX_BODY_BYTES)
        payload.samples = parse_stats(body)
