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
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

from srd.http.app import serving
from srd.simulate.sandbox import FakeService
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.kubernetes import FakeKubernetes, replicas, seed_platform
from tests.support.daemon import RunningSrd, free_port, running_srd

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-webhook-token"
PRIMARY_ADDRESS, DR_ADDRESS = "203.0.113.10", "198.51.100.20"
PRIMARY_TARGET, DR_TARGET = "10.0.1.10", "10.0.2.10"
SHIPPED_TARGET_GROUP = (
    "arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/primary/0000000000000000"
)


@dataclass
class Platform:
    """The platform before a failover: primary serving, backup idle, DNS and targets on it."""

    kubernetes: FakeKubernetes
    kubernetes_url: str
    aws_url: str
    proxy: AwsProxy
    zone: str
    target_group: str
    clients: dict[str, Any]
    service_url: str
    backup_url: str

    async def record(self) -> list[str]:
        answer = await self.clients["route53"].list_resource_record_sets(HostedZoneId=self.zone)
        [record] = [r for r in answer["ResourceRecordSets"] if r["Type"] == "A"]
        return [value["Value"] for value in record["ResourceRecords"]]

    async def targets(self) -> list[str]:
        answer = await self.clients["elbv2"].describe_target_health(
            TargetGroupArn=self.target_group
        )
        return sorted(d["Target"]["Id"] for d in answer["TargetHealthDescriptions"])


@pytest.fixture
async def platform(moto_url: str) -> AsyncIterator[Platform]:
    async with serving_platform(moto_url, FakeKubernetes()) as served:
        yield served


@asynccontextmanager
async def serving_platform(moto_url: str, fake: FakeKubernetes) -> AsyncIterator[Platform]:
    """The platform on ``fake`` (seeded here) and moto, behind the AWS proxy."""
    session = get_session()
    args: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    seed_platform(fake)
    proxy = AwsProxy(moto_url)
    service, backup = FakeService(), FakeService()
    async with (
        session.create_client("route53", **args) as route53,
        session.create_client("elbv2", **args) as elbv2,
        session.create_client("ec2", **args) as ec2,
        fake.serving() as kubernetes_url,
        proxy.serving() as aws_url,
        serving(service.app(), "127.0.0.1", 0) as service_port,
        serving(backup.app(), "127.0.0.1", 0) as backup_port,
    ):
        zone = await _zone(route53)
        vpc = (await ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
        group = await elbv2.create_target_group(
            Name=f"web-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip"
        )
        arn = str(group["TargetGroups"][0]["TargetGroupArn"])
        await elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": PRIMARY_TARGET}])
        yield Platform(
            fake,
            kubernetes_url,
            aws_url,
            proxy,
            zone,
            arn,
            {"route53": route53, "elbv2": elbv2},
            f"http://127.0.0.1:{service_port}/health",
            f"http://127.0.0.1:{backup_port}/health",
        )


async def _zone(route53: Any) -> str:
    answer = await route53.create_hosted_zone(
        Name="vilokanam.com", CallerReference=str(uuid.uuid4())
    )
    zone = str(answer["HostedZone"]["Id"]).removeprefix("/hostedzone/")
    record = {"Name": "web.vilokanam.com", "Type": "A", "TTL": 300}
    record["ResourceRecords"] = [{"Value": PRIMARY_ADDRESS}]
    batch = {"Changes": [{"Action": "CREATE", "ResourceRecordSet": record}]}
    await route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch=batch)
    return zone


SHIPPED_FOR_EACH = """\
      - svc: web-creator
        public_url: https://web-creator.vilokanam.com
        backup_url: http://web-creator-backup.vilokanam-dr.svc:8080
      - svc: web-viewer
        public_url: https://web-viewer.vilokanam.com
        backup_url: http://web-viewer-backup.vilokanam-dr.svc:8080
"""


def shipped_runbook(platform: Platform) -> str:
    """rules/runbooks/platform_failover.yaml as shipped, with its placeholders filled in for
    this platform, its health URLs pointed at the loopback fakes and its waits shortened."""
    text = (ROOT / "rules" / "runbooks" / "platform_failover.yaml").read_text()
    replacements = {
        "settle: 2m": "settle: 0s",
        "Z0000000000000000000": platform.zone,
        "203.0.113.10": DR_ADDRESS,
        SHIPPED_TARGET_GROUP: platform.target_group,
        "primary_target: 10.0.1.10": f"primary_target: {PRIMARY_TARGET}",
        "dr_target: 10.1.1.10": f"dr_target: {DR_TARGET}",
        "${public_url}/health": platform.service_url,
        "${backup_url}/health": platform.backup_url,
        "timeout: 5s, interval: 15s": "timeout: 1s, interval: 1s",
        "timeout: 5s, interval: 10s": "timeout: 1s, interval: 1s",
        SHIPPED_FOR_EACH: "      - {svc: web}\n",
    }
    for old, new in replacements.items():
        assert old in text, f"the shipped runbook changed: {old!r} is gone"
        text = text.replace(old, new)
    return text


