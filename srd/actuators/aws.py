"""The ``aws`` actuator (aiobotocore): Route 53 records and ELBv2 target groups.

Actions (parameters):

- ``route53_upsert`` (hosted_zone_id, name, type, ttl, values): UPSERTs one simple record set;
  converged when the record holds and Route 53 reports the change ``INSYNC`` (every
  authoritative server answers with it). A change made before a restart is not remembered:
  then the record being in place is what counts;
- ``elbv2_swap_targets`` (target_group_arn, register, deregister): registers the new targets,
  then deregisters the old — in that order, so the group is never left empty; converged when
  every registered target is ``healthy`` and the deregistered ones are gone or draining.
  A target is an id (instance id, IP address or Lambda ARN) or ``{id, port}``;
- ``elbv2_move_targets`` (from_target_group_arn, deregister, to_target_group_arn, register):
  the platform's move between two groups (``primary-tg`` → ``dr-tg``): registers the DR
  targets in the second group first, then deregisters the primary ones from the first;
  converged, and restored, as a swap in each group.

Restoring a snapshot UPSERTs the prior record set (DELETEs the record if there was none), or
re-registers the prior targets and deregisters the ones the action added. botocore retries
throttling itself, a bounded number of times; throttling that outlasts it, like any 5xx or
connection failure, is a retryable ActuatorError for the executor to retry within the step.

``denied`` checks, changing nothing, that srd's own principal may make every call an action
needs: ``sts:GetCallerIdentity`` names the principal (an assumed role's session stands for its
role), then ``iam:SimulatePrincipalPolicy`` evaluates its policies for each IAM action on the
resource the call touches (``IAM``). That needs ``iam:SimulatePrincipalPolicy`` on srd's own
principal; refused it, ``denied`` fails saying so rather than guessing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator, model_validator

from srd.actuators.base import ActuatorError, Params, Plan, State
from srd.actuators.params import ModelledActions, prior_value
from srd.config.durations import Duration
from srd.config.types import SecretRef, Strict

THROTTLING = frozenset(
    {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"}
)


class AwsSettings(Strict):
    """The ``actuators.aws`` config section. Credentials: the SecretRefs when given, else
    botocore's standard chain (environment, shared files, instance or pod role)."""

    region: str = Field("us-east-1", description="Region of the ELBv2 API; Route 53 is global.")
    endpoint_url: AnyHttpUrl | None = Field(
        None, description="One endpoint for every AWS API: moto server or the sandbox's proxy."
    )
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    timeout: Duration = Field(10.0, description="Limit of each action's API calls together.")
    max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts botocore makes per call (its retries back off, throttling "
        "included); few, so a throttled call returns within the step and the executor decides.",
    )

    @model_validator(mode="after")
    def _both_keys(self) -> AwsSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        return self


RecordType = Literal[
    "A", "AAAA", "CAA", "CNAME", "DS", "MX", "NAPTR", "NS", "PTR", "SPF", "SRV", "TXT"
]


class Route53Upsert(Strict):
    hosted_zone_id: str = Field(pattern=r"^(/hostedzone/)?[A-Z0-9]{1,32}$")
    name: str = Field(min_length=1, max_length=255)
    type: RecordType
    ttl: int = Field(ge=0, le=2_147_483_647)
    values: list[str] = Field(min_length=1)

    @field_validator("hosted_zone_id")
    @classmethod
    def _bare_id(cls, zone: str) -> str:
        return zone.removeprefix("/hostedzone/")

    @field_validator("name")
    @classmethod
    def _absolute(cls, name: str) -> str:
        return dns_name(name)

    @property
    def target(self) -> str:
        return f"record {self.name} {self.type}"

    def record(self) -> dict[str, Any]:
        values = [{"Value": value} for value in self.values]
        return {"Name": self.name, "Type": self.type, "TTL": self.ttl, "ResourceRecords": values}


class Target(Strict):
    id: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535, description="The group's port if unset.")

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        return {"id": data} if isinstance(data, str) else data

    def matches(self, registered: Registered) -> bool:
        return self.id == registered[0] and self.port in (None, registered[1])


