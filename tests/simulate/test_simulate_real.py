"""``srd simulate --target real``: the read-only preflight and a dry-run drill, against a
running sandbox standing in for the real environment (its fake Kubernetes API answers
SelfSubjectAccessReviews from an allow list; its AWS is a moto server behind the AwsProxy,
which answers IAM policy simulations from an allow list)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import yaml

from srd.actuators.base import Actuator, PermissionChecker
from srd.config import ConfigError
from srd.journal import SqliteJournal
from srd.runtime import Setup
from srd.simulate.drill import Drill, FaultSpec, load_drill
from srd.simulate.preflight import PreflightCheck, preflight
from srd.simulate.progress import Progress
from srd.simulate.result import DrillResult
from srd.simulate.runner import DrillOptions, run_drill
from srd.simulate.sandbox import Sandbox, running_sandbox
from srd.simulate.sandbox.kubernetes import DR, replicas
from srd.simulate.setup import real_setup
from srd.simulate.verdict import EXIT_PREFLIGHT

SCALE_UP = {
    "name": "scale_backup_up",
    "action": {
        "actuator": "kubernetes",
        "action": "scale_deployment",
        "params": {"namespace": DR, "name": "web-viewer-backup", "replicas": 3},
    },
    "timeout": "1m",
}


def drill_file(tmp_path: Path, box: Sandbox, **changes: Any) -> Path:
    assert box.cloud is not None
    dns = {
        "name": "dns_to_dr",
        "action": {
            "actuator": "aws",
            "action": "route53_upsert",
            "params": {
                "hosted_zone_id": "${zone_id}",
                "name": "web-viewer.vilokanam.com",
                "type": "A",
                "ttl": 300,
                "values": ["198.51.100.20"],
            },
        },
        "timeout": "1m",
    }
    drill: dict[str, Any] = {
        "scenario": "complete_data_center_outage",
        "steady_state": {"probes": ['srd_probe_up{target="web-viewer"} == 1'], "within": "30s"},
        "alerts": [
            {
                "name": "DataCenterDown",
                "expr": 'srd_probe_up{target="web-viewer"} == 0',
                "labels": {"service": "web-viewer"},
            }
        ],
        "runbooks": [
            {
                "name": "failover",
                "match": ['alertname="DataCenterDown"'],
                "vars": {"zone_id": box.cloud.zone_id},
                "health": {"http": {"url": box.urls["web-viewer"] + "/health"}},
                "steps": [SCALE_UP, dns],
            }
        ],
        "faults": [
            {
                "id": "site-down",
                "kind": "manual",
                "params": {
                    "instructions": "stop the web-viewer ingress",
                    "undo": "start the web-viewer ingress",
                },
            }
        ],
        "expect": {"runbook": "failover", "objectives": []},
        "sustain": "5s",
        "deadline": "2m",
    } | changes
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(drill))
    return path


@pytest.fixture
async def environment(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "env", "127.0.0.1:0", 0.2) as box:
        assert box.cloud is not None
        try:
            yield box
        finally:
            async with aiohttp.ClientSession() as session:
                await session.post(f"{box.cloud.url}/moto-api/reset")


async def preflight_closing(setup: Setup, drill: Drill) -> list[PreflightCheck]:
    """The preflight of ``drill``, its actuators' clients closed after it."""
    try:
        return await preflight(setup, drill, list(setup.runbooks))
    finally:
        for actuator in setup.actuators.values():
            await actuator.close()


async def preflight_failed(
    path: Path, out: Path, environment: Sandbox
) -> tuple[DrillResult, dict[str, PreflightCheck]]:
    """Run the drill on ``environment`` as a real target, whose preflight must fail: the
    result and the failed checks by name."""
    result = await run_drill(
        path, report_dir=out, options=DrillOptions(real_config=environment.config_path), quiet=True
    )
    assert result.exit_code == EXIT_PREFLIGHT
    return result, {c.name: c for c in result.preflight if not c.ok}


async def test_preflight_passes_on_a_reachable_permitted_environment_and_changes_nothing(
    tmp_path: Path, environment: Sandbox
) -> None:
    drill = load_drill(drill_file(tmp_path, environment))
    setup = real_setup(drill, environment.config_path, tmp_path, 1.0, "dry-run")
    revision = environment.kubernetes.store.revision
    checks = await preflight_closing(setup, drill)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert {c.kind for c in checks} == {"probe", "check", "read", "permission"}
    assert "probe web-viewer" in [c.name for c in checks]
    permitted = {c.name: c.detail for c in checks if c.kind == "permission"}
    assert permitted["failover/dns_to_dr: aws route53_upsert"] == "every call allowed"
    assert environment.kubernetes.store.revision == revision
    assert environment.aws is not None
    assert "SimulatePrincipalPolicy" in environment.aws.calls
    assert "ChangeResourceRecordSets" not in environment.aws.calls


