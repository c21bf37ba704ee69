"""Service health endpoints: up when the status is expected, the answer came in time and, when
asked, the body holds the expected value.

Every way down has its own reason (timeout, refused, TLS, bad status, body mismatch, body too
large, too many redirects), so an alert can say what broke without anyone re-running curl.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable

import aiohttp

from srd.config.probes import BodyMatch, HttpTarget, JsonScalar
from srd.jsonpath import JsonPath
from srd.model import Observation
from srd.probes.body import BodyError, parse_json, read_body
from srd.probes.fetch import Payload, ScrapeError, observe


class BodyMismatch(Exception):
    """The body does not hold what the target's ``body`` asks for."""


BodyCheck = Callable[[bytes], None]
"""Raises BodyMismatch saying why a body fails the target's ``body`` match."""


def body_check(match: BodyMatch) -> BodyCheck:
    if match.regex is not None:
        return _RegexCheck(re.compile(match.regex))
    if match.json_path is not None:
        return _JsonPathCheck(JsonPath.parse(match.json_path), match.equals)
    raise ValueError("a body match needs json_path or regex")  # BodyMatch validation prevents it


class _RegexCheck:
    def __init__(self, regex: re.Pattern[str]) -> None:
        self._regex = regex

    def __call__(self, body: bytes) -> None:
        if self._regex.search(body.decode("utf-8", errors="replace")) is None:
            raise BodyMismatch(f"no match for regex {self._regex.pattern!r}")


class _JsonPathCheck:
    def __init__(self, path: JsonPath, expected: JsonScalar) -> None:
        self._path = path
        self._expected = expected

    def __call__(self, body: bytes) -> None:
        try:
            document = parse_json(body)
        except BodyError as exc:
            raise BodyMismatch(f"body {exc}") from None
        try:
            value = self._path.find(document)
        except LookupError as exc:
            raise BodyMismatch(str(exc)) from None
        if not _same(value, self._expected):
            raise BodyMismatch(
                f"{self._path.text} is {_show(value)}, expected {_show(self._expected)}"
            )


def _same(value: object, expected: JsonScalar) -> bool:
    # In Python True == 1; in JSON a boolean and a number are different answers.
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return value == expected


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def ssl_option(target: HttpTarget) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=``: False skips verification, True uses the system store."""
    if not target.tls_verify:
        return False
    if target.ca_file is not None:
        return ssl.create_default_context(cafile=target.ca_file)
    return True


class HttpProbe:
    kind = "http"

    def __init__(self, target: HttpTarget, session: aiohttp.ClientSession) -> None:
        self.target = target
        self._session = session
        self._ssl = ssl_option(target)
        self._check = body_check(target.body) if target.body is not None else None
        self._headers: dict[str, str] = {}
        if target.bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {target.bearer_token.value}"

    async def __call__(self) -> Observation:
        return await observe(self.kind, self.target, self._get)

    async def _get(self, payload: Payload) -> None:
        target = self.target
        async with self._session.get(
            str(target.url),
            headers=self._headers,
            ssl=self._ssl,
            allow_redirects=target.max_redirects > 0,
            # aiohttp fails on reaching max_redirects; srd's value is how many to follow.
            max_redirects=target.max_redirects + 1,
        ) as response:
            payload.http_status = response.status
            if response.status not in target.expect_status:
                raise ScrapeError(f"unexpected status {response.status}")
            if self._check is not None:
                try:
                    self._check(await read_body(response, target.max_body_bytes))
                except BodyMismatch as exc:
                    raise ScrapeError(f"body mismatch: {exc}") from None