Registered = tuple[str, int | None]
"""A target as the group has it: id and port."""


class Elbv2SwapTargets(Strict):
    target_group_arn: str = Field(
        pattern=r"^arn:aws[a-z-]*:elasticloadbalancing:[^:]*:\d*:targetgroup/[^/]+/\w+$"
    )
    # Aliased: ``register`` would shadow BaseModel.register.
    to_register: list[Target] = Field(default_factory=list, alias="register")
    to_deregister: list[Target] = Field(default_factory=list, alias="deregister")

    @model_validator(mode="after")
    def _a_swap(self) -> Elbv2SwapTargets:
        if not self.to_register and not self.to_deregister:
            raise ValueError("give targets to register, to deregister, or both")
        if both := {t.id for t in self.to_register} & {t.id for t in self.to_deregister}:
            raise ValueError(f"targets both registered and deregistered: {sorted(both)}")
        return self

    @property
    def target(self) -> str:
        return f"target group {self.target_group_arn.split('/')[1]}"


TARGET_GROUP_ARN = r"^arn:aws[a-z-]*:elasticloadbalancing:[^:]*:\d*:targetgroup/[^/]+/\w+$"


class Elbv2MoveTargets(Strict):
    from_target_group_arn: str = Field(pattern=TARGET_GROUP_ARN)
    to_deregister: list[Target] = Field(min_length=1, alias="deregister")
    to_target_group_arn: str = Field(pattern=TARGET_GROUP_ARN)
    to_register: list[Target] = Field(min_length=1, alias="register")

    @model_validator(mode="after")
    def _two_groups(self) -> Elbv2MoveTargets:
        if self.from_target_group_arn == self.to_target_group_arn:
            raise ValueError("a move needs two target groups; within one, use elbv2_swap_targets")
        return self

    @property
    def target(self) -> str:
        from_, to = self.from_target_group_arn.split("/")[1], self.to_target_group_arn.split("/")[1]
        return f"target groups {from_} → {to}"

    def halves(self) -> tuple[Elbv2SwapTargets, Elbv2SwapTargets]:
        """The move as two swaps, in the order they are applied: register in the DR group,
        then deregister from the primary one (users always have somewhere to go)."""
        register = [t.model_dump() for t in self.to_register]
        deregister = [t.model_dump() for t in self.to_deregister]
        return (
            Elbv2SwapTargets.model_validate(
                {"target_group_arn": self.to_target_group_arn, "register": register}
            ),
            Elbv2SwapTargets.model_validate(
                {"target_group_arn": self.from_target_group_arn, "deregister": deregister}
            ),
        )


Action = Route53Upsert | Elbv2SwapTargets | Elbv2MoveTargets
ACTIONS: dict[str, type[BaseModel]] = {
    "route53_upsert": Route53Upsert,
    "elbv2_swap_targets": Elbv2SwapTargets,
    "elbv2_move_targets": Elbv2MoveTargets,
}
ZONE_ARN = "arn:{partition}:route53:::hostedzone/{zone}"
IAM: dict[type[BaseModel], tuple[tuple[str, str], ...]] = {
    Route53Upsert: (
        ("route53:ListResourceRecordSets", ZONE_ARN),
        ("route53:ChangeResourceRecordSets", ZONE_ARN),
        ("route53:GetChange", "arn:{partition}:route53:::change/*"),
    ),
    Elbv2SwapTargets: (
        ("elasticloadbalancing:DescribeTargetHealth", "*"),
        ("elasticloadbalancing:RegisterTargets", "{group}"),
        ("elasticloadbalancing:DeregisterTargets", "{group}"),
    ),
    Elbv2MoveTargets: (
        ("elasticloadbalancing:DescribeTargetHealth", "*"),
        ("elasticloadbalancing:RegisterTargets", "{to_group}"),
        ("elasticloadbalancing:DeregisterTargets", "{from_group}"),
    ),
}
"""(IAM action, resource ARN) of every call an action makes, snapshot to restore; ``{zone}``
and ``{group}`` are the step's zone id and target group ARN (``{from_group}`` and
``{to_group}`` a move's two), ``{partition}`` srd's own."""
ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>[^:]+):sts::(?P<account>\d+):assumed-role/(?P<role>[^/]+)/[^/]+$"
)


