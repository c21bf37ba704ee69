"""``srd runbooks``, ``srd execute`` and ``srd approve`` as an operator runs them: real
processes against a real srd acting on the fake Kubernetes API."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from srd.simulate.sandbox.kubernetes import FakeKubernetes, replicas, seed_platform
from tests.support.daemon import RunningSrd, free_port, running_srd, srd_config
from tests.support.eventually import eventually

TOKEN = "execute-cli-token"
RUNBOOKS = """\
runbooks:
  - name: scale_${svc}_backup
    description: Bring ${svc}'s backup up.
    match:
      - alertname="ServiceDown"
      - service="${svc}"
    budget_gate: []
    for_each: [{svc: web}]
    steps:
      - name: ask
        approval: bring the backup up
        timeout: 1m
      - name: scale_backup_up
        action:
          actuator: kubernetes
          action: scale_deployment
          params: {namespace: vilokanam-dr, name: "${svc}-backup", replicas: 3}
        timeout: 30s
  - name: scale_web_backup_now
    match: [alertname="ServiceDown", service="web"]
    steps:
      - name: scale_backup_up
        action:
          actuator: kubernetes
          action: scale_deployment
          params: {namespace: vilokanam-dr, name: web-backup, replicas: 3}
        timeout: 30s
  - name: scale_web_backup_to
    kind: change
    description: Scale web's backup to ${replicas}.
    inputs: {replicas: "2"}
    steps:
      - name: scale_backup
        action:
          actuator: kubernetes
          action: scale_deployment
          params: {namespace: vilokanam-dr, name: web-backup, replicas: "${replicas}"}
        timeout: 30s