async def test_an_action_on_what_an_earlier_step_reads_is_checked_when_it_runs_not_before(
    tmp_path: Path, environment: Sandbox
) -> None:
    detect = {
        "name": "detect",
        "action": {
            "actuator": "kubernetes",
            "action": "detect_colour",
            "params": {"namespace": "vilokanam-web", "service": "web-service"},
        },
        "bind": {"idle": "idle"},
    }
    scale = {
        "name": "scale_idle",
        "action": {
            "actuator": "kubernetes",
            "action": "scale_deployment",
            "params": {"namespace": "vilokanam-web", "name": "web-${idle}", "replicas": 3},
        },
    }
    base = yaml.safe_load(drill_file(tmp_path, environment).read_text())
    runbook = base["runbooks"][0] | {"steps": [detect, scale]}
    drill = load_drill(drill_file(tmp_path, environment, runbooks=[runbook]))
    setup = real_setup(drill, environment.config_path, tmp_path, 1.0, "dry-run")
    checks = {(c.kind, c.name): c for c in await preflight_closing(setup, drill)}
    assert checks["read", "failover/detect: kubernetes detect_colour"].detail == "readable"
    unchecked = [c for (_, name), c in checks.items() if name.startswith("failover/scale_idle")]
    assert [(c.kind, c.ok, c.detail) for c in unchecked] == [
        ("read", True, "not checked: its parameters use ['idle'], read when the runbook runs")
    ]


async def test_a_denied_permission_and_an_unreadable_zone_fail_the_preflight_naming_them(
    tmp_path: Path, environment: Sandbox
) -> None:
    environment.kubernetes.allowed = {
        ("get", "deployments/scale"),
        ("get", "deployments"),
    }
    path = drill_file(tmp_path, environment)
    drill = yaml.safe_load(path.read_text())
    drill["runbooks"][0]["vars"]["zone_id"] = "Z0NOSUCHZONE"
    path.write_text(yaml.safe_dump(drill))

    result, failed = await preflight_failed(path, tmp_path / "out", environment)

    denied = failed["failover/scale_backup_up: patch deployments/scale in vilokanam-dr"]
    assert "grant srd's credentials RBAC" in denied.fix and "[patch]" in denied.fix
    unreadable = failed["failover/dns_to_dr: aws route53_upsert"]
    assert "Z0NOSUCHZONE" in unreadable.detail
    assert "actuators.aws" in unreadable.fix
    assert len(failed) == 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| failover/scale_backup_up: patch deployments/scale in vilokanam-dr |" in md
    assert result.executions == []  # nothing ran


async def test_an_aws_permission_the_principal_lacks_fails_the_preflight_with_the_grant(
    tmp_path: Path, environment: Sandbox
) -> None:
    assert environment.aws is not None and environment.cloud is not None
    environment.aws.allowed = {
        ("iam:SimulatePrincipalPolicy", "*"),
        ("route53:ListResourceRecordSets", "*"),
        ("route53:GetChange", "*"),
    }
    path = drill_file(tmp_path, environment)

    result, failed = await preflight_failed(path, tmp_path / "out", environment)

    zone = f"arn:aws:route53:::hostedzone/{environment.cloud.zone_id}"
    assert list(failed) == [f"failover/dns_to_dr: route53:ChangeResourceRecordSets on {zone}"]
    [refused] = failed.values()
    assert refused.kind == "permission"
    assert refused.detail.endswith("(implicitDeny)")
    assert refused.fix.startswith("grant arn:aws:sts::123456789012:user/moto IAM:")
    assert f'"Action": "route53:ChangeResourceRecordSets", "Resource": "{zone}"' in refused.fix
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"| failover/dns_to_dr: route53:ChangeResourceRecordSets on {zone} |" in md
    assert result.executions == []