class AwsActuator(ModelledActions[Action]):
    """Acts through one client per AWS API, made on first use and kept until ``close``."""

    name = "aws"
    config_model = AwsSettings
    models = ACTIONS

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._session = get_session()
        self._clients: dict[str, Any] = {}
        self._stack = AsyncExitStack()
        self._connecting = asyncio.Lock()
        self._changes: dict[tuple[str, str, str], str] = {}
        """The last Route 53 change made per (zone, name, type), for ``converged``."""
        self._principal: str | None = None
        """srd's own IAM principal (``denied``), asked of STS once."""

    async def snapshot(self, action: str, params: Params) -> State:
        p = self._parse(action, params)
        async with self._calling(p.target, "read") as clients:
            if isinstance(p, Route53Upsert):
                return {"record": await _record(clients["route53"], p)}
            if isinstance(p, Elbv2MoveTargets):
                to, from_ = p.halves()
                return {
                    "to": await _targets(clients["elbv2"], to),
                    "from": await _targets(clients["elbv2"], from_),
                }
            return await _targets(clients["elbv2"], p)

    async def plan(self, action: str, params: Params) -> Plan:
        p = self._parse(action, params)
        async with self._calling(p.target, "read") as clients:
            if isinstance(p, Route53Upsert):
                current = await _record(clients["route53"], p)
                changes = [] if _holds(current, p) else [f"{_show(current)} → {_show(p.record())}"]
            else:
                move = isinstance(p, Elbv2MoveTargets)
                changes = []
                for swap in _swaps(p):
                    adding, removing = _swap(swap, await _live(clients["elbv2"], swap))
                    group = swap.target_group_arn.split("/")[1]
                    changes += [f"register {_label(t)}" + f" in {group}" * move for t in adding]
                    changes += [
                        f"deregister {_label(t)}" + f" from {group}" * move for t in removing
                    ]
        return Plan(action, p.target, tuple(f"{p.target} {change}" for change in changes))

    async def apply(self, action: str, params: Params) -> State:
        p = self._parse(action, params)
        async with self._calling(p.target, "change") as clients:
            if isinstance(p, Route53Upsert):
                await self._upsert_now(clients["route53"], p)
                return {"record": p.record()}
            elbv2 = clients["elbv2"]
            if isinstance(p, Elbv2MoveTargets):
                to, from_ = p.halves()
                return {"to": await _swap_now(elbv2, to), "from": await _swap_now(elbv2, from_)}
            return await _swap_now(elbv2, p)

    async def converged(self, action: str, params: Params) -> bool:
        p = self._parse(action, params)
        async with self._calling(p.target, "read") as clients:
            if isinstance(p, Route53Upsert):
                return await self._upserted(clients["route53"], p)
            for swap in _swaps(p):
                if not await _swapped(clients["elbv2"], swap):
                    return False
            return True

    async def restore(self, action: str, params: Params, prior: State) -> None:
        p = self._parse(action, params)
        async with self._calling(p.target, "restore") as clients:
            if isinstance(p, Route53Upsert):
                await self._restore_record(clients["route53"], p, prior)
                return
            if isinstance(p, Elbv2MoveTargets):
                # Undone in reverse: the primary targets back first, then the DR ones out.
                to, from_ = p.halves()
                await _put_back(clients["elbv2"], from_, prior_value(prior, "from", dict))
                await _put_back(clients["elbv2"], to, prior_value(prior, "to", dict))
                return
            await _put_back(clients["elbv2"], p, prior)

    async def denied(self, action: str, params: Params) -> list[str]:
        """The IAM actions ``action`` needs that srd's principal is not allowed, each with its
        resource and the simulated decision (``route53:GetChange on
        arn:aws:route53:::change/* (implicitDeny)``)."""
        p = self._parse(action, params)
        async with self._calling(p.target, "permission check", ("sts", "iam")) as clients:
            principal = await self._own_principal(clients["sts"])
            names = dict.fromkeys(("zone", "group", "from_group", "to_group"), "")
            names["partition"] = principal.split(":")[1]
            if isinstance(p, Route53Upsert):
                names["zone"] = p.hosted_zone_id
            elif isinstance(p, Elbv2MoveTargets):
                names["from_group"] = p.from_target_group_arn
                names["to_group"] = p.to_target_group_arn
            else:
                names["group"] = p.target_group_arn
            needed = [(name, resource.format(**names)) for name, resource in IAM[type(p)]]
            decisions: dict[tuple[str, str], str] = {}
            # One resource per simulation: given several, IAM answers one decision per action,
            # the most restrictive over them, which could not say which resource was refused.
            for resource in dict.fromkeys(arn for _, arn in needed):
                names_on = [name for name, arn in needed if arn == resource]
                for name, decision in await _simulate(
                    clients["iam"], principal, names_on, resource
                ):
                    decisions[(name, resource)] = decision
            return [
                f"{name} on {resource} ({decisions.get((name, resource), 'not evaluated')})"
                for name, resource in needed
                if decisions.get((name, resource)) != "allowed"
            ]

    def grant(self, refusal: str) -> str:
        name, _, resource = refusal.split(" (")[0].partition(" on ")
        principal = self._principal or "srd's principal"
        return (
            f'grant {principal} IAM: a policy statement {{"Effect": "Allow", "Action": '
            f'"{name}", "Resource": "{resource}"}} (no explicit Deny, SCP or permissions '
            "boundary against it)"
        )

    async def _own_principal(self, sts: Any) -> str:
        if self._principal is None:
            self._principal = principal(str((await sts.get_caller_identity())["Arn"]))
        return self._principal

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()

    async def _restore_record(self, route53: Any, p: Route53Upsert, prior: State) -> None:
        if "record" not in prior:
            message = f"the snapshot to restore has no record (got {prior!r})"
            raise ActuatorError(message, retryable=False)
        wanted, current = prior["record"], await _record(route53, p)
        if wanted is not None and wanted != current:
            await _change(route53, p.hosted_zone_id, "UPSERT", wanted)
        elif wanted is None and current is not None:
            await _change(route53, p.hosted_zone_id, "DELETE", current)

    async def _upsert_now(self, route53: Any, p: Route53Upsert) -> None:
        """Upsert the record unless it holds already; its change is what ``converged`` waits
        for."""
        if not _holds(await _record(route53, p), p):
            change = await _change(route53, p.hosted_zone_id, "UPSERT", p.record())
            self._changes[(p.hosted_zone_id, p.name, p.type)] = change

    async def _upserted(self, route53: Any, p: Route53Upsert) -> bool:
        """The record holds, and the change srd made to it (if any) is INSYNC."""
        if not _holds(await _record(route53, p), p):
            return False
        change = self._changes.get((p.hosted_zone_id, p.name, p.type))
        if change is None:
            return True
        answer = await route53.get_change(Id=change)
        return bool(answer["ChangeInfo"]["Status"] == "INSYNC")

    @asynccontextmanager
    async def _calling(
        self, target: str, doing: str, services: tuple[str, ...] = ("route53", "elbv2")
    ) -> AsyncIterator[dict[str, Any]]:
        """The clients, within the timeout; errors become ActuatorErrors saying what failed
        and whether trying again can help."""
        timeout = self._settings.timeout
        try:
            async with asyncio.timeout(timeout):
                yield await self._connected(services)
        except ClientError as exc:
            raise _client_error(target, exc) from None
        except TimeoutError:
            message = f"{target}: {doing} timed out after {timeout:g}s"
            raise ActuatorError(message, retryable=True) from None
        except BotoCoreError as exc:
            transient = isinstance(exc, BotoConnectionError | HTTPClientError)
            raise ActuatorError(f"{target}: {doing} failed: {exc}", retryable=transient) from None

    async def _connected(self, services: tuple[str, ...]) -> dict[str, Any]:
        async with self._connecting:
            for service in services:
                if service not in self._clients:
                    client = self._session.create_client(service, **self._client_args())
                    self._clients[service] = await self._stack.enter_async_context(client)
            return self._clients

    def _client_args(self) -> dict[str, Any]:
        settings = self._settings
        args: dict[str, Any] = {
            "region_name": settings.region,
            "config": AioConfig(
                connect_timeout=settings.timeout,
                read_timeout=settings.timeout,
                retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
            ),
        }
        if settings.endpoint_url is not None:
            args["endpoint_url"] = str(settings.endpoint_url).rstrip("/")
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            args["aws_access_key_id"] = settings.access_key_id.value
            args["aws_secret_access_key"] = settings.secret_access_key.value
        return args


