"""The platform a failover acts on, for the end-to-end tests: the fake Kubernetes API and a
real moto server behind the AWS proxy, the shipped runbook pointed at them, and the real
``srd`` process's webhook and API."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import get_session

from srd.simulate.sandbox import FakeService
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.kubernetes import FakeKubernetes, replicas, seed_platform
from tests.support.daemon import RunningSrd, srd_config
from tests.support.eventually import eventually
from tests.support.servers import running

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-webhook-token"
PRIMARY_ADDRESS, DR_ADDRESS = "203.0.113.10", "198.51.100.20"
PRIMARY_TARGET, DR_TARGET = "10.0.1.10", "10.0.2.10"
SHIPPED_TARGET_GROUPS = tuple(
    f"arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/{name}/0000000000000000"
    for name in ("primary-tg", "dr-tg")
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
    dr_target_group: str
    clients: dict[str, Any]
    service_url: str
    backup_url: str

    async def record(self) -> list[str]:
        answer = await self.clients["route53"].list_resource_record_sets(HostedZoneId=self.zone)
        [record] = [r for r in answer["ResourceRecordSets"] if r["Type"] == "A"]
        return [value["Value"] for value in record["ResourceRecords"]]

    async def targets(self) -> tuple[list[str], list[str]]:
        """The targets of the primary group and of the DR group."""
        found = []
        for group in (self.target_group, self.dr_target_group):
            answer = await self.clients["elbv2"].describe_target_health(TargetGroupArn=group)
            found.append(sorted(d["Target"]["Id"] for d in answer["TargetHealthDescriptions"]))
        return found[0], found[1]


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
        running(service.app()) as service_server,
        running(backup.app()) as backup_server,
    ):
        zone = await _zone(route53)
        vpc = (await ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
        arn, dr_arn = [
            str(group["TargetGroups"][0]["TargetGroupArn"])
            for group in [
                await elbv2.create_target_group(
                    Name=f"{site}-{uuid.uuid4().hex[:8]}",
                    Protocol="HTTP",
                    Port=80,
                    VpcId=vpc,
                    TargetType="ip",
                )
                for site in ("primary", "dr")
            ]
        ]
        target = {"Id": PRIMARY_TARGET, "Port": 80}
        await elbv2.register_targets(TargetGroupArn=arn, Targets=[target])
        yield Platform(
            fake,
            kubernetes_url,
            aws_url,
            proxy,
            zone,
            arn,
            dr_arn,
            {"route53": route53, "elbv2": elbv2},
            f"{service_server.url}/health",
            f"{backup_server.url}/health",
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


SHIPPED_STEPS = [
    "scale_backup_up",
    "backup_healthy",
    "move_targets",
    "dns_to_dr",
    "scale_primary_down",
    "service_healthy",
]
"""The steps of the shipped platform_failover runbook, in order, for its one service."""


def shipped_runbook(platform: Platform) -> str:
    """rules/runbooks/platform_failover.yaml as shipped, with its placeholders filled in for
    this platform, its health URLs pointed at the loopback fakes and its waits shortened."""
    text = (ROOT / "rules" / "runbooks" / "platform_failover.yaml").read_text()
    replacements = {
        "settle: 2m": "settle: 0s",
        "Z0000000000000000000": platform.zone,
        "203.0.113.10": DR_ADDRESS,
        SHIPPED_TARGET_GROUPS[0]: platform.target_group,
        SHIPPED_TARGET_GROUPS[1]: platform.dr_target_group,
        "primary_target: 10.0.1.10": f"primary_target: {PRIMARY_TARGET}",
        "dr_target: 10.1.1.10": f"dr_target: {DR_TARGET}",
        "${public_url}/health": platform.service_url,
        "${backup_url}/health": platform.backup_url,
        "timeout: 5s, interval: 15s": "timeout: 1s, interval: 1s",
        "timeout: 5s, interval: 10s": "timeout: 1s, interval: 1s",
    }
    for old, new in replacements.items():
        assert old in text, f"the shipped runbook changed: {old!r} is gone"
        text = text.replace(old, new)
    # One service, "web", instead of the shipped four (their URLs are the fakes' above).
    text, services = re.subn(
        r"(?m)^    for_each:\n(?:      .*\n|        .*\n)+", _ONE_SERVICE, text
    )
    assert services == 1, "the shipped runbook changed: its for_each is gone"
    return text


_ONE_SERVICE = "    for_each:\n      - {svc: web}\n"


def write_config(
    tmp_path: Path, platform: Platform, port: int, mode: str = "armed", **failover: Any
) -> Path:
    """The shipped runbook on the platform, with ``failover`` settings besides it."""
    (tmp_path / "runbook.yaml").write_text(shipped_runbook(platform))
    auth = {"bearer_token": {"env": "SRD_E2E_TOKEN"}}
    actuators = {
        "kubernetes": {"host": platform.kubernetes_url},
        "aws": {"endpoint_url": platform.aws_url, "region": "us-east-1"},
    }
    return srd_config(
        tmp_path,
        port,
        failover={"runbooks": ["runbook.yaml"], "auth": auth, **failover},
        actuators=actuators,
        mode=mode,
    )


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
    async def reached() -> dict[str, Any] | None:
        found = await executions(srd)
        return found[0] if found and found[0]["state"] == state else None

    try:
        return await eventually(reached, within=timeout, what=f"an execution {state}", every=0.3)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; {srd.log_lines[-20:]}") from None


async def assert_dr_state(platform: Platform) -> None:
    assert replicas(platform.kubernetes, "vilokanam-dr", "web-backup") == 3
    assert replicas(platform.kubernetes, "vilokanam-production", "web-primary") == 0
    assert await platform.record() == [DR_ADDRESS]
    assert await platform.targets() == ([], [DR_TARGET])
