"""A PromQL client: instant queries to a Prometheus server, each bounded by a timeout.

prometheus-api-client is synchronous (requests): every query runs in a worker thread with a
request timeout, and the caller's wait is bounded by the same timeout plus a margin. What is
asked, and what the answers mean, is evaluation's (``srd.evaluation.promql_sli``).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from srd.model import label_set


class PromqlError(Exception):
    """A query failed, timed out or answered something that is not a number."""


class PromqlClient:
    """Instant queries against one Prometheus server, off the event loop, with a timeout."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        # No retries inside the thread: the timeout must bound the whole call.
        self._client = PrometheusConnect(url, retry=Retry(total=0), timeout=math.ceil(timeout))

    async def scalar(self, query: str, at: float | None = None) -> float | None:
        """The query's single value at ``at`` (now when None); None when the result is empty."""
        result = await self.query(query, at)
        if not result:
            return None
        if len(result) > 1:
            raise PromqlError(f"{len(result)} series where one was expected: {query}")
        return result[0][1]

    async def query(self, query: str, at: float | None = None) -> list[tuple[Any, float]]:
        """Instant vector or scalar as (labels, value) pairs."""
        params = {} if at is None else {"time": repr(at)}
        try:
            async with asyncio.timeout(self.timeout + 1):
                raw = await asyncio.to_thread(self._client.custom_query, query, params=params)
        except TimeoutError as exc:
            raise PromqlError(f"timed out after {self.timeout:g}s: {query}") from exc
        except Exception as exc:  # requests and the client raise many kinds: all mean no answer
            raise PromqlError(f"{type(exc).__name__}: {exc}") from exc
        return _values(raw, query)


def _values(raw: Any, query: str) -> list[tuple[Any, float]]:
    try:
        if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
            return [({}, float(raw[1]))]  # a scalar result: [time, "value"]
        return [(label_set(item["metric"]), float(item["value"][1])) for item in raw]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise PromqlError(f"unexpected result for {query}: {raw!r:.200}") from exc