def principal(caller: str) -> str:
    """The IAM principal whose policies govern ``caller`` (``sts:GetCallerIdentity``'s Arn):
    an assumed role's session is its role (``arn:aws:iam::ACCOUNT:role/ROLE``: the session
    ARN has no path, so a role with a path is named without it); a user is itself."""
    if found := ASSUMED_ROLE.match(caller):
        return f"arn:{found['partition']}:iam::{found['account']}:role/{found['role']}"
    return caller


async def _simulate(
    iam: Any, principal: str, names: list[str], resource: str
) -> list[tuple[str, str]]:
    """(IAM action, decision) for each of ``names`` on ``resource``, as IAM simulates
    ``principal``'s policies. A refused simulation is a permanent ActuatorError with the fix."""
    try:
        answer = await iam.simulate_principal_policy(
            PolicySourceArn=principal, ActionNames=names, ResourceArns=[resource]
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        if code in THROTTLING:
            raise
        message = (
            f"cannot check the permissions of {principal}: SimulatePrincipalPolicy failed: "
            f"{code}: {error.get('Message', 'no message')}"
        )
        fix = (
            f"grant iam:SimulatePrincipalPolicy on srd's own principal ({principal}) — a "
            f'statement {{"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", '
            f'"Resource": "{principal}"}} — so srd can check what it may do; or give srd '
            "credentials of a user or role (not a federated or root session)"
        )
        raise ActuatorError(message, retryable=False, fix=fix) from None
    return [(r["EvalActionName"], r["EvalDecision"]) for r in answer["EvaluationResults"]]


def dns_name(name: str) -> str:
    """How Route 53 lists a name: lower case, absolute, ``*`` escaped as ``\\052``."""
    return name.lower().replace("*", "\\052").removesuffix(".") + "."


async def _record(route53: Any, p: Route53Upsert) -> dict[str, Any] | None:
    """The record set of ``p``'s name and type as Route 53 lists it, or None."""
    answer = await route53.list_resource_record_sets(
        HostedZoneId=p.hosted_zone_id, StartRecordName=p.name, StartRecordType=p.type, MaxItems="1"
    )
    for record in answer["ResourceRecordSets"]:
        if dns_name(record["Name"]) == p.name and record["Type"] == p.type:
            return cast(dict[str, Any], record)
    return None


def _holds(record: dict[str, Any] | None, p: Route53Upsert) -> bool:
    if record is None or "AliasTarget" in record or "SetIdentifier" in record:
        return False
    values = sorted(value["Value"] for value in record.get("ResourceRecords", ()))
    return record.get("TTL") == p.ttl and values == sorted(p.values)


def _show(record: dict[str, Any] | None) -> str:
    if record is None:
        return "(absent)"
    if "AliasTarget" in record:
        return f"alias to {record['AliasTarget']['DNSName']}"
    values = ", ".join(value["Value"] for value in record.get("ResourceRecords", ()))
    return f"{values} (ttl {record.get('TTL')})"


async def _change(route53: Any, zone: str, verb: str, record: dict[str, Any]) -> str:
    batch = {"Comment": "srd", "Changes": [{"Action": verb, "ResourceRecordSet": record}]}
    answer = await route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch=batch)
    return str(answer["ChangeInfo"]["Id"])