"""


def write_config(tmp_path: Path, kubernetes_url: str, port: int) -> Path:
    (tmp_path / "runbooks.yaml").write_text(RUNBOOKS)
    auth = {"bearer_token": {"env": "SRD_CLI_TEST_TOKEN"}}
    failover = {"runbooks": ["runbooks.yaml"], "cooldown": "0s", "auth": auth}
    actuators = {"kubernetes": {"host": kubernetes_url}}
    return srd_config(tmp_path, port, failover=failover, actuators=actuators)


async def srd_cli(
    *args: str, env: dict[str, str] | None = None, tty: bool = False
) -> tuple[int, str, str]:
    """Run ``srd ARGS`` without a local config (``$SRD_CONFIG`` points nowhere): exit code,
    stdout, stderr. ``tty``: stdout is a terminal."""
    environment = {**os.environ, "SRD_CONFIG": "/nonexistent/srd.yaml", **(env or {})}
    if "SRD_TOKEN" not in (env or {}):
        environment.pop("SRD_TOKEN", None)
    if not tty:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "srd.cli",
            *args,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        return int(process.returncode or 0), out.decode(), err.decode()
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "srd.cli",
        *args,
        env=environment,
        stdout=follower,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(follower)
    reading = asyncio.create_task(asyncio.to_thread(_read_all, leader))
    try:
        assert process.stderr is not None
        errors = await asyncio.wait_for(process.stderr.read(), 60)
        code = await asyncio.wait_for(process.wait(), 60)
        shown = await asyncio.wait_for(reading, 10)
    finally:
        os.close(leader)
    return code, shown.replace("\r\n", "\n"), errors.decode()


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.fixture
async def kubernetes() -> AsyncIterator[tuple[FakeKubernetes, str]]:
    fake = FakeKubernetes()
    seed_platform(fake)
    async with fake.serving() as url:
        yield fake, url


@pytest.fixture
async def srd(
    tmp_path: Path, kubernetes: tuple[FakeKubernetes, str]
) -> AsyncIterator[tuple[RunningSrd, Path]]:
    port = free_port()
    config = write_config(tmp_path, kubernetes[1], port)
    env = {"SRD_CLI_TEST_TOKEN": TOKEN}
    async with running_srd("run", "--config", str(config), port=port, env=env) as running:
        yield running, config


async def test_runbooks_lists_what_a_config_loads_with_steps_actuators_and_gates(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1", free_port())
    env = {"SRD_CLI_TEST_TOKEN": TOKEN}
    code, out, err = await srd_cli("runbooks", "--config", str(config), "--json", env=env)
    assert code == 0, err
    listed = {runbook["name"]: runbook for runbook in json.loads(out)}
    assert sorted(listed) == ["scale_web_backup", "scale_web_backup_now", "scale_web_backup_to"]
    assert listed["scale_web_backup_to"]["inputs"] == {"replicas": "2"}
    assert listed["scale_web_backup_to"]["description"] == "Scale web's backup to ${replicas}."
    gated = listed["scale_web_backup"]
    assert gated["description"] == "Bring web's backup up."
    assert gated["match"] == ['alertname="ServiceDown"', 'service="web"']
    assert [(s["name"], s["kind"]) for s in gated["steps"]] == [
        ("ask", "approval"),
        ("scale_backup_up", "action"),
    ]
    assert gated["steps"][1]["action"] == "kubernetes.scale_deployment"
    assert gated["actuators"] == ["kubernetes"]
    assert gated["gates"] == {"error_budget": [], "approval": ["ask"]}

    code, out, _ = await srd_cli("runbooks", "--config", str(config), env=env)
    assert code == 0
    header, first, _, change = out.splitlines()
    assert header.split() == ["NAME", "STEPS", "ACTUATORS", "GATES", "INPUTS", "MATCH"]
    assert first.split()[:5] == ["scale_web_backup", "2", "kubernetes", "approval:ask", "-"]
    assert change.split() == ["scale_web_backup_to", "1", "kubernetes", "-", "replicas"]


async def test_execute_with_url_and_token_starts_a_runbook_that_the_journal_says_who_started(
    srd: tuple[RunningSrd, Path], kubernetes: tuple[FakeKubernetes, str]
) -> None:
    running, config = srd
    env = {"SRD_TOKEN": TOKEN}
    code, out, err = await srd_cli(
        "execute",
        "scale_web_backup_now",
        "--url",
        running.base_url,
        "--var",
        "ticket=OPS-1",
        env=env,
    )
    assert code == 0, err
    execution_id = out.strip()  # not a terminal: the id alone, for scripts

    async def scaled() -> bool:
        return replicas(kubernetes[0], "vilokanam-dr", "web-backup") == 3

    await eventually(scaled, within=20, what="the backup scaled up")
    code, out, err = await srd_cli(
        "journal", execution_id, "--config", str(config), env={"SRD_CLI_TEST_TOKEN": TOKEN}
    )
    assert code == 0, err
    assert "started by   bearer_token" in out.splitlines()
    alert = "alert        ServiceDown alertname=ServiceDown service=web ticket=OPS-1"
    assert alert in out.splitlines()

    code, _, err = await srd_cli(
        "execute", "scale_web_backup_now", "--url", running.base_url, env={"SRD_TOKEN": "wrong"}
    )
    assert (code, err.strip()) == (1, "srd execute: authentication required")
    code, _, err = await srd_cli("execute", "nope", "--url", running.base_url, env=env)
    assert code == 1 and "no runbook named 'nope'" in err


async def test_execute_sets_a_changes_input_and_refuses_one_its_step_would_refuse(
    srd: tuple[RunningSrd, Path], kubernetes: tuple[FakeKubernetes, str]
) -> None:
    running, _ = srd
    fake, _ = kubernetes
    before = replicas(fake, "vilokanam-dr", "web-backup")
    start = ("execute", "scale_web_backup_to", "--url", running.base_url)
    code, _, err = await srd_cli(*start, "--var", "replicas=lots", env={"SRD_TOKEN": TOKEN})
    assert code == 1
    assert "scale_web_backup_to: steps[0].action: kubernetes.scale_deployment" in err
    assert "replicas" in err
    assert running.logged("execution started by hand") == []  # refused before it was journaled

    code, _, err = await srd_cli(*start, "--var", "replicas=5", env={"SRD_TOKEN": TOKEN})
    assert code == 0, err
    assert "srd execute: scale_web_backup_to inputs: replicas=5" in err.splitlines()
    await eventually(
        lambda: replicas(fake, "vilokanam-dr", "web-backup") == 5,
        within=20,
        what=f"web-backup scaled from {before} to the input's 5",
    )


async def test_execute_on_a_terminal_follows_the_execution_through_its_approval(
    srd: tuple[RunningSrd, Path], kubernetes: tuple[FakeKubernetes, str], tmp_path: Path
) -> None:
    running, _ = srd
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    execute = asyncio.create_task(
        srd_cli(
            "execute",
            "scale_web_backup",
            "--url",
            running.base_url,
            "--token-file",
            str(token_file),
            tty=True,
        )
    )

    async def pending() -> list[str]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{running.base_url}/api/approvals", headers=headers) as reply,
        ):
            return list(await reply.json())  # approval id → what it asks

    [approval_id] = await eventually(pending, within=20, what="the runbook waits for approval")
    # Granted by URL and token file, with no local config.
    code, out, err = await srd_cli(
        "approve", approval_id, "--url", running.base_url, "--token-file", str(token_file)
    )
    assert (code, out.strip()) == (0, f"approved {approval_id} as bearer_token"), err
    code, out, err = await execute
    assert code == 0, err
    lines = out.splitlines()
    execution_id = lines[0]
    assert f"execution    {execution_id}" in lines
    assert "started by   bearer_token" in lines
    events = [line.split()[3:6] for line in lines if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert ["step", "1", "scale_backup_up"] in events
    assert events[-1][:2] == ["state", "succeeded"]
    assert replicas(kubernetes[0], "vilokanam-dr", "web-backup") == 3


async def test_approve_and_execute_by_url_need_no_config_and_say_when_srd_is_unreachable() -> None:
    code, _, err = await srd_cli("approve", "123", "--url", "http://127.0.0.1:1")
    assert code == 1
    assert "srd approve: srd unreachable at http://127.0.0.1:1" in err
    code, _, err = await srd_cli("execute", "x", "--url", "http://127.0.0.1:1")
    assert code == 1
    assert "srd execute: srd unreachable at http://127.0.0.1:1" in err


async def test_execute_refuses_a_malformed_var_and_an_unreadable_token_file(
    tmp_path: Path,
) -> None:
    code, _, err = await srd_cli("execute", "x", "--url", "http://127.0.0.1:1", "--var", "a")
    assert (code, err.strip()) == (2, "srd execute: --var 'a': write NAME=VALUE")
    missing = tmp_path / "missing"
    code, _, err = await srd_cli(
        "approve", "1", "--url", "http://127.0.0.1:1", "--token-file", str(missing)
    )
    assert code == 2
    assert "srd approve: --token-file: cannot read: No such file or directory" in err
