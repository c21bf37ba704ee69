"""Durable before acknowledged, under real faults: a SIGKILLed ``srd run`` mid-flood, a
journal locked by a second connection, a journal that fills up. Every alert a client got a
2xx for is in the journal, always; what the journal could not take got 503 (Alertmanager
retries it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from srd.config import Mode
from srd.failover.dispatch import Dispatcher
from srd.failover.intake import IncomingAlert, Intake
from srd.failover.metrics import FailoverMetrics
from srd.http.alertmanager import add_routes
from srd.http.auth import Authenticator
from srd.journal import JOURNAL_FILE, AlertReceipt, SqliteJournal
from tests.support.alertmanager import notification
from tests.support.daemon import RunningSrd, free_port, running_srd
from tests.support.failoverkit import ONE_STEP, Kit, kit
from tests.support.pgserver import PgServer
from tests.support.servers import running
from tests.support.sqlitelock import held_lock

STARTS_AT = "2026-11-29T10:00:00Z"


def body(fingerprints: list[str]) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "Flood", "n": fingerprint},
            "annotations": {},
            "startsAt": STARTS_AT,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": fingerprint,
        }
        for fingerprint in fingerprints
    ]
    return notification(alerts, group_key='{}:{alertname="Flood"}')


@dataclass
class Flood:
    acked: set[str] = field(default_factory=set)
    answers: Counter[int] = field(default_factory=Counter)
    failed: int = 0
    """Requests that got no answer (the connection broke: srd was killed)."""


async def flood(url: str, stop: asyncio.Event, result: Flood, workers: int = 16) -> None:
    """POST distinct alerts (two per request) until ``stop``, as fast as srd answers."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                sent = [f"w{w}-{n}-a", f"w{w}-{n}-b"]
                n += 1
                try:
                    async with session.post(url, data=body(sent)) as reply:
                        await reply.read()
                        result.answers[reply.status] += 1
                        if 200 <= reply.status < 300:
                            result.acked.update(sent)
                except (aiohttp.ClientError, TimeoutError):
                    result.failed += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker(w) for w in range(workers)))


