"""Shared state needs auth everywhere (issue 16, defect 7): real ``srd run`` processes sharing
one journal file. Once an armed replica with auth has used the journal, a replica without
``failover.auth`` refuses to start against it (exit 2), and one already running stops and
refuses every request, so nobody can clear the armed replica's kill switch or steer its
executions through it."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from srd.cli import main
from srd.cli.exitcodes import OK, USAGE
from srd.config.failover import WebhookAuth
from srd.http.auth import Authenticator
from srd.journal import SqliteJournal
from tests.support.daemon import RunningSrd, free_port, running_srd
from tests.support.eventually import eventually
from tests.support.failoverkit import APPROVAL, OPERATORS, as_operator, kit, operators
from tests.support.pgserver import PgServer

TOKEN = "shared-auth-token"
ENV = {"SRD_TEST_TOKEN": TOKEN}


def config(tmp_path: Path, name: str, port: int, *, armed: bool) -> Path:
    journal = tmp_path / "shared.sqlite3"
    auth = "  auth: {bearer_token: {env: SRD_TEST_TOKEN}}\n" if armed else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            state_dir: {tmp_path / name}
            mode: {"armed" if armed else "observe"}
            server:
              listen: 127.0.0.1:{port}
            ha:
              retry_period: 0.2s
            failover:
              journal: sqlite://{journal}
            """)
        + auth
    )
    return path


async def post_kill_switch(srd: RunningSrd, on: bool) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{srd.base_url}/api/killswitch", json={"on": on}) as reply,
    ):
        return reply.status


async def stopped_for_want_of_auth(srd: RunningSrd) -> None:
    """``srd``, without ``failover.auth``, exits 1 saying it needs the armed replica's."""
    await asyncio.wait_for(srd.process.wait(), 15)
    assert srd.process.returncode == 1
    [stopping] = srd.logged("stopping")
    assert "set failover.auth on this replica too" in str(stopping["reason"])


