"""The aws actuator against a real moto server on loopback, behind the AwsProxy that makes
Route 53 changes stay PENDING, new targets start ``initial`` and calls get throttled — so
the waits for convergence and the retries are really exercised. Ends with the platform's whole
failover (Kubernetes and AWS) and its rollback."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from aiobotocore.session import get_session

from srd.actuators.aws import IAM, AwsActuator, AwsSettings, principal
from srd.actuators.base import Actuator, ActuatorError, Params
from srd.actuators.kubernetes import KubernetesActuator, KubernetesSettings
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.kubernetes import FakeKubernetes, replicas, seed_platform
from tests.support.clock import Clock

PRIMARY_ADDRESS, DR_ADDRESS = "203.0.113.10", "198.51.100.20"
PRIMARY_TARGETS = [("10.0.1.1", 8080), ("10.0.1.2", 8080)]
DR_TARGETS = [("10.0.2.1", 8080), ("10.0.2.2", 8080)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
async def proxy(moto_url: str, clock: Clock) -> AsyncIterator[tuple[AwsProxy, str]]:
    aws = AwsProxy(moto_url, clock=clock)
    async with aws.serving() as url:
        yield aws, url


@pytest.fixture
def aws(proxy: tuple[AwsProxy, str]) -> AwsProxy:
    """The AWS proxy the actuator calls, to set its delays and faults and read its calls."""
    return proxy[0]


@pytest.fixture
async def actuator(proxy: tuple[AwsProxy, str]) -> AsyncIterator[AwsActuator]:
    aws = AwsActuator(AwsSettings(endpoint_url=proxy[1]))
    try:
        yield aws
    finally:
        await aws.close()


class Cloud:
    """Direct clients to moto (not through the proxy) to set up and read back state."""

    def __init__(self, route53: Any, elbv2: Any, ec2: Any) -> None:
        self.route53, self.elbv2, self.ec2 = route53, elbv2, ec2

    async def zone_with_record(self) -> str:
        answer = await self.route53.create_hosted_zone(
            Name="vilokanam.com", CallerReference=str(uuid.uuid4())
        )
        zone = str(answer["HostedZone"]["Id"]).removeprefix("/hostedzone/")
        record = {"Name": "web.vilokanam.com", "Type": "A", "TTL": 300}
        record["ResourceRecords"] = [{"Value": PRIMARY_ADDRESS}]
        batch = {"Changes": [{"Action": "CREATE", "ResourceRecordSet": record}]}
        await self.route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch=batch)
        return zone

    async def records(self, zone: str) -> list[tuple[str, str, int, list[str]]]:
        answer = await self.route53.list_resource_record_sets(HostedZoneId=zone)
        return [
            (r["Name"], r["Type"], r["TTL"], [v["Value"] for v in r["ResourceRecords"]])
            for r in answer["ResourceRecordSets"]
            if r["Type"] not in ("NS", "SOA")
        ]

    async def target_group(self, registered: list[tuple[str, int]] = PRIMARY_TARGETS) -> str:
        vpc = (await self.ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
        answer = await self.elbv2.create_target_group(
            Name=f"web-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip"
        )
        arn = str(answer["TargetGroups"][0]["TargetGroupArn"])
        if registered:
            targets = [{"Id": id_, "Port": port} for id_, port in registered]
            await self.elbv2.register_targets(TargetGroupArn=arn, Targets=targets)
        return arn

    async def targets(self, arn: str) -> list[tuple[str, int]]:
        answer = await self.elbv2.describe_target_health(TargetGroupArn=arn)
        found = [
            (d["Target"]["Id"], d["Target"]["Port"]) for d in answer["TargetHealthDescriptions"]
        ]
        return sorted(found)


@pytest.fixture
async def cloud(moto_url: str) -> AsyncIterator[Cloud]:
    session = get_session()
    args: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    async with (
        session.create_client("route53", **args) as route53,
        session.create_client("elbv2", **args) as elbv2,
        session.create_client("ec2", **args) as ec2,
    ):
        yield Cloud(route53, elbv2, ec2)


def upsert(zone: str, address: str = DR_ADDRESS, name: str = "web.vilokanam.com") -> Params:
    return {"hosted_zone_id": zone, "name": name, "type": "A", "ttl": 300, "values": [address]}


def swap(arn: str) -> Params:
    register = [{"id": id_, "port": port} for id_, port in DR_TARGETS]
    return {"target_group_arn": arn, "register": register, "deregister": ["10.0.1.1", "10.0.1.2"]}


async def settle(actuator: Actuator, action: str, params: Params, clock: Clock) -> float:
    """Poll ``converged`` as the executor does, moving the clock 5 s a poll; the time it took."""
    started = clock.now
    while not await actuator.converged(action, params):
        assert clock.now - started < 600, f"{action} never converged"
        clock.now += 5
    return clock.now - started


def test_the_actuator_fulfils_the_contract_and_names_its_actions() -> None:
    aws = AwsActuator(AwsSettings())
    assert isinstance(aws, Actuator)
    assert aws.actions() == {"route53_upsert", "elbv2_swap_targets", "elbv2_move_targets"}


async def test_an_upsert_waits_for_insync_and_restore_puts_back_the_prior_record(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy, clock: Clock
) -> None:
    aws.dns_pending = 60
    zone = await cloud.zone_with_record()
    prior = await actuator.snapshot("route53_upsert", upsert(zone))
    assert prior == {
        "record": {
            "Name": "web.vilokanam.com.",
            "Type": "A",
            "TTL": 300,
            "ResourceRecords": [{"Value": PRIMARY_ADDRESS}],
        }
    }

    await actuator.apply("route53_upsert", upsert(zone))
    assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [DR_ADDRESS])]
    assert await settle(actuator, "route53_upsert", upsert(zone), clock) == 60
    assert aws.calls.count("GetChange") == 13

    await actuator.restore("route53_upsert", upsert(zone), prior)
    assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [PRIMARY_ADDRESS])]


async def test_restoring_a_record_that_did_not_exist_deletes_it(
    actuator: AwsActuator, cloud: Cloud
) -> None:
    zone = await cloud.zone_with_record()
    params = upsert(zone, name="dr.vilokanam.com")
    prior = await actuator.snapshot("route53_upsert", params)
    assert prior == {"record": None}
    await actuator.apply("route53_upsert", params)
    assert len(await cloud.records(zone)) == 2

    await actuator.restore("route53_upsert", params, prior)
    await actuator.restore("route53_upsert", params, prior)  # a repeated rollback is harmless
    assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [PRIMARY_ADDRESS])]


async def test_a_record_plan_shows_the_diff_and_changes_nothing(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy
) -> None:
    zone = await cloud.zone_with_record()
    plan = await actuator.plan("route53_upsert", upsert(zone))
    await actuator.snapshot("route53_upsert", upsert(zone))

    assert plan.changes == (
        f"record web.vilokanam.com. A {PRIMARY_ADDRESS} (ttl 300) → {DR_ADDRESS} (ttl 300)",
    )
    assert set(aws.calls) == {"ListResourceRecordSets"}
    assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [PRIMARY_ADDRESS])]


async def test_upserting_the_same_record_twice_changes_it_once(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy
) -> None:
    zone = await cloud.zone_with_record()
    await actuator.apply("route53_upsert", upsert(zone))
    await actuator.apply("route53_upsert", upsert(zone))
    assert aws.calls.count("ChangeResourceRecordSets") == 1
    assert (await actuator.plan("route53_upsert", upsert(zone))).noop
    assert await actuator.converged("route53_upsert", upsert(zone))


async def test_a_record_changed_by_someone_else_is_not_converged(
    actuator: AwsActuator, cloud: Cloud
) -> None:
    zone = await cloud.zone_with_record()
    await actuator.apply("route53_upsert", upsert(zone))
    await actuator.apply("route53_upsert", upsert(zone, "192.0.2.99"))
    assert not await actuator.converged("route53_upsert", upsert(zone))


async def test_a_target_swap_registers_first_waits_for_healthy_and_restores_the_prior_set(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy, clock: Clock
) -> None:
    aws.targets_initial = 30
    arn = await cloud.target_group()
    prior = await actuator.snapshot("elbv2_swap_targets", swap(arn))
    assert prior == {"targets": [{"id": id_, "port": port} for id_, port in PRIMARY_TARGETS]}

    after = await actuator.apply("elbv2_swap_targets", swap(arn))
    assert after == {"targets": [{"id": id_, "port": port} for id_, port in DR_TARGETS]}
    changes = [call for call in aws.calls if call.endswith("Targets")]
    assert changes == ["RegisterTargets", "DeregisterTargets"]
    assert await cloud.targets(arn) == DR_TARGETS
    assert await settle(actuator, "elbv2_swap_targets", swap(arn), clock) == 30

    await actuator.restore("elbv2_swap_targets", swap(arn), prior)
    assert await cloud.targets(arn) == PRIMARY_TARGETS


async def test_a_move_between_two_groups_registers_in_dr_first_and_restores_both_groups(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy, clock: Clock
) -> None:
    aws.targets_initial = 30
    primary_tg = await cloud.target_group([("10.0.1.10", 80)])
    dr_tg = await cloud.target_group([])
    move = {
        "from_target_group_arn": primary_tg,
        "deregister": [{"id": "10.0.1.10", "port": 80}],
        "to_target_group_arn": dr_tg,
        "register": [{"id": "10.1.1.10", "port": 80}],
    }
    primary, dr = (arn.split("/")[1] for arn in (primary_tg, dr_tg))
    plan = await actuator.plan("elbv2_move_targets", move)
    assert plan.changes == (
        f"target groups {primary} → {dr} register 10.1.1.10:80 in {dr}",
        f"target groups {primary} → {dr} deregister 10.0.1.10:80 from {primary}",
    )
    prior = await actuator.snapshot("elbv2_move_targets", move)

    await actuator.apply("elbv2_move_targets", move)
    changes = [call for call in aws.calls if call.endswith("Targets")]
    assert changes == ["RegisterTargets", "DeregisterTargets"]
    assert await cloud.targets(primary_tg) == []
    assert await cloud.targets(dr_tg) == [("10.1.1.10", 80)]
    assert await settle(actuator, "elbv2_move_targets", move, clock) == 30

    await actuator.restore("elbv2_move_targets", move, prior)
    assert await cloud.targets(primary_tg) == [("10.0.1.10", 80)]
    assert await cloud.targets(dr_tg) == []


async def test_a_target_plan_lists_each_change_and_changes_nothing(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy
) -> None:
    arn = await cloud.target_group()
    plan = await actuator.plan("elbv2_swap_targets", swap(arn))
    group = f"target group {arn.split('/')[1]}"
    assert plan.changes == (
        f"{group} register 10.0.2.1:8080",
        f"{group} register 10.0.2.2:8080",
        f"{group} deregister 10.0.1.1:8080",
        f"{group} deregister 10.0.1.2:8080",
    )
    assert set(aws.calls) == {"DescribeTargetHealth"}
    assert await cloud.targets(arn) == PRIMARY_TARGETS

    await actuator.apply("elbv2_swap_targets", swap(arn))
    await actuator.apply("elbv2_swap_targets", swap(arn))
    assert aws.calls.count("RegisterTargets") == 1
    assert (await actuator.plan("elbv2_swap_targets", swap(arn))).noop


async def test_restoring_targets_keeps_ones_others_registered_meanwhile(
    actuator: AwsActuator, cloud: Cloud
) -> None:
    arn = await cloud.target_group()
    prior = await actuator.snapshot("elbv2_swap_targets", swap(arn))
    await actuator.apply("elbv2_swap_targets", swap(arn))
    await cloud.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.3.1"}])

    await actuator.restore("elbv2_swap_targets", swap(arn), prior)
    assert await cloud.targets(arn) == [*PRIMARY_TARGETS, ("10.0.3.1", 80)]


async def test_throttling_within_botocores_retries_is_ridden_out(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy
) -> None:
    zone = await cloud.zone_with_record()
    aws.throttle("ChangeResourceRecordSets", code="PriorRequestNotComplete")
    await actuator.apply("route53_upsert", upsert(zone))
    assert aws.calls.count("ChangeResourceRecordSets") == 2
    assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [DR_ADDRESS])]


@pytest.mark.parametrize(
    ("operation", "code", "action"),
    [
        ("ChangeResourceRecordSets", "PriorRequestNotComplete", "route53_upsert"),
        ("ListResourceRecordSets", "Throttling", "route53_upsert"),
        ("RegisterTargets", "ThrottlingException", "elbv2_swap_targets"),
        ("DescribeTargetHealth", "RequestLimitExceeded", "elbv2_swap_targets"),
    ],
)
async def test_throttling_that_outlasts_botocores_retries_is_a_retryable_error(
    cloud: Cloud, proxy: tuple[AwsProxy, str], operation: str, code: str, action: str
) -> None:
    zone, arn = await cloud.zone_with_record(), await cloud.target_group()
    params = upsert(zone) if action == "route53_upsert" else swap(arn)
    proxy[0].throttle(operation, times=2, code=code)
    aws = AwsActuator(AwsSettings(endpoint_url=proxy[1], max_attempts=2))
    try:
        with pytest.raises(
            ActuatorError, match=f"throttled {operation} .{code}. after 2"
        ) as caught:
            await aws.apply(action, params)
    finally:
        await aws.close()
    assert caught.value.retryable


async def test_a_missing_hosted_zone_is_a_permanent_error_naming_it(
    actuator: AwsActuator,
) -> None:
    with pytest.raises(ActuatorError, match="NoSuchHostedZone") as caught:
        await actuator.snapshot("route53_upsert", upsert("ZNOSUCHZONE"))
    assert not caught.value.retryable
    assert "record web.vilokanam.com. A" in str(caught.value)


async def test_an_unreachable_endpoint_is_a_retryable_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    aws = AwsActuator(AwsSettings(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1))
    try:
        with pytest.raises(ActuatorError, match="Could not connect") as caught:
            await aws.snapshot("route53_upsert", upsert("Z1"))
    finally:
        await aws.close()
    assert caught.value.retryable


GROUP = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"
SRD = "arn:aws:sts::123456789012:user/moto"
"""srd's principal in these tests: moto's identity for keys it did not issue."""


async def test_denied_names_exactly_the_iam_actions_refused_with_their_resources(
    actuator: AwsActuator, aws: AwsProxy
) -> None:
    assert await actuator.denied("route53_upsert", upsert("Z1")) == []  # None allows all
    aws.allowed = {
        ("iam:SimulatePrincipalPolicy", SRD),
        ("route53:ListResourceRecordSets", "arn:aws:route53:::hostedzone/*"),
        ("route53:ChangeResourceRecordSets", "arn:aws:route53:::hostedzone/Z2"),
        ("elasticloadbalancing:Describe*", "*"),
        ("elasticloadbalancing:RegisterTargets", GROUP),
    }

    assert await actuator.denied("route53_upsert", upsert("Z1")) == [
        "route53:ChangeResourceRecordSets on arn:aws:route53:::hostedzone/Z1 (implicitDeny)",
        "route53:GetChange on arn:aws:route53:::change/* (implicitDeny)",
    ]
    assert await actuator.denied("elbv2_swap_targets", swap(GROUP)) == [
        f"elasticloadbalancing:DeregisterTargets on {GROUP} (implicitDeny)"
    ]
    aws.allowed.add(("elasticloadbalancing:DeregisterTargets", GROUP))
    assert await actuator.denied("elbv2_swap_targets", swap(GROUP)) == []
    assert actuator.grant("route53:GetChange on arn:aws:route53:::change/* (implicitDeny)") == (
        f'grant {SRD} IAM: a policy statement {{"Effect": "Allow", "Action": '
        '"route53:GetChange", "Resource": "arn:aws:route53:::change/*"} (no explicit Deny, '
        "SCP or permissions boundary against it)"
    )
    assert "ChangeResourceRecordSets" not in aws.calls  # a check changes nothing
    assert set(aws.principals) == {SRD}


async def test_a_refused_simulation_is_a_permanent_error_saying_what_srd_must_be_granted(
    actuator: AwsActuator, aws: AwsProxy
) -> None:
    aws.allowed = {("route53:*", "*")}
    with pytest.raises(ActuatorError, match="AccessDenied") as caught:
        await actuator.denied("route53_upsert", upsert("Z1"))
    assert not caught.value.retryable
    assert caught.value.fix.startswith(
        f"grant iam:SimulatePrincipalPolicy on srd's own principal ({SRD})"
    )


async def test_an_assumed_role_session_is_simulated_as_its_role(
    moto_url: str, proxy: tuple[AwsProxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with get_session().create_client(
        "sts", endpoint_url=moto_url, region_name="us-east-1"
    ) as sts:
        answer = await sts.assume_role(
            RoleArn="arn:aws:iam::123456789012:role/srd-failover", RoleSessionName="drill"
        )
    credentials = answer["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    aws, url = proxy
    actuator = AwsActuator(AwsSettings(endpoint_url=url))
    try:
        # The fake, as IAM, refuses to simulate an assumed-role session ARN (InvalidInput).
        assert await actuator.denied("route53_upsert", upsert("Z1")) == []
    finally:
        await actuator.close()
    assert aws.principals == ["arn:aws:iam::123456789012:role/srd-failover"] * 2


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (
            "arn:aws:sts::123456789012:assumed-role/srd-failover/i-0abc",
            "arn:aws:iam::123456789012:role/srd-failover",
        ),
        (
            "arn:aws-cn:sts::123456789012:assumed-role/srd/botocore-session-1",
            "arn:aws-cn:iam::123456789012:role/srd",
        ),
        ("arn:aws:iam::123456789012:user/ops/srd", "arn:aws:iam::123456789012:user/ops/srd"),
    ],
)
def test_the_principal_of_a_caller_is_its_role_or_itself(caller: str, expected: str) -> None:
    assert principal(caller) == expected


def shipped_aws_steps() -> list[tuple[str, Params]]:
    """The aws steps of the shipped failover runbook, its vars filled in (for one service)."""
    path = ROOT / "rules" / "runbooks" / "platform_failover.yaml"
    [runbook] = yaml.safe_load(path.read_text())["runbooks"]
    values = {**runbook["vars"], "svc": "web-viewer"}
    steps = [
        spec
        for step in runbook["steps"]
        for spec in (step.get("action"), step.get("compensate"))
        if isinstance(spec, dict) and spec["actuator"] == "aws"
    ]
    assert steps, "the shipped runbook has no aws steps any more: update this test"
    filled = yaml.safe_load(Template(yaml.safe_dump(steps)).substitute(values))
    return [(step["action"], step["params"]) for step in filled]


def documented_policy() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "failover.md").read_text()
    [block] = [
        b for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL) if "SimulatePrincipal" in b
    ]
    return list(json.loads(block)["Statement"])


def allow_list(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    def many(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    return {
        (action, resource)
        for s in statements
        if s["Effect"] == "Allow"
        for action in many(s["Action"])
        for resource in many(s["Resource"])
    }


def test_the_documented_iam_policy_grants_exactly_the_actions_the_code_asks_for() -> None:
    granted = {action for action, _ in allow_list(documented_policy())}
    in_code = {name for needs in IAM.values() for name, _ in needs}
    assert granted - {"iam:SimulatePrincipalPolicy"} == in_code


async def test_the_documented_iam_policy_allows_the_shipped_runbook_and_each_statement_is_needed(
    actuator: AwsActuator, aws: AwsProxy
) -> None:
    statements = documented_policy()
    # The example names a role srd; here srd is moto's user.
    checks_itself = {("iam:SimulatePrincipalPolicy", SRD)}
    aws.allowed = allow_list(statements) | checks_itself
    for action, params in shipped_aws_steps():
        assert await actuator.denied(action, params) == [], action
    for statement in statements:
        if statement["Action"] == "iam:SimulatePrincipalPolicy":
            continue
        aws.allowed = allow_list([s for s in statements if s is not statement]) | checks_itself
        refused = [r for a, p in shipped_aws_steps() for r in await actuator.denied(a, p)]
        assert refused, f"statement {statement['Sid']} grants nothing the runbook needs"


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        ("route53_upsert", {**upsert("Z1"), "values": []}, "values: List should have"),
        ("route53_upsert", {**upsert("Z1"), "type": "ALIAS"}, "type: Input should be"),
        ("route53_upsert", {**upsert("Z1"), "hosted_zone_id": "z-1"}, "hosted_zone_id"),
        ("elbv2_swap_targets", {"target_group_arn": "arn:x"}, "target_group_arn: String"),
        (
            "elbv2_swap_targets",
            {"target_group_arn": "arn:aws:elasticloadbalancing:r:1:targetgroup/a/b"},
            "give targets to register, to deregister, or both",
        ),
        (
            "elbv2_swap_targets",
            {
                **swap("arn:aws:elasticloadbalancing:r:1:targetgroup/a/b"),
                "deregister": ["10.0.2.1"],
            },
            r"both registered and deregistered: \['10.0.2.1'\]",
        ),
        (
            "elbv2_move_targets",
            {
                "from_target_group_arn": "arn:aws:elasticloadbalancing:r:1:targetgroup/a/b",
                "deregister": ["10.0.1.10"],
                "to_target_group_arn": "arn:aws:elasticloadbalancing:r:1:targetgroup/a/b",
                "register": ["10.1.1.10"],
            },
            "a move needs two target groups; within one, use elbv2_swap_targets",
        ),
        (
            "elbv2_move_targets",
            {
                "from_target_group_arn": "arn:aws:elasticloadbalancing:r:1:targetgroup/a/b",
                "deregister": [],
                "to_target_group_arn": "arn:aws:elasticloadbalancing:r:1:targetgroup/c/d",
                "register": ["10.1.1.10"],
            },
            "deregister: List should have at least 1 item",
        ),
    ],
)
def test_bad_params_are_refused_at_validation_naming_the_parameter(
    action: str, params: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        AwsActuator(AwsSettings()).validate(action, params)


async def test_the_platforms_failover_ends_in_the_dr_state_and_rolls_back_to_the_original(
    actuator: AwsActuator, cloud: Cloud, aws: AwsProxy, clock: Clock
) -> None:
    aws.dns_pending, aws.targets_initial = 45, 20
    zone, arn = await cloud.zone_with_record(), await cloud.target_group()
    fake = FakeKubernetes()
    seed_platform(fake)
    async with fake.serving() as url:
        kubernetes = KubernetesActuator(KubernetesSettings(host=url))
        primary = {"namespace": "vilokanam-production", "name": "web-primary", "replicas": 0}
        backup = {"namespace": "vilokanam-dr", "name": "web-backup", "replicas": 3}
        steps: list[tuple[Actuator, str, Params]] = [
            (kubernetes, "scale_deployment", primary),
            (kubernetes, "scale_deployment", backup),
            (actuator, "route53_upsert", upsert(zone)),
            (actuator, "elbv2_swap_targets", swap(arn)),
        ]
        try:
            priors, waited = [], {}
            for target, action, params in steps:
                priors.append(await target.snapshot(action, params))
                await target.apply(action, params)
                waited[action] = await settle(target, action, params, clock)

            assert replicas(fake, "vilokanam-production", "web-primary") == 0
            assert replicas(fake, "vilokanam-dr", "web-backup") == 3
            assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [DR_ADDRESS])]
            assert await cloud.targets(arn) == DR_TARGETS
            assert (waited["route53_upsert"], waited["elbv2_swap_targets"]) == (45, 20)

            for (target, action, params), prior in reversed(list(zip(steps, priors, strict=True))):
                await target.restore(action, params, prior)
        finally:
            await kubernetes.close()

        assert replicas(fake, "vilokanam-production", "web-primary") == 3
        assert replicas(fake, "vilokanam-dr", "web-backup") == 0
    assert await cloud.records(zone) == [("web.vilokanam.com.", "A", 300, [PRIMARY_ADDRESS])]
    assert await cloud.targets(arn) == PRIMARY_TARGETS