async def _health(elbv2: Any, arn: str) -> list[tuple[Registered, str]]:
    answer = await elbv2.describe_target_health(TargetGroupArn=arn)
    return [
        ((item["Target"]["Id"], item["Target"].get("Port")), item["TargetHealth"]["State"])
        for item in answer["TargetHealthDescriptions"]
    ]


async def _swapped(elbv2: Any, p: Elbv2SwapTargets) -> bool:
    """Every registered target healthy, every deregistered one gone or draining."""
    health = await _health(elbv2, p.target_group_arn)
    return all(
        any(t.matches(target) and state == "healthy" for target, state in health)
        for t in p.to_register
    ) and not any(
        t.matches(target) and state != "draining"
        for target, state in health
        for t in p.to_deregister
    )


async def _put_back(elbv2: Any, p: Elbv2SwapTargets, prior: State) -> None:
    """Re-register the prior targets; deregister those ``p`` added (others' stay)."""
    wanted = {_registered(target) for target in prior_value(prior, "targets", list)}
    live = set(await _live(elbv2, p))
    added = {target for target in live if any(t.matches(target) for t in p.to_register)}
    await _change_targets(elbv2, p.target_group_arn, sorted(wanted - live), sorted(added - wanted))


async def _live(elbv2: Any, p: Elbv2SwapTargets) -> list[Registered]:
    """Targets registered and not on their way out (draining)."""
    health = await _health(elbv2, p.target_group_arn)
    return sorted(target for target, state in health if state != "draining")


