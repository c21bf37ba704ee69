"""Shared fixtures. Every test builds its own registry; an async test that leaves tasks
running fails; no test reaches real AWS credentials or the EC2 metadata address."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
from moto.server import ThreadedMotoServer

from tests.support.pgserver import PgDatabase, PgServer


@pytest_asyncio.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftover = [
        task for task in asyncio.all_tasks() - before if task is not current and not task.done()
    ]
    for task in leftover:
        task.cancel()
    assert not leftover, f"test left tasks running: {[t.get_name() for t in leftover]}"


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, closed after the test."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(autouse=True)
def dummy_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The standard credential chain reads these (and so does a srd subprocess a test starts);
    # a real profile on the host must not leak in.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real moto server (S3, Route 53, ELBv2, EC2) on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the session (tests/support/pgserver.py); fails without one."""
    with PgServer.running() as server:
        yield server


@pytest.fixture
def pg_database(pg_server: PgServer) -> PgDatabase:
    """A fresh, empty database of its own for each test."""
    return pg_server.create_database()
