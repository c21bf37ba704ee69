"""Setting up a drill: the daemon's config made to run the drill (on the sandbox, or on the
real environment a config watches), the sandbox with the drill's services and AWS proxy, and
the daemon itself, in-process, with the drill's alerts."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from srd.config import ConfigError, ConfigIssue, Mode
from srd.config.durations import parse_duration
from srd.config.ha import HaConfig
from srd.config.server import ServerConfig
from srd.evaluation.recovery import RecoveryPack
from srd.failover.runbooks import load_runbooks
from srd.failover.stage import FailoverStage
from srd.journal import journal_path
from srd.runtime import Daemon, DaemonMetrics, Setup, load_setup
from srd.simulate.drill import Drill, alert_group, resolve_runbooks
from srd.simulate.faults import REAL_KINDS, Target
from srd.simulate.sandbox import FakeService, Sandbox, running_sandbox
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.cloud import DR_ADDRESS, DR_TARGET, PRIMARY_TARGET
from srd.simulate.sandbox.exporters import serve

BACKUP_LISTING = 300.0
"""Drill seconds at least between listings of the sandbox's backups: new ones come every
10 minutes, and a listing of moto's S3 is the costliest thing a drill does."""
MIN_STEP_TIMEOUT = 5.0
"""Wall seconds at least for a scaled step timeout or health deadline: real API calls and the
executor's 2 s convergence polls do not shrink with the time scale."""
TOKEN_ENV = "SRD_DRILL_TOKEN"  # noqa: S105 - the name of a variable, not a secret