def journaled(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {row[0] for row in db.execute("SELECT fingerprint FROM alerts_received")}


def undecided(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        query = (
            "SELECT count(*) FROM alerts_received AS r WHERE NOT EXISTS"
            " (SELECT 1 FROM alerts_decided AS d WHERE d.receipt = r.seq)"
        )
        count: int = db.execute(query).fetchone()[0]
        return count


def config(directory: Path, port: int) -> Path:
    path = directory / "srd.yaml"
    settings = {
        "state_dir": str(directory / "state"),
        "server": {"listen": f"127.0.0.1:{port}"},
        "failover": {"queue_size": 5000},
    }
    path.write_text(json.dumps(settings))
    return path


@asynccontextmanager
async def srd_run(directory: Path) -> AsyncIterator[RunningSrd]:
    port = free_port()
    async with running_srd("run", "--config", str(config(directory, port)), port=port) as srd:
        yield srd


@pytest.mark.parametrize("kill_after", [0.4, 1.3, 2.2])
async def test_a_flood_with_sigkill_mid_way_acknowledges_nothing_the_journal_does_not_hold(
    tmp_path: Path, kill_after: float
) -> None:
    path = tmp_path / "state" / JOURNAL_FILE
    result, stop = Flood(), asyncio.Event()
    async with srd_run(tmp_path) as srd:
        flooding = asyncio.create_task(flood(f"{srd.base_url}/alertmanager", stop, result))
        await asyncio.sleep(kill_after)
        srd.process.kill()
        await srd.process.wait()
        stop.set()
        await flooding
    held = journaled(path)
    assert result.acked, result
    assert result.acked <= held, f"{len(result.acked - held)} acknowledged alerts lost"
    print(
        f"SIGKILL after {kill_after} s of flood: {len(result.acked)} acknowledged,"
        f" {len(held)} journaled"
    )

    # The next start decides what was received and not yet decided, exactly once.
    async with srd_run(tmp_path) as srd:
        for _ in range(100):
            if undecided(path) == 0:
                break
            await asyncio.sleep(0.1)
        assert undecided(path) == 0
        assert not srd.logged("(not json)")


async def test_a_journal_locked_for_4s_mid_flood_gets_503_and_readyz_says_so_and_loses_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / JOURNAL_FILE
    result, stop = Flood(), asyncio.Event()
    async with srd_run(tmp_path) as srd:
        flooding = asyncio.create_task(flood(f"{srd.base_url}/alertmanager", stop, result))
        await asyncio.sleep(1.0)
        readiness: list[tuple[int, str]] = []
        with held_lock(path, 4.0):
            for _ in range(12):
                await asyncio.sleep(0.3)
                readiness.append(await srd.get("/readyz"))
            during = Counter(result.answers)
        await asyncio.sleep(2.0)
        stop.set()
        await flooding
        held = journaled(path)
        assert result.acked <= held, f"{len(result.acked - held)} acknowledged alerts lost"
        assert during[503] > 0
        assert any(status == 503 and "(locked)" in text for status, text in readiness)
        locked = {"op": "record_alerts", "kind": "locked"}
        assert (await srd.metric("srd_journal_errors_total", locked) or 0) > 0
        rejected = {"reason": "journal_unavailable"}
        assert await srd.metric("srd_webhook_rejected_total", rejected) == result.answers[503]
        # Writes go through again: ready, and alerts are acknowledged once more.
        assert (await srd.get("/readyz"))[0] == 200
        assert result.answers[200] > during[200]
        assert not srd.logged("(not json)")
    print(
        f"journal locked 4 s mid-flood: {len(result.acked)} acknowledged, {len(held)} journaled,"
        f" {result.answers[503]} answered 503"
    )


async def test_a_journal_that_fills_up_mid_flood_gets_503_until_space_is_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        intake = Intake(5000)
        result, stop = Flood(), asyncio.Event()
        async with pipeline(k, intake) as url:
            flooding = asyncio.create_task(flood(url, stop, result))
            await asyncio.sleep(1.0)
            pages = (await k.journal._read("PRAGMA page_count", ()))[0][0]
            await on_srds_connection(k, f"PRAGMA max_page_count = {pages}")
            await asyncio.sleep(1.5)
            reasons = k.journal.health.reasons()
            during = Counter(result.answers)
            await on_srds_connection(k, "PRAGMA max_page_count = 1073741823")
            await asyncio.sleep(1.0)
            stop.set()
            await flooding
        held = {fingerprint for (fingerprint,) in await k.journal._read(_ALL, ())}
        assert result.acked <= held, f"{len(result.acked - held)} acknowledged alerts lost"
        assert during[503] > 0
        assert reasons and "(full)" in reasons[0]
        assert k.journal.health.reasons() == []
        assert result.answers[200] > during[200]
        full = {"reason": "journal_unavailable"}
        assert k.metrics.registry.get_sample_value("srd_webhook_rejected_total", full)
    print(
        f"journal full mid-flood: {len(result.acked)} acknowledged, {len(held)} journaled,"
        f" {result.answers[503]} answered 503"
    )


_ALL = "SELECT fingerprint FROM alerts_received"


async def on_srds_connection(k: Kit, statement: str) -> None:
    """``max_page_count`` holds for the connection that sets it: srd's own."""
    journal: Any = k.journal
    await journal._call("test", lambda: journal._connection().execute(statement).fetchall())


@asynccontextmanager
async def pipeline(k: Kit, intake: Intake) -> AsyncIterator[str]:
    """The webhook and the dispatcher (group commit, decisions) on the kit's journal."""
    dispatcher = k.dispatcher(intake, [], Mode.OBSERVE)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    app = web.Application(client_max_size=1024 * 1024)
    add_routes(app, intake, Authenticator(None), k.metrics, 1024 * 1024)
    try:
        async with running(app) as server:
            yield f"{server.url}/alertmanager"
    finally:
        stop.set()
        await task


@pytest.mark.parametrize("alerts", [1500])
async def test_a_group_larger_than_the_queue_gets_413_naming_queue_size_never_503(
    tmp_path: Path, alerts: int
) -> None:
    async with kit(tmp_path) as k, pipeline(k, Intake(1000)) as url:
        group = body([f"g{i}" for i in range(alerts)])
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=group) as reply:
                assert reply.status == 413
                answer = await reply.json()
            assert "raise queue_size to at least 1500" in answer["error"]
            async with session.post(url, data=body([f"g{i}" for i in range(1000)])) as reply:
                assert reply.status == 200  # a group as large as the queue fits when it is empty
        labels = {"reason": "too_large"}
        assert k.metrics.registry.get_sample_value("srd_webhook_rejected_total", labels) == 1


async def test_the_intake_is_bounded_by_bytes_as_well_as_by_count(tmp_path: Path) -> None:
    """Large labels fill the byte budget long before the count: the rest get 503 until the
    queued alerts are decided, and memory stays within the budget."""
    intake = Intake(1000, max_bytes=80 * 1024)
    journal = await SqliteJournal.open(tmp_path / JOURNAL_FILE)
    commits = asyncio.create_task(intake.commit(journal))
    app = web.Application(client_max_size=1024 * 1024)
    add_routes(app, intake, Authenticator(None), FailoverMetrics(CollectorRegistry()), 60 * 1024)
    try:
        async with running(app) as server, aiohttp.ClientSession() as session:
            url = f"{server.url}/alertmanager"
            statuses = []
            for n in range(4):  # nothing decides: the queue keeps what it acknowledged
                large = json.loads(body([f"b{n}-{i}" for i in range(10)]))
                for alert in large["alerts"]:
                    alert["labels"]["big"] = "x" * 2000
                async with session.post(url, json=large) as reply:
                    statuses.append(reply.status)
            assert statuses == [200, 200, 200, 503]
            assert intake.alerts == 30 and intake.bytes <= 80 * 1024
    finally:
        intake.close()
        await commits
        await journal.close()


async def test_a_journal_damaged_mid_file_gets_503_and_readyz_says_corrupt(
    tmp_path: Path,
) -> None:
    """The header is intact, so srd starts; the damage is found at the first write, which
    fails as ``corrupt``: nothing is acknowledged and /readyz says why."""
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / JOURNAL_FILE
    journal = await SqliteJournal.open(path)
    await journal.record_alerts(
        [AlertReceipt(f"old{i}", STARTS_AT, "firing", {}) for i in range(9)]
    )
    await journal.close()
    damage_receipts(path)
    async with srd_run(tmp_path) as srd, aiohttp.ClientSession() as session:
        async with session.post(f"{srd.base_url}/alertmanager", data=body(["new"])) as reply:
            assert reply.status == 503
            assert reply.headers["Retry-After"] == "10"
        status, text = await srd.get("/readyz")
        assert status == 503
        assert "journal cannot be written (corrupt)" in text
        corrupt = {"op": "record_alerts", "kind": "corrupt"}
        assert await srd.metric("srd_journal_errors_total", corrupt) == 1
        assert not srd.logged("(not json)")


def damage_receipts(path: Path) -> None:
    """Garbage over the root pages of the receipts' table and indexes (as a bad sector
    would): the schema and everything srd reads to start stay intact."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        roots = [
            row[0]
            for row in db.execute(
                "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'alerts_received'"
                " AND rootpage > 0"
            )
        ]
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for root in roots:
        offset = (root - 1) * page
        data[offset : offset + page] = b"\xa5" * page
    path.write_bytes(bytes(data))


async def test_after_a_503_the_alert_is_kept_and_readiness_returns_with_the_journal_unasked(
    tmp_path: Path,
) -> None:
    """A pod that is not ready gets no traffic: the journal must be tried again without
    waiting for a request. What was answered 503 is kept and committed once the journal
    takes it, so Alertmanager's resend is a duplicate and the alert is decided once."""
    async with kit(tmp_path) as k, pipeline(k, Intake(100)) as url:
        await k.journal.record_alerts([])  # the schema's pages, before the limit
        pages = (await k.journal._read("PRAGMA page_count", ()))[0][0]
        await on_srds_connection(k, f"PRAGMA max_page_count = {pages}")
        big = json.loads(body(["kept"]))
        big["alerts"][0]["annotations"] = {"description": "x" * 20_000}
        async with aiohttp.ClientSession() as session, session.post(url, json=big) as reply:
            assert reply.status == 503
        assert k.journal.health.reasons()
        await on_srds_connection(k, "PRAGMA max_page_count = 1073741823")
        async with asyncio.timeout(5):
            while k.journal.health.reasons() or await k.journal.undecided():
                await asyncio.sleep(0.05)
        assert [s for s, _ in await k.journal.receipts("kept", "2026-11-29T10:00:00.000Z")] == [
            "firing"
        ]


async def test_an_alert_received_but_not_decided_before_a_crash_is_decided_once_at_start(
    tmp_path: Path,
) -> None:
    """The crash came between the receipt's commit (the 2xx was sent) and the decision: the
    next start decides it, and a start after that does not decide it again."""
    async with kit(tmp_path) as k:
        runbook = k.runbook(ONE_STEP)
        down = IncomingAlert("alertmanager", "firing", "f1", STARTS_AT, {"alertname": "Down"})
        receipt = AlertReceipt(down.fingerprint, down.starts_at, down.status, down.to_dict())
        assert await k.journal.record_alerts([receipt]) == [True]
        for _ in range(2):  # two starts
            dispatcher = k.dispatcher(Intake(10), [runbook], Mode.ARMED)
            stop = asyncio.Event()
            task = asyncio.create_task(dispatcher.run(stop))
            async with asyncio.timeout(5):
                while await k.journal.undecided() or {
                    e.state for e in await k.journal.executions()
                } != {"succeeded"}:
                    await asyncio.sleep(0.02)
            stop.set()
            await task
        [execution] = await k.journal.executions()
        assert execution.alert["fingerprint"] == "f1"
        assert k.actuator.calls == [("apply", "a", 1)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_memory_stays_bounded_with_the_journal_locked_and_large_labels(
    tmp_path: Path,
) -> None:
    """The journal locked for 12 s while 16 clients post 800 KB groups of large-label
    alerts: the intake holds at most queue_bytes of them, the rest get 503."""
    path = tmp_path / "state" / JOURNAL_FILE
    async with srd_run(tmp_path) as srd:
        before, peak = rss_mb(srd.process.pid), 0.0
        answers: Counter[int] = Counter()
        with held_lock(path, 12.0):
            deadline = asyncio.get_running_loop().time() + 10
            async with aiohttp.ClientSession() as session:

                async def worker(w: int) -> None:
                    n = 0
                    while asyncio.get_running_loop().time() < deadline:
                        group = json.loads(body([f"w{w}-{n}-{i}" for i in range(400)]))
                        for alert in group["alerts"]:
                            alert["labels"]["big"] = "x" * 2000
                        n += 1
                        async with session.post(f"{srd.base_url}/alertmanager", json=group) as r:
                            answers[r.status] += 1

                async def watch() -> None:
                    nonlocal peak
                    while asyncio.get_running_loop().time() < deadline:
                        peak = max(peak, rss_mb(srd.process.pid))
                        await asyncio.sleep(0.2)

                await asyncio.gather(watch(), *(worker(w) for w in range(16)))
        print(f"RSS {before:.0f} MB before, {peak:.0f} MB at most; answers {dict(answers)}")
        assert set(answers) == {503}
        assert peak - before < 200, (before, peak)


class CrashOnce:
    """The kit's journal, whose first ``undecided`` read raises a bug (not a JournalError):
    the dispatcher task crashes, as the supervisor then restarts it."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self.crashed = False

    async def undecided(self, limit: int = 1000) -> Any:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("a bug")
        return await self._journal.undecided(limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


async def test_after_the_dispatcher_crashes_its_next_run_takes_alerts_again(
    tmp_path: Path,
) -> None:
    async with kit(tmp_path) as k:
        intake = Intake(10)
        journal = CrashOnce(k.journal)
        app = web.Application()
        add_routes(app, intake, Authenticator(None), k.metrics, 64 * 1024)

        def dispatcher() -> Dispatcher:
            return k.dispatcher(intake, [], Mode.OBSERVE, journal)

        with pytest.raises(RuntimeError, match="a bug"):
            await dispatcher().run(asyncio.Event())
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher().run(stop))
        try:
            async with running(app) as server, aiohttp.ClientSession() as http:
                url = f"{server.url}/alertmanager"
                async with http.post(url, data=body(["after-crash"])) as reply:
                    assert reply.status == 200
        finally:
            stop.set()
            await task


async def test_a_stopped_postgresql_journal_gets_503_and_readyz_says_so_until_it_is_back(
    tmp_path: Path,
) -> None:
    """The shared journal down under a real ``srd run``: the webhook answers 503, /readyz
    names the outage; once PostgreSQL is back, srd is ready again without being asked and
    what it answered 503 for is journaled (a resend is then a duplicate)."""
    with PgServer.running() as server:
        database = server.create_database()
        port = free_port()
        config = tmp_path / "srd.yaml"
        settings = {
            "state_dir": str(tmp_path / "state"),
            "server": {"listen": f"127.0.0.1:{port}"},
            "failover": {
                "journal": database.url,
                "journal_password": {"env": "SRD_TEST_JOURNAL_PASSWORD"},
            },
        }
        config.write_text(json.dumps(settings))
        env = {"SRD_TEST_JOURNAL_PASSWORD": database.password}
        async with (
            running_srd("run", "--config", str(config), port=port, env=env) as srd,
            aiohttp.ClientSession() as session,
        ):
            url = f"{srd.base_url}/alertmanager"
            async with session.post(url, data=body(["before"])) as reply:
                assert reply.status == 200
            await asyncio.to_thread(server.stop)
            async with session.post(url, data=body(["during"])) as reply:
                assert reply.status == 503
                assert reply.headers["Retry-After"] == "10"
            # The failed write shows once the pool gives up on connecting (5 s).
            async with asyncio.timeout(20):
                while (readiness := await srd.get("/readyz"))[0] == 200:
                    await asyncio.sleep(0.2)
            assert readiness[0] == 503
            assert "journal cannot be written (connection)" in readiness[1]
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(30):
                while (await srd.get("/readyz"))[0] != 200:
                    await asyncio.sleep(0.2)
            with server.connect(database) as conn:
                rows = conn.execute("SELECT fingerprint FROM alerts_received").fetchall()
            assert {fingerprint for (fingerprint,) in rows} == {"before", "during"}
            async with session.post(url, data=body(["during"])) as reply:
                assert reply.status == 200  # Alertmanager's resend: a duplicate
            assert not srd.logged("(not json)")