async def test_a_replica_without_auth_refuses_to_start_on_a_journal_an_armed_replica_shares(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with running_srd(
        "run", "--config", str(config(tmp_path, "armed", port, armed=True)), port=port, env=ENV
    ) as armed:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            body = {"on": True, "reason": "incident"}
            url = f"{armed.base_url}/api/killswitch"
            async with http.post(url, json=body, headers=headers) as reply:
                assert reply.status == 200
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "srd.cli",
            "run",
            "--config",
            str(config(tmp_path, "open", free_port(), armed=False)),
            "--log-format",
            "json",
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(other.communicate(), 30)
        finally:
            if other.returncode is None:
                other.kill()
                await other.wait()
        assert other.returncode == 2
        assert b"set failover.auth on this replica too" in stderr
        assert b"Traceback" not in stderr
        # The armed replica's kill switch is still on.
        assert (await armed.get("/api/killswitch"))[0] == 401


async def test_a_replica_without_auth_stops_when_an_armed_replica_starts_on_its_journal(
    tmp_path: Path,
) -> None:
    open_port, armed_port = free_port(), free_port()
    open_config = config(tmp_path, "open", open_port, armed=False)
    async with running_srd("run", "--config", str(open_config), port=open_port) as unarmed:
        assert await post_kill_switch(unarmed, False) == 200  # alone: anyone may
        armed_config = config(tmp_path, "armed", armed_port, armed=True)
        async with running_srd("run", "--config", str(armed_config), port=armed_port, env=ENV):

            async def refused_or_gone() -> bool:
                try:
                    return await post_kill_switch(unarmed, False) == 403
                except aiohttp.ClientError:
                    return unarmed.process.returncode is not None

            await eventually(refused_or_gone, within=10, what="the unarmed replica refuses")
            await stopped_for_want_of_auth(unarmed)


async def test_a_replica_reloaded_into_armed_makes_one_without_auth_stop_at_once(
    tmp_path: Path,
) -> None:
    open_port, armed_port = free_port(), free_port()
    open_config = config(tmp_path, "open", open_port, armed=False)
    later = config(tmp_path, "later", armed_port, armed=True)
    armed_text = later.read_text()
    later.write_text(armed_text.replace("mode: armed", "mode: observe"))  # auth, not armed
    async with (
        running_srd("run", "--config", str(open_config), port=open_port) as unarmed,
        running_srd("run", "--config", str(later), port=armed_port, env=ENV) as reloaded,
    ):
        await asyncio.sleep(1.0)  # five looks at the journal: nothing armed yet
        assert await post_kill_switch(unarmed, False) == 200
        later.write_text(armed_text)
        reloaded.process.send_signal(signal.SIGHUP)
        await eventually(
            lambda: reloaded.logged("config reloaded"), within=10, what="the reload to armed"
        )
        await stopped_for_want_of_auth(unarmed)  # now, not at the armed one's restart


async def test_a_reload_into_armed_waits_for_a_journal_that_can_record_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = config(tmp_path, "later", port, armed=True)
    armed_text = path.read_text()
    path.write_text(armed_text.replace("mode: armed", "mode: observe"))
    journal = tmp_path / "shared.sqlite3"
    async with running_srd("run", "--config", str(path), port=port, env=ENV) as srd:
        path.write_text(armed_text)
        # Another process holds the write lock until srd gives up on it (after 5 s + 1 s).
        holder = sqlite3.connect(journal, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            srd.process.send_signal(signal.SIGHUP)
            await eventually(
                lambda: srd.logged("config reload failed; the running config stays in force"),
                within=30,
                what="the reload refused",
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        [failed] = srd.logged("config reload failed; the running config stays in force")
        assert "locked" in str(failed["errors"])
        assert srd.logged("config reloaded") == []  # still observing
        async with await SqliteJournal.open(journal) as reader:
            assert await reader.auth_required() is None

        srd.process.send_signal(signal.SIGHUP)  # the same config, the journal free again
        await eventually(
            lambda: srd.logged("config reloaded"), within=10, what="the reload to armed"
        )
        async with await SqliteJournal.open(journal) as reader:
            assert await reader.auth_required() is not None


async def test_de_arming_works_while_the_journal_is_down_and_dropping_auth_does_not(
    tmp_path: Path,
) -> None:
    with PgServer.running() as server:
        database = server.create_database()
        port = free_port()
        path = tmp_path / "srd.yaml"
        armed = config(tmp_path, "armed", port, armed=True).read_text()
        armed = armed.replace(f"sqlite://{tmp_path / 'shared.sqlite3'}", database.url)
        armed += "  journal_password: {env: SRD_TEST_JOURNAL_PASSWORD}\n"
        path.write_text(armed)
        env = ENV | {"SRD_TEST_JOURNAL_PASSWORD": database.password}
        async with running_srd("run", "--config", str(path), port=port, env=env) as srd:
            await asyncio.to_thread(server.stop)
            try:
                await reload_in_the_outage(srd, path, armed)
            finally:
                await asyncio.to_thread(server.start)  # the server's own exit stops it


async def reload_in_the_outage(srd: RunningSrd, path: Path, armed: str) -> None:
    """With the journal unreachable: a reload to observe that keeps auth goes through; one
    that also drops auth is refused (nothing can check that no armed replica needs it)."""
    await asyncio.to_thread(path.write_text, armed.replace("mode: armed", "mode: observe"))
    srd.process.send_signal(signal.SIGHUP)
    await eventually(
        lambda: srd.logged("config reloaded"), within=15, what="de-armed in the outage"
    )
    unauthenticated = "".join(
        line for line in armed.splitlines(keepends=True) if "auth:" not in line
    )
    observing = unauthenticated.replace("mode: armed", "mode: observe")
    await asyncio.to_thread(path.write_text, observing)
    srd.process.send_signal(signal.SIGHUP)
    failed = "config reload failed; the running config stays in force"
    await eventually(lambda: srd.logged(failed), within=30, what="dropping auth refused")
    [refused] = srd.logged(failed)
    assert "journal" in str(refused["errors"])
    assert len(srd.logged("config reloaded")) == 1


def test_identity_is_the_name_of_the_token_a_request_carries(tmp_path: Path) -> None:
    auth = Authenticator(operators(tmp_path))
    assert auth.identify(as_operator("ann")) == "ann"
    assert auth.identify({**as_operator("bob"), "X-Srd-User": "ann"}) == "bob"
    assert auth.identify({"Authorization": "Bearer guessed"}) is None
    assert auth.identify({}) is None
    assert auth.header_of("bob") == as_operator("bob")["Authorization"]


def test_named_tokens_must_have_unique_names(tmp_path: Path) -> None:
    secret = tmp_path / "t"
    secret.write_text("x")
    token = {"token": {"file": str(secret)}}
    with pytest.raises(ValidationError, match="must be unique"):
        WebhookAuth.model_validate({"tokens": [{"name": "a", **token}, {"name": "a", **token}]})
    with pytest.raises(ValidationError, match="exactly one of"):
        WebhookAuth.model_validate(
            {"tokens": [{"name": "a", **token}], "bearer_token": token["token"]}
        )


async def test_srd_approve_as_a_named_token_records_that_name_as_the_approver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = operators(tmp_path / "secrets")
    config = tmp_path / "srd.yaml"
    tokens = [
        {"name": name, "token": {"file": str(tmp_path / "secrets" / f"{name}.token")}}
        for name in OPERATORS
    ]
    config.write_text(f"state_dir: {tmp_path}\nfailover:\n  auth: {{tokens: {tokens}}}\n")
    async with kit(tmp_path) as k, k.api(auth) as base:
        runbook = k.runbook(APPROVAL)
        execution = await k.execution(runbook)
        run = asyncio.create_task(k.executor.run(runbook, execution))
        await eventually(k.guards.approvals.pending, within=5, what="an approval asked")
        approval_id = f"{execution.id}-0"
        unknown = ["approve", approval_id, "--config", str(config), "--url", base, "--as", "eve"]
        assert await asyncio.to_thread(main, unknown) == USAGE
        assert "no token named eve" in capsys.readouterr().err
        args = ["approve", approval_id, "--config", str(config), "--url", base, "--as", "bob"]
        assert await asyncio.to_thread(main, args) == OK
        assert f"approved {approval_id} as bob" in capsys.readouterr().out
        assert await run == "succeeded"
        [ended] = [s for s in await k.journal.steps(execution.id) if s.phase == "ended"][:1]
        assert ended.detail == {"by": "bob"}