def _scale_runbook(value: Any, scale: float, key: str = "") -> Any:
    """Durations of a runbook in drill time → wall time. Step timeouts, settle, deadline,
    cooldown and delay steps divide by the scale; an HTTP check's poll interval too (at least
    0.5 s), and its request timeout stays a real-world one (at most the interval: polls must
    not overlap)."""
    if isinstance(value, dict):
        if key == "http":
            check = dict(value)
            interval = max(parse_duration(check.get("interval", 10.0)) / scale, 0.5)
            check["interval"] = interval
            check["timeout"] = min(parse_duration(check.get("timeout", 5.0)), interval)
            return check
        return {k: _scale_runbook(v, scale, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_scale_runbook(v, scale, key) for v in value]
    if key in ("timeout", "deadline"):
        # API calls and their convergence polls take real time; a step cannot be shorter.
        return max(parse_duration(value) / scale, MIN_STEP_TIMEOUT)
    if key in ("settle", "cooldown", "delay"):
        return parse_duration(value) / scale
    return value


def sandbox_vars(sandbox: Sandbox, urls: dict[str, str]) -> dict[str, str]:
    """What a drill's runbooks may use as ${var}: the sandbox's AWS names and service URLs."""
    values = {
        "dr_address": DR_ADDRESS,
        "primary_target": PRIMARY_TARGET,
        "dr_target": DR_TARGET,
    }
    if sandbox.cloud is not None:
        values |= {
            "zone_id": sandbox.cloud.zone_id,
            "target_group_arn": sandbox.cloud.target_group_arn,
            "dr_target_group_arn": sandbox.cloud.dr_target_group_arn,
            "bucket": sandbox.cloud.bucket,
        }
    for name, url in urls.items():
        values[name.replace("-", "_") + "_url"] = url
    return values


def write_drill_config(
    drill: Drill,
    sandbox: Sandbox,
    service_urls: dict[str, str],
    aws_url: str | None,
    scale: float,
    mode: str,
) -> Path:
    """The sandbox's config, made to run the drill: the drill's runbooks, armed (or dry-run),
    every probe and the evaluation every ``probe_interval`` of drill time (virtual: a probe's
    timeout is the interval's, since on the loop's clock a fake answers at once), AWS through
    the delaying proxy, any port."""
    state_dir = sandbox.config_path.parent
    config: dict[str, Any] = yaml.safe_load(sandbox.config_path.read_text(encoding="utf-8"))
    values = sandbox_vars(sandbox, service_urls)
    runbooks = [_scale_runbook(r, scale) for r in resolve_runbooks(drill, drill.name, values)]
    runbook_path = state_dir / "drill-runbooks.yaml"
    runbook_path.write_text(yaml.safe_dump({"runbooks": runbooks}, sort_keys=False))
    config["mode"] = mode
    config["server"] = {"listen": "127.0.0.1:0"}
    interval = drill.probe_interval
    config.setdefault("evaluation", {})["interval"] = interval
    _list_backups_every(state_dir / "rules" / "disaster_recovery.yaml", BACKUP_LISTING)
    probes = config.setdefault("probes", {})
    http = probes.setdefault("http", [])
    for target in [*http, *probes.get("substrate", [])]:
        target["interval"], target["timeout"] = interval, interval * 0.8
    for target in probes.get("exporter", []):
        target["interval"] = interval
    known = {t["name"] for t in http}
    for name, url in service_urls.items():
        if name not in known:
            http.append(
                {
                    "name": name,
                    "url": f"{url}/health",
                    "interval": interval,
                    "timeout": interval * 0.8,
                }
            )
    if aws_url is not None and "aws" in config.get("actuators", {}):
        config["actuators"]["aws"]["endpoint_url"] = aws_url
    # The leader's looks at the journal for executions to take up: one replica, no hurry.
    lease = int(3 * interval) + 1
    config["ha"] = {
        "retry_period": interval,
        "renew_deadline": 2 * interval,
        "lease_duration": lease,
    }
    config["failover"] = {
        "runbooks": [str(runbook_path)],
        "auth": {"bearer_token": {"env": TOKEN_ENV}},
        "cooldown": 0,
    }
    os.environ.setdefault(TOKEN_ENV, secrets.token_hex(16))
    path = state_dir / "drill-srd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _list_backups_every(pack: Path, seconds: float) -> None:
    if not pack.exists():
        return
    data = yaml.safe_load(pack.read_text(encoding="utf-8"))
    s3 = data.get("srd", {}).get("s3")
    if s3 is not None:
        s3["interval"] = max(parse_duration(s3.get("interval", 0)), seconds)
        pack.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def real_setup(drill: Drill, config_path: Path, state_dir: Path, scale: float, mode: str) -> Setup:
    """The config at ``config_path`` made to run the drill on the environment it watches: its
    probes, actuators and rule packs; the drill's runbooks (their own ``vars``); the drill's
    journal in ``state_dir``; a server on any loopback port; no leader election (a drill must
    not take the production Lease). ConfigError when ``mode`` is armed and the config is not."""
    setup = load_setup(config_path)
    config = setup.config
    if mode == "armed" and config.mode is not Mode.ARMED:
        reason = "--mode armed on a real environment needs mode: armed in this config"
        raise ConfigError([ConfigIssue(str(config_path), "mode", reason)])
    runbook_path = state_dir / "drill-runbooks.yaml"
    runbooks = [_scale_runbook(r, scale) for r in resolve_runbooks(drill, drill.name, {})]
    runbook_path.write_text(yaml.safe_dump({"runbooks": runbooks}, sort_keys=False))
    slos = [slo.name for pack in setup.packs for slo in pack.slos]
    names = config.probes.target_names()
    loaded = tuple(load_runbooks([runbook_path], setup.actuators, names, slos))
    failover = config.failover.model_copy(update={"runbooks": [runbook_path], "cooldown": 0.0})
    config = config.model_copy(
        update={
            "mode": Mode(mode),
            "state_dir": state_dir,
            "server": ServerConfig(listen="127.0.0.1:0"),
            "failover": failover,
            "ha": HaConfig(),
        }
    )
    return replace(setup, config=config, runbooks=loaded)


def recovery_pack(setup: Setup) -> RecoveryPack | None:
    return next((p.recovery for p in setup.packs if p.recovery is not None), None)


def check_faults(drill: Drill, path: Path, *, real: bool) -> None:
    """srd injects nothing into a real environment (the operator does: ``manual`` faults),
    and on the sandbox no operator is there to inject a manual one."""
    issues = []
    for i, fault in enumerate(drill.faults):
        if real and fault.kind not in REAL_KINDS:
            reason = (
                f"{fault.kind} cannot be injected into a real environment; write it as kind "
                "manual with the operator's instructions (srd then waits for the symptom)"
            )
        elif not real and fault.kind in REAL_KINDS:
            reason = "a manual fault needs --target real: on the sandbox nobody injects it"
        else:
            continue
        issues.append(ConfigIssue(str(path), f"faults.{i}.kind", reason))
    if issues:
        raise ConfigError(issues)


async def _reset_moto(url: str) -> None:
    """moto keeps its state per process, not per server: without a reset the next drill's
    sandbox (``--all``) would find the last one's bucket, zone and target group."""
    async with aiohttp.ClientSession() as session, session.post(f"{url}/moto-api/reset") as reply:
        reply.raise_for_status()


@dataclass
class Environment:
    """What a drill runs on: the daemon's setup, what faults act on, and where to look."""

    setup: Setup
    target: Target
    pack: RecoveryPack | None
    endpoints: dict[str, str]
    """The sandbox's URLs (for ``--hold``); empty on a real environment."""
    journal_dir: Path
    home_journal: str | None = None
    """A real environment's own journal (its srd reads drill records there); None: the
    sandbox, whose drill journal stays in the report directory."""
    home_password: str | None = None


@asynccontextmanager
async def sandbox_environment(
    drill: Drill, state_dir: Path, scale: float, mode: str
) -> AsyncIterator[Environment]:
    """The sandbox, running in ``state_dir`` with the drill's services, AWS through a delaying
    proxy, and the daemon's config for the drill; torn down (moto reset) after."""
    async with AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(running_sandbox(state_dir, "127.0.0.1:0"))
        if sandbox.cloud is not None:
            stack.push_async_callback(_reset_moto, sandbox.cloud.url)
        urls: dict[str, str] = {"web-viewer": sandbox.urls["web-viewer"]}
        services = dict(sandbox.services)
        for name in drill.services:
            if name in sandbox.services:  # the sandbox's own (web-creator): its probe sees it
                urls[name] = sandbox.urls[name]
                continue
            service = FakeService()
            services[name] = service
            urls[name] = await stack.enter_async_context(serve(service.app()))
        proxy = AwsProxy(sandbox.cloud.url) if sandbox.cloud is not None else None
        aws_url = await stack.enter_async_context(proxy.serving()) if proxy is not None else None
        config_path = write_drill_config(drill, sandbox, urls, aws_url, scale, mode)
        setup = load_setup(config_path)
        target = Target(
            sandbox.chain,
            sandbox.nodes,
            services,
            sandbox.cloud,
            proxy,
            scale,
            sandbox.kubernetes,
            journal_path(setup.config.failover.journal or setup.config.state_dir),
        )
        endpoints = dict(sorted({**sandbox.urls, **urls}.items()))
        if sandbox.cloud is not None:
            endpoints["aws (moto)"] = sandbox.cloud.url
        yield Environment(setup, target, recovery_pack(setup), endpoints, config_path.parent)


def real_environment(
    drill: Drill, config_path: Path, state_dir: Path, scale: float, mode: str
) -> Environment:
    """The environment ``config_path`` watches: srd injects nothing there."""
    home = load_setup(config_path).config
    failover = home.failover
    password = failover.journal_password.value if failover.journal_password else None
    setup = real_setup(drill, config_path, state_dir, scale, mode)
    empty = Target(None, {}, {}, None, None, scale)
    journal = str(failover.journal or home.state_dir)
    return Environment(setup, empty, recovery_pack(setup), {}, state_dir, journal, password)


@asynccontextmanager
async def running_daemon(
    setup: Setup, drill: Drill, scale: float, log_level: str, on_sigint: Callable[[], None]
) -> AsyncIterator[Daemon]:
    """The real daemon, in-process, with the drill's alerts, its executions tagged as the
    drill's; SIGINT goes to ``on_sigint`` while it runs. Stopped after."""
    daemon = Daemon(
        setup,
        metrics=DaemonMetrics(),
        log_level=log_level,
        extra_groups=[alert_group(drill, scale)],
    )
    task = asyncio.create_task(daemon.run(), name="drill-daemon")
    try:
        while daemon.failover is None and not task.done():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.05)
        if task.done():
            raise RuntimeError(f"the daemon stopped at start (exit {task.result()})")
        # The daemon took SIGINT for itself; during a drill it interrupts the drill.
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
        stage = failover_stage(daemon)
        # The drill's operator approves through this replica, which wakes the waiter at once:
        # reading the journal for approvals from elsewhere is needless (and each read holds
        # the virtual clock while the journal's thread answers).
        stage.guards.approvals.poll = drill.probe_interval
        stage.dispatcher.tags = {
            "kind": "drill",
            "drill": drill.name,
            "time_scale": scale,
        }
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, timeout=30)


def failover_stage(daemon: Daemon) -> FailoverStage:
    if daemon.failover is None:
        raise RuntimeError("the daemon's failover stage is not open")
    return daemon.failover