async def test_a_refused_permission_simulation_fails_the_preflight_saying_what_srd_needs(
    tmp_path: Path, environment: Sandbox
) -> None:
    assert environment.aws is not None
    environment.aws.allowed = {("route53:*", "*")}
    drill = load_drill(drill_file(tmp_path, environment))
    setup = real_setup(drill, environment.config_path, tmp_path, 1.0, "dry-run")
    checks = await preflight_closing(setup, drill)

    [failed] = [c for c in checks if not c.ok]
    assert (failed.kind, failed.name) == ("permission", "failover/dns_to_dr: aws route53_upsert")
    assert "SimulatePrincipalPolicy failed: AccessDenied" in failed.detail
    assert failed.fix.startswith("grant iam:SimulatePrincipalPolicy on srd's own principal")


class WithoutPermissionCheck:
    """An actuator as a plug-in without the optional ``denied``/``grant`` would be."""

    def __init__(self, inner: Actuator) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("denied", "grant"):
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_an_actuator_that_cannot_check_permissions_passes_saying_they_were_not_checked(
    tmp_path: Path, environment: Sandbox
) -> None:
    drill = load_drill(drill_file(tmp_path, environment))
    setup = real_setup(drill, environment.config_path, tmp_path, 1.0, "dry-run")
    plugin = cast(Actuator, WithoutPermissionCheck(setup.actuators["kubernetes"]))
    assert not isinstance(plugin, PermissionChecker)
    setup = replace(setup, actuators={**setup.actuators, "kubernetes": plugin})
    environment.kubernetes.allowed = set()  # would fail, if it were asked
    checks = await preflight_closing(setup, drill)

    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    [unchecked] = [c for c in checks if c.kind == "permission" and "kubernetes" in c.name]
    assert unchecked.detail.startswith("not checked: the kubernetes actuator cannot say")


class Operator:
    """The human at a real drill: reads the progress lines, breaks and repairs the site."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)
        if "operator, inject site-down now: stop the web-viewer ingress" in text:
            self.box.services["web-viewer"].healthy = False
        elif "operator, undo site-down now" in text:
            self.box.services["web-viewer"].healthy = True

    def flush(self) -> None:
        pass


async def test_a_dry_run_drill_on_a_real_target_journals_a_plan_and_changes_nothing(
    tmp_path: Path, environment: Sandbox
) -> None:
    path = drill_file(tmp_path, environment)
    revision = environment.kubernetes.store.revision
    operator = Operator(environment)
    out = tmp_path / "out"

    result = await run_drill(
        path,
        report_dir=out,
        options=DrillOptions(real_config=environment.config_path),
        progress=Progress("real", stream=operator),
    )

    assert result.exit_code == 0, "".join(operator.lines)
    assert (result.target, result.mode, result.scale) == ("real", "dry-run", 1.0)
    [execution] = result.executions
    assert execution["state"] == "dry_run"
    assert [s["result"] for s in execution["steps"]] == ["planned", "planned"]
    assert environment.kubernetes.store.revision == revision
    assert replicas(environment.kubernetes, DR, "web-viewer-backup") == 0
    async with await SqliteJournal.open(out / "state" / "journal.sqlite3", create=False) as j:
        steps = await j.steps(execution["id"])
    plans = [s.detail["changes"] for s in steps if s.phase == "ended" and s.detail]
    assert plans[0] == ["deployment vilokanam-dr/web-viewer-backup replicas: 0 → 3"]
    assert result.rollback["steady_state_restored"] is True
    assert result.faults[0].reverted_by == "rollback"


async def test_a_real_target_refuses_injected_faults_and_armed_mode_the_config_lacks(
    tmp_path: Path, environment: Sandbox
) -> None:
    fault = {"kind": "service_failing", "params": {"service": "web-viewer"}}
    path = drill_file(tmp_path, environment, faults=[fault])
    with pytest.raises(ConfigError, match="cannot be injected into a real environment"):
        await run_drill(
            path,
            report_dir=tmp_path / "a",
            options=DrillOptions(real_config=environment.config_path),
        )
    path = drill_file(tmp_path, environment)
    with pytest.raises(ConfigError, match="needs mode: armed in this config"):
        await run_drill(
            path,
            report_dir=tmp_path / "b",
            options=DrillOptions(real_config=environment.config_path, mode="armed"),
        )
    with pytest.raises(ConfigError, match="a manual fault needs --target real"):
        await run_drill(path, report_dir=tmp_path / "c")


def test_the_documented_real_target_faults_are_a_valid_manual_fault() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "simulate.md").read_text()
    [block] = [
        b for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if b.startswith("faults:")
    ]
    faults = [FaultSpec.model_validate(f) for f in yaml.safe_load(block)["faults"]]
    assert [f.kind for f in faults] == ["manual"]