def _swaps(p: Elbv2SwapTargets | Elbv2MoveTargets) -> tuple[Elbv2SwapTargets, ...]:
    """The swaps ``p`` is made of, in the order they are applied."""
    return p.halves() if isinstance(p, Elbv2MoveTargets) else (p,)


async def _swap_now(elbv2: Any, p: Elbv2SwapTargets) -> State:
    """Register and deregister what ``p`` still needs; the group's targets after."""
    adding, removing = _swap(p, await _live(elbv2, p))
    await _change_targets(elbv2, p.target_group_arn, adding, removing)
    return await _targets(elbv2, p)


async def _targets(elbv2: Any, p: Elbv2SwapTargets) -> State:
    """The targets registered in ``p``'s group, as snapshots and apply report them."""
    return {"targets": _listed(await _live(elbv2, p))}


def _swap(p: Elbv2SwapTargets, live: list[Registered]) -> tuple[list[Registered], list[Registered]]:
    """What to register and what to deregister for ``p``, given the live targets."""
    adding = [(t.id, t.port) for t in p.to_register if not any(t.matches(r) for r in live)]
    removing = [target for target in live if any(t.matches(target) for t in p.to_deregister)]
    return adding, removing


async def _change_targets(
    elbv2: Any, arn: str, adding: list[Registered], removing: list[Registered]
) -> None:
    if adding:
        await elbv2.register_targets(TargetGroupArn=arn, Targets=_api_targets(adding))
    if removing:
        await elbv2.deregister_targets(TargetGroupArn=arn, Targets=_api_targets(removing))


def _api_targets(targets: list[Registered]) -> list[dict[str, Any]]:
    return [{"Id": id_} if port is None else {"Id": id_, "Port": port} for id_, port in targets]


def _listed(targets: list[Registered]) -> list[dict[str, Any]]:
    return [{"id": id_, "port": port} for id_, port in targets]


def _registered(item: Any) -> Registered:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise ActuatorError(
            f"the snapshot to restore lists a bad target: {item!r}", retryable=False
        )
    return item["id"], item.get("port")


def _label(target: Registered) -> str:
    return target[0] if target[1] is None else f"{target[0]}:{target[1]}"


def _client_error(target: str, exc: ClientError) -> ActuatorError:
    error = exc.response.get("Error", {})
    code, detail = error.get("Code", "Unknown"), error.get("Message", "no message")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLING:
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        message = f"{target}: AWS throttled {exc.operation_name} ({code}) after {attempts} attempts"
        return ActuatorError(message, retryable=True)
    message = f"{target}: {exc.operation_name} failed: {code}: {detail}"
    return ActuatorError(message, retryable=status >= 500)
