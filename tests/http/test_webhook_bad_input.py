"""Every bad webhook input gets a clear 4xx, counted and logged as one JSON line: never a
500 (Alertmanager would retry it forever) and never a plain-text traceback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.alertmanager import notification
from tests.support.daemon import RunningSrd, free_port, running_srd

TOKEN = "s3cret-token"


def alert(**changes: str) -> dict[str, object]:
    return {
        "status": "firing",
        "labels": {"alertname": "Down"},
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "f1",
        **changes,
    }


def payload(*alerts: dict[str, object]) -> bytes:
    return notification(alerts)


async def raw_post(port: int, body: bytes, authorization: bytes) -> tuple[int, bytes]:
    """A POST written byte by byte, so a header can carry bytes no HTTP library would send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        b"POST /alertmanager HTTP/1.1\r\nHost: srd\r\nContent-Type: application/json\r\n"
        b"Authorization: " + authorization + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    writer.write(head + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


DEEP = b'{"version": "4", "alerts": ' + b"[" * 1000 + b"]" * 1000 + b"}"
OVERFLOW = payload(alert(startsAt="9999-12-31T23:59:59-01:00"))
BEARER = f"Bearer {TOKEN}".encode()


@pytest.fixture
async def srd(tmp_path: Path) -> RunningSrd:  # type: ignore[misc]
    port = free_port()
    config = tmp_path / "srd.yaml"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(tmp_path / "state"),
                "server": {"listen": f"127.0.0.1:{port}"},
                "failover": {"auth": {"bearer_token": {"env": "SRD_TEST_TOKEN"}}},
            }
        )
    )
    env = {"SRD_TEST_TOKEN": TOKEN}
    async with running_srd("run", "--config", str(config), port=port, env=env) as running:
        yield running


@pytest.mark.parametrize(
    ("body", "authorization", "status", "reason", "says"),
    [
        (DEEP, BEARER, 400, "malformed", "nested deeper than 128 levels"),
        (OVERFLOW, BEARER, 400, "malformed", "out of range"),
        (payload(alert()), b"Bearer \xff\xfe\xc3(", 401, "unauthorized", "authentication"),
        (payload(alert()), b"Basic \xff\xfe", 401, "unauthorized", "authentication"),
    ],
    ids=["json-nested-1000-deep", "startsAt-overflows-utc", "bearer-not-utf8", "basic-not-utf8"],
)
async def test_a_bad_post_gets_a_clear_4xx_counted_and_logged_as_json(
    srd: RunningSrd, body: bytes, authorization: bytes, status: int, reason: str, says: str
) -> None:
    port = int(srd.base_url.rsplit(":", 1)[1])
    answered, text = await raw_post(port, body, authorization)
    assert answered == status
    assert says in json.loads(text)["error"]
    assert await srd.metric("srd_webhook_rejected_total", {"reason": reason}) == 1
    # srd is still fine, and the log is JSON lines only, with no traceback in any of them.
    assert (await raw_post(port, payload(alert()), BEARER))[0] == 200
    await asyncio.sleep(0.2)
    assert not srd.logged("(not json)")
    assert not [line for line in srd.log_lines if "exception" in line]