def write_config(tmp_path: Path, platform: Platform, port: int) -> Path:
    (tmp_path / "runbook.yaml").write_text(shipped_runbook(platform))
    config = tmp_path / "srd.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        mode: armed
        state_dir: {tmp_path / "state"}
        server: {{listen: "127.0.0.1:{port}"}}
        failover:
          runbooks: [runbook.yaml]
          auth: {{bearer_token: {{env: SRD_E2E_TOKEN}}}}
        actuators:
          kubernetes: {{host: "{platform.kubernetes_url}"}}
          aws: {{endpoint_url: "{platform.aws_url}", region: us-east-1}}
        """)
    )
    return config


def payload(status: str = "firing") -> dict[str, Any]:
    alert = {
        "status": status,
        "labels": {"alertname": "ServiceDown", "service": "web", "severity": "page"},
        "annotations": {"summary": "web is down"},
        "startsAt": "2026-11-28T10:00:00Z",
        "endsAt": "2026-11-28T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "c0ffee00c0ffee00",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ServiceDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "srd",
        "groupLabels": {"alertname": "ServiceDown"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


async def post(srd: RunningSrd, body: Any, token: str | None = TOKEN) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{srd.base_url}/alertmanager", json=body, headers=headers) as reply,
    ):
        return reply.status


async def api_get(srd: RunningSrd, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{srd.base_url}{path}", headers=headers) as reply,
    ):
        return reply.status, await reply.text()


async def executions(srd: RunningSrd) -> list[dict[str, Any]]:
    status, text = await api_get(srd, "/api/executions")
    assert status == 200, text
    found: list[dict[str, Any]] = json.loads(text)
    return found


async def wait_execution(srd: RunningSrd, state: str, timeout: float = 60) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await executions(srd)
        if found and found[0]["state"] == state:
            return found[0]
        if loop.time() > deadline:
            raise AssertionError(f"no execution reached {state}: {found}; {srd.log_lines[-20:]}")
        await asyncio.sleep(0.3)


async def assert_dr_state(platform: Platform) -> None:
    assert replicas(platform.kubernetes, "vilokanam-dr", "web-backup") == 3
    assert replicas(platform.kubernetes, "vilokanam-production", "web-primary") == 0
    assert await platform.record() == [DR_ADDRESS]
    assert await platform.targets() == [DR_TARGET]


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
        assert ended == [
            "scale_backup_up",
            "backup_healthy",
            "swap_targets",
            "dns_to_dr",
            "scale_primary_down",
            "service_healthy",
        ]

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not [c for c in platform.proxy.calls if c == "ChangeResourceRecordSets"]:
            assert loop.time() < deadline, platform.proxy.calls
            await asyncio.sleep(0.1)
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
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.request(method, f"{base_url}/api/v2/alerts", json=body) as reply:
                    if reply.status == 200:
                        return await reply.json(content_type=None)
            except aiohttp.ClientError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"Alertmanager at {base_url} did not answer {method}")
            await asyncio.sleep(0.2)


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
    config = write_config(tmp_path, platform, port)
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
    text = config.read_text().replace(
        "  auth:", f"  escalation: {{alertmanager_url: 'http://127.0.0.1:{am_port}'}}\n  auth:"
    )
    config.write_text(text)
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
    config = write_config(tmp_path, platform, port)
    config.write_text(config.read_text().replace("mode: armed", "mode: dry-run"))
    env = {"SRD_E2E_TOKEN": TOKEN}
    async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
        assert await post(srd, payload()) == 200
        done = await wait_execution(srd, "dry_run")
        assert done["mode"] == "dry-run"
        status, text = await api_get(srd, f"/api/executions/{done['id']}")
        assert status == 200
        ended = [s for s in json.loads(text)["steps"] if s["phase"] == "ended"]
    planned = {s["name"]: s for s in ended if s["result"] == "planned"}
    assert set(planned) >= {"scale_backup_up", "swap_targets", "dns_to_dr", "scale_primary_down"}
    assert planned["scale_primary_down"]["detail"]["changes"] == [
        "deployment vilokanam-production/web-primary replicas: 3 → 0"
    ]
    assert DR_ADDRESS in " ".join(planned["dns_to_dr"]["detail"]["changes"])
    # Read back: nothing moved.
    assert replicas(platform.kubernetes, "vilokanam-production", "web-primary") == 3
    assert replicas(platform.kubernetes, "vilokanam-dr", "web-backup") == 0
    assert await platform.record() == [PRIMARY_ADDRESS]
    assert await platform.targets() == [PRIMARY_TARGET]
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
        config.write_text(
            config.read_text()
            .replace("env: SRD_E2E_TOKEN}", "env: SRD_E2E_NEW_TOKEN}")
            .replace("  auth:", "  max_body_bytes: 200\n  auth:")
        )
        srd.process.send_signal(signal.SIGHUP)
        await srd.wait_for("srd_config_reloads_total", {"result": "success"}, bool)
        assert await post(srd, resolved) == 401  # the old token no longer opens it
        assert (await api_get(srd, "/api/executions"))[0] == 401
        assert await post(srd, resolved, token="rotated-token") == 413  # the new limit
        small = {"version": "4"}
        assert await post(srd, small, token="rotated-token") == 400  # in, and checked
        assert (await api_get(srd, "/api/executions", token="rotated-token"))[0] == 200
