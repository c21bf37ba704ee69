"""Failover end to end: the real ``srd`` process, armed, with the shipped platform runbook,
acting through its Kubernetes and AWS actuators on the fake Kubernetes API and a real moto
server — fed by an Alertmanager webhook payload, and by a real Alertmanager."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from srd.simulate.sandbox.kubernetes import FakeKubernetes, replicas
from tests.support.daemon import free_port, running_srd
from tests.support.eventually import eventually
from tests.support.failover_e2e import (
    DR_ADDRESS,
    PRIMARY_ADDRESS,
    PRIMARY_TARGET,
    SHIPPED_STEPS,
    TOKEN,
    Platform,
    api_get,
    assert_dr_state,
    executions,
    payload,
    post,
    serving_platform,
    wait_execution,
    write_config,
)


@pytest.fixture
async def platform(moto_url: str) -> AsyncIterator[Platform]:
    async with serving_platform(moto_url, FakeKubernetes()) as served:
        yield served


async def test_an_alertmanager_payload_runs_the_platform_failover_once_and_records_resolved(
    tmp_path: Path, platform: Platform
) -> None:
    port = free_port()
    config = write_config(tmp_path, platform, port)
    env = {"SRD_E2E_TOKEN": TOKEN}
    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        assert await post(srd, payload(), token=None) == 401
        assert await post(srd, payload(), token="wrong") == 401
        assert await post(srd, {"version": "4"}) == 400
        assert await executions(srd) == []
        # Armed: the journal is read with the webhook's credentials; probes stay open.
        assert (await api_get(srd, "/api/executions", token=None))[0] == 401
        assert (await srd.get("/healthz"))[0] == 200

        assert await post(srd, payload()) == 200
        done = await wait_execution(srd, "succeeded")
        await assert_dr_state(platform)
        status, text = await api_get(srd, f"/api/executions/{done['id']}")
        assert status == 200
        steps = json.loads(text)["steps"]
        ended = [s["name"] for s in steps if s["phase"] == "ended" and s["result"] == "ok"]
        assert ended == SHIPPED_STEPS

        # Alertmanager re-sends the group every repeat_interval: nothing more happens.
        calls = len(platform.proxy.calls)
        assert await post(srd, payload()) == 200
        assert await post(srd, payload("resolved")) == 200
        await asyncio.sleep(2)
        assert len(await executions(srd)) == 1
        assert len(platform.proxy.calls) == calls
        await assert_dr_state(platform)

        srd.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(srd.process.wait(), timeout=15) == 0

    # The journal outlives the process: `srd journal` shows the execution and its steps.
    shown = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("srd")),
        "journal",
        "--config",
        str(config),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(shown.communicate(), timeout=60)
    assert shown.returncode == 0, err.decode()
    assert "platform_failover_web" in out.decode()
    assert "succeeded" in out.decode()


async def test_a_runbook_killed_mid_step_resumes_on_restart_without_repeating_a_done_step(
    tmp_path: Path, platform: Platform
) -> None:
    # DNS stays PENDING long enough to kill srd while it waits for INSYNC.
    platform.proxy.dns_pending = 8
    port = free_port()
    config = write_config(tmp_path, platform, port)
    env = {"SRD_E2E_TOKEN": TOKEN}
    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        assert await post(srd, payload()) == 200
        await eventually(
            lambda: "ChangeResourceRecordSets" in platform.proxy.calls,
            within=30,
            what="srd changed DNS",
        )
        srd.process.send_signal(signal.SIGKILL)
        await srd.process.wait()

    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        await wait_execution(srd, "succeeded", timeout=90)
    await assert_dr_state(platform)
    calls = platform.proxy.calls
    assert calls.count("ChangeResourceRecordSets") == 1, calls
    assert calls.count("RegisterTargets") == 1, calls


def _alertmanager() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus-alertmanager is required in CI (make test installs it)")
        pytest.skip("prometheus-alertmanager is not installed")
    return found


NO_RECEIVER = """\
route: {receiver: nobody}
receivers: [{name: nobody}]
"""


@asynccontextmanager
async def running_alertmanager(tmp_path: Path, config: str, port: int) -> AsyncIterator[str]:
    """A real Alertmanager on loopback ``port`` with ``config``; yields its base URL (it may
    still be starting: callers retry their first request)."""
    binary = _alertmanager()
    cluster_port = free_port()
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(config)
    alertmanager = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={am_config}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--cluster.listen-address=127.0.0.1:{cluster_port}",
        f"--cluster.advertise-address=127.0.0.1:{cluster_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        alertmanager.terminate()
        try:
            await asyncio.wait_for(alertmanager.wait(), timeout=10)
        except TimeoutError:
            alertmanager.kill()
            await alertmanager.wait()


async def alertmanager_api(
    base_url: str, method: str, body: Any = None, timeout: float = 20
) -> Any:
    """Call ``/api/v2/alerts``, waiting for a starting Alertmanager to answer 200."""
    async with aiohttp.ClientSession() as session:

        async def answer() -> tuple[Any] | None:
            # A tuple: an empty list of alerts is still an answer.
            try:
                async with session.request(method, f"{base_url}/api/v2/alerts", json=body) as reply:
                    if reply.status == 200:
                        return (await reply.json(content_type=None),)
            except aiohttp.ClientError:
                pass
            return None

        what = f"Alertmanager at {base_url} answers {method}"
        (reply,) = await eventually(answer, within=timeout, what=what, every=0.2)
        return reply


async def test_a_real_alertmanager_with_bearer_auth_triggers_the_failover(
    tmp_path: Path, platform: Platform
) -> None:
    port, am_port = free_port(), free_port()
    config = write_config(tmp_path, platform, port)
    (tmp_path / "token").write_text(TOKEN)
    am_config = textwrap.dedent(f"""\
        route:
          receiver: srd
          group_by: [alertname]
          group_wait: 0s
          group_interval: 1s
          repeat_interval: 1h
        receivers:
          - name: srd
            webhook_configs:
              - url: http://127.0.0.1:{port}/alertmanager
                send_resolved: true
                http_config:
                  authorization: {{credentials_file: {tmp_path / "token"}}}
        """)
    async with running_alertmanager(tmp_path, am_config, am_port) as alertmanager:
        env = {"SRD_E2E_TOKEN": TOKEN}
        async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
            alert = [{"labels": {"alertname": "ServiceDown", "service": "web"}}]
            await alertmanager_api(alertmanager, "POST", alert)
            await wait_execution(srd, "succeeded")
            await assert_dr_state(platform)
            assert len(await executions(srd)) == 1


async def test_a_runbook_that_cannot_restore_health_pages_through_the_real_alertmanager(
    tmp_path: Path, platform: Platform
) -> None:
    port, am_port = free_port(), free_port()
    escalation = {"alertmanager_url": f"http://127.0.0.1:{am_port}"}
    config = write_config(tmp_path, platform, port, escalation=escalation)
    # Health never comes back (nothing listens there): remedies exhausted, escalate.
    (tmp_path / "runbook.yaml").write_text(
        textwrap.dedent(f"""\
        runbooks:
          - name: doomed
            match: [alertname="ServiceDown"]
            health: {{http: {{url: "http://127.0.0.1:{free_port()}/health", timeout: 1s,
                              interval: 1s}}}}
            deadline: 2s
            steps:
              - {{name: look, check: {{http: {{url: "{platform.backup_url}", timeout: 1s}}}},
                 timeout: 5s}}
        """)
    )
    env = {"SRD_E2E_TOKEN": TOKEN}
    async with (
        running_alertmanager(tmp_path, NO_RECEIVER, am_port) as alertmanager,
        running_srd("run", "--config", str(config), port=port, env=env) as srd,
    ):
        assert await alertmanager_api(alertmanager, "GET") == []
        assert await post(srd, payload()) == 200
        done = await wait_execution(srd, "escalated")
        labels = {"runbook": "doomed", "reason": "escalated"}
        await srd.wait_for("srd_escalations_total", labels, lambda v: v == 1)
        await srd.wait_for("srd_escalation_notifications_total", {"result": "sent"}, bool)
        [page] = await alertmanager_api(alertmanager, "GET")
        assert page["labels"] == {
            "alertname": "SrdRunbookEscalated",
            "runbook": "doomed",
            "execution": done["id"],
            "reason": "escalated",
            "severity": "critical",
        }
        assert "doomed stopped (escalated)" in page["annotations"]["summary"]
        assert page["status"]["state"] == "active"
        # The journal says it paged, and why.
        status, text = await api_get(srd, f"/api/executions/{done['id']}")
        assert status == 200
        last = json.loads(text)["states"][-1]
        assert last["state"] == "escalated"
        assert last["detail"]["paged"] is True


async def test_dry_run_journals_the_plan_and_diff_and_changes_nothing(
    tmp_path: Path, platform: Platform
) -> None:
    port = free_port()
    config = write_config(tmp_path, platform, port, mode="dry-run")
    env = {"SRD_E2E_TOKEN": TOKEN}
    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        assert await post(srd, payload()) == 200
        done = await wait_execution(srd, "dry_run")
        assert done["mode"] == "dry-run"
        status, text = await api_get(srd, f"/api/executions/{done['id']}")
        assert status == 200
        ended = [s for s in json.loads(text)["steps"] if s["phase"] == "ended"]
    planned = {s["name"]: s for s in ended if s["result"] == "planned"}
    assert set(planned) >= {"scale_backup_up", "move_targets", "dns_to_dr", "scale_primary_down"}
    assert planned["scale_primary_down"]["detail"]["changes"] == [
        "deployment vilokanam-production/web-primary replicas: 3 → 0"
    ]
    assert DR_ADDRESS in " ".join(planned["dns_to_dr"]["detail"]["changes"])
    # Read back: nothing moved.
    assert replicas(platform.kubernetes, "vilokanam-production", "web-primary") == 3
    assert replicas(platform.kubernetes, "vilokanam-dr", "web-backup") == 0
    assert await platform.record() == [PRIMARY_ADDRESS]
    assert await platform.targets() == ([PRIMARY_TARGET], [])
    writes = {"ChangeResourceRecordSets", "RegisterTargets", "DeregisterTargets"}
    assert not writes & set(platform.proxy.calls)


async def test_sighup_applies_new_webhook_credentials_and_body_limit(
    tmp_path: Path, platform: Platform
) -> None:
    port = free_port()
    config = write_config(tmp_path, platform, port)
    env = {"SRD_E2E_TOKEN": TOKEN, "SRD_E2E_NEW_TOKEN": "rotated-token"}
    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        resolved = payload("resolved")  # recorded, never acted on
        assert await post(srd, resolved) == 200
        rotated = {"bearer_token": {"env": "SRD_E2E_NEW_TOKEN"}}
        write_config(tmp_path, platform, port, auth=rotated, max_body_bytes=200)
        srd.process.send_signal(signal.SIGHUP)
        await srd.wait_for("srd_config_reloads_total", {"result": "success"}, bool)
        assert await post(srd, resolved) == 401  # the old token no longer opens it
        assert (await api_get(srd, "/api/executions"))[0] == 401
        assert await post(srd, resolved, token="rotated-token") == 413  # the new limit
        small = {"version": "4"}
        assert await post(srd, small, token="rotated-token") == 400  # in, and checked
        assert (await api_get(srd, "/api/executions", token="rotated-token"))[0] == 200
