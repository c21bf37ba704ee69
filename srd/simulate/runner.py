"""``srd simulate``: run a drill on the built-in sandbox with the real daemon pipeline, or on
a real environment (``--target real``) after a read-only preflight.

The daemon (``srd.runtime.Daemon``) runs in-process against the sandbox with the sandbox's
config plus the drill's alert rules and runbooks — probes, evaluation, failover, actuators and
the journal are the real ones. The runner only injects faults, plays the operator at approval
steps, watches the registry and the journal, and writes the report from the journal's
timestamps.

Exit codes (documented in docs/simulate.md):
0 objectives met; 2 invalid drill; 3 an objective breached (or the expected runbook did not
run and succeed); 4 steady state not restored after rollback; 5 aborted (a stop condition
tripped, or the steady state did not hold before the faults); 6 interrupted (SIGINT; the
rollback still runs); 7 the preflight of a real environment failed (nothing ran).

On a real environment srd injects nothing: only ``manual`` faults are allowed, which the
operator injects when told (and undoes at rollback) while srd watches for the symptom. The
daemon runs with the given config's probes, actuators and rule packs, the drill's alerts and
runbooks, its own journal in the report directory, and no leader election; in ``dry-run``
(the default) the runbook journals its plan and changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

from srd.config import ConfigError, ConfigIssue, Mode
from srd.config.durations import format_duration, parse_duration
from srd.config.ha import HaConfig
from srd.config.server import ServerConfig
from srd.evaluation.recovery import RecoveryPack, RpoStatus, measure_rto
from srd.failover.intake import iso_utc
from srd.failover.runbooks import load_runbooks
from srd.failover.stage import FailoverStage
from srd.journal import ExecutionRecord, Journal, open_journal
from srd.metrics import Metrics
from srd.probes.backups import BackupChecker
from srd.runtime import Daemon, Setup, load_setup
from srd.simulate.drill import Condition, Drill, Targets, alert_group, load_drill, targets
from srd.simulate.faults import KINDS, REAL_KINDS, Revert, Target
from srd.simulate.preflight import PreflightCheck, preflight
from srd.simulate.report import write_reports
from srd.simulate.sandbox import FakeService, Sandbox, running_sandbox
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.cloud import PRIMARY_TARGET
from srd.simulate.sandbox.exporters import serve

EXIT_MET = 0
EXIT_INVALID = 2
EXIT_BREACHED = 3
EXIT_NOT_RESTORED = 4
EXIT_ABORTED = 5
EXIT_INTERRUPTED = 6
EXIT_PREFLIGHT = 7
Outcome = Literal["met", "breached", "not_restored", "aborted", "interrupted", "preflight_failed"]
EXIT_CODES: dict[Outcome, int] = {
    "met": EXIT_MET,
    "breached": EXIT_BREACHED,
    "not_restored": EXIT_NOT_RESTORED,
    "aborted": EXIT_ABORTED,
    "interrupted": EXIT_INTERRUPTED,
    "preflight_failed": EXIT_PREFLIGHT,
}
TargetKind = Literal["sandbox", "real"]

TICK = 0.1
"""Wall seconds between the runner's looks at the registry and the journal."""
PROBE_INTERVAL = 0.5
"""Wall seconds between probes of the sandbox's HTTP targets and between evaluations during
a drill: fine enough to see a fault within a second, coarse enough for a laptop."""
MIN_STEADY_WAIT = 20.0
"""Wall seconds at least to reach the steady state: the chain probes need a few blocks."""
MIN_STEP_TIMEOUT = 5.0
"""Wall seconds at least for a scaled step timeout or health deadline: real API calls and the
executor's 2 s convergence polls do not shrink with the time scale."""
DR_ADDRESS = "198.51.100.20"
DR_TARGET = "10.0.2.10"
TOKEN_ENV = "SRD_DRILL_TOKEN"  # noqa: S105 - the name of a variable, not a secret


class Progress:
    """Event lines on stderr; on a TTY also a live status line under them."""

    def __init__(self, name: str, *, stream: Any = None, quiet: bool = False) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.quiet = quiet
        self._status = ""

    def event(self, text: str) -> None:
        if self.quiet:
            return
        clear = "\r\x1b[K" if self.tty and self._status else ""
        self.stream.write(f"{clear}[{self.name}] {text}\n")
        if self.tty and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def status(self, text: str) -> None:
        if self.quiet or not self.tty:
            return
        self._status = f"[{self.name}] {text}"
        self.stream.write(f"\r\x1b[K{self._status}")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._status and not self.quiet:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._status = ""


@dataclass
class Event:
    at: float
    event: str
    label: str
    source: Literal["runner", "registry", "journal"]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultRun:
    id: str
    kind: str
    params: dict[str, Any]
    at: float
    repaired_by: str | None
    injected_at: float | None = None
    reverted_at: float | None = None
    reverted_by: str | None = None
    error: str | None = None
    revert: Revert | None = None


@dataclass
class DrillResult:
    drill: Drill
    path: Path
    report_dir: Path
    scale: float
    mode: str
    rollback_policy: str
    targets: Targets
    started_at: float
    ended_at: float = 0.0
    outcome: Outcome = "met"
    events: list[Event] = field(default_factory=list)
    faults: list[FaultRun] = field(default_factory=list)
    stop: dict[str, Any] | None = None
    rollback: dict[str, Any] = field(default_factory=dict)
    rpo: RpoStatus | None = None
    executions: list[dict[str, Any]] = field(default_factory=list)
    rto: dict[str, Any] = field(default_factory=dict)
    objectives: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recorded_rto: float | None = None
    target: TargetKind = "sandbox"
    preflight: list[PreflightCheck] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def add(self, event: Event) -> None:
        self.events.append(event)


# --- setting up the daemon on the sandbox ---------------------------------------------------


def _scale_runbook(value: Any, scale: float, key: str = "") -> Any:
    """Durations of a runbook in drill time → wall time. Step timeouts, settle, deadline and
    cooldown divide by the scale; an HTTP check's poll interval too (at least 0.5 s), and its
    request timeout stays a real-world one (at most the interval: polls must not overlap)."""
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
    if key in ("settle", "cooldown"):
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
    fast probes and evaluation, AWS through the delaying proxy, any port."""
    state_dir = sandbox.config_path.parent
    config: dict[str, Any] = yaml.safe_load(sandbox.config_path.read_text(encoding="utf-8"))
    values = sandbox_vars(sandbox, service_urls)
    runbooks = []
    for raw in drill.runbooks:
        item = dict(raw)
        item["vars"] = {**values, **dict(item.get("vars") or {})}
        runbooks.append(_scale_runbook(item, scale))
    runbook_path = state_dir / "drill-runbooks.yaml"
    runbook_path.write_text(yaml.safe_dump({"runbooks": runbooks}, sort_keys=False))
    config["mode"] = mode
    config["server"] = {"listen": "127.0.0.1:0"}
    config.setdefault("evaluation", {})["interval"] = PROBE_INTERVAL
    probes = config.setdefault("probes", {})
    http = probes.setdefault("http", [])
    for target in http:
        target["interval"], target["timeout"] = PROBE_INTERVAL, PROBE_INTERVAL * 0.8
    for target in probes.get("substrate", []):
        target["interval"], target["timeout"] = PROBE_INTERVAL, PROBE_INTERVAL * 0.8
    known = {t["name"] for t in http}
    for name, url in service_urls.items():
        if name not in known:
            http.append(
                {
                    "name": name,
                    "url": f"{url}/health",
                    "interval": PROBE_INTERVAL,
                    "timeout": PROBE_INTERVAL * 0.8,
                }
            )
    if aws_url is not None and "aws" in config.get("actuators", {}):
        config["actuators"]["aws"]["endpoint_url"] = aws_url
    config["failover"] = {
        "runbooks": [str(runbook_path)],
        "auth": {"bearer_token": {"env": TOKEN_ENV}},
        "cooldown": 0,
    }
    os.environ.setdefault(TOKEN_ENV, secrets.token_hex(16))
    path = state_dir / "drill-srd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


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
    runbooks = [_scale_runbook(dict(raw), scale) for raw in drill.runbooks]
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


def _recovery_pack(setup: Setup) -> RecoveryPack | None:
    return next((p.recovery for p in setup.packs if p.recovery is not None), None)


# --- the drill ------------------------------------------------------------------------------


class DrillRun:
    def __init__(
        self,
        drill: Drill,
        path: Path,
        *,
        report_dir: Path,
        scale: float,
        rollback: bool,
        mode: str,
        progress: Progress,
        log_level: str = "error",
        real_config: Path | None = None,
        hold: bool = False,
    ) -> None:
        self.drill = drill
        self.hold = hold
        """On the sandbox: after the drill and its reports, keep the sandbox up until SIGINT."""
        self.real_config = real_config
        """The config of the real environment to drill on; None: the sandbox."""
        self.scale = scale
        self.rollback_enabled = rollback and drill.rollback == "always"
        self.mode = mode
        self.progress = progress
        self.log_level = log_level
        self.interrupted = asyncio.Event()
        self.result = DrillResult(
            drill,
            path,
            report_dir,
            scale,
            mode,
            "always" if self.rollback_enabled else "never",
            Targets(0.0, 0.0),
            time.time(),
            target="real" if real_config is not None else "sandbox",
        )
        self.stop_conditions = [Condition.parse(t) for t in drill.stop_conditions]
        self.steady = [Condition.parse(t) for t in drill.steady_state.probes]
        self.drill_alerts = {a.name for a in drill.alerts}

    def wall(self, drill_seconds: float) -> float:
        return drill_seconds / self.scale

    def note(
        self,
        event: str,
        label: str,
        source: Literal["runner", "registry", "journal"] = "runner",
        at: float | None = None,
        **detail: Any,
    ) -> None:
        self.result.add(Event(at if at is not None else time.time(), event, label, source, detail))
        self.progress.event(label)

    async def run(self) -> DrillResult:
        result = self.result
        state_dir = result.report_dir / "state"
        if state_dir.exists():
            shutil.rmtree(state_dir)
        state_dir.mkdir(parents=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._sigint)
        try:
            if self.real_config is not None:
                await self._real(self.real_config, state_dir)
                return result
            async with AsyncExitStack() as stack:
                sandbox = await stack.enter_async_context(running_sandbox(state_dir, "127.0.0.1:0"))
                if sandbox.cloud is not None:
                    stack.push_async_callback(_reset_moto, sandbox.cloud.url)
                urls: dict[str, str] = {"web-viewer": sandbox.urls["web-viewer"]}
                services = dict(sandbox.services)
                for name in self.drill.services:
                    service = FakeService()
                    services[name] = service
                    urls[name] = await stack.enter_async_context(serve(service.app()))
                proxy = AwsProxy(sandbox.cloud.url) if sandbox.cloud is not None else None
                aws_url = (
                    await stack.enter_async_context(proxy.serving()) if proxy is not None else None
                )
                config_path = write_drill_config(
                    self.drill, sandbox, urls, aws_url, self.scale, self.mode
                )
                setup = load_setup(config_path)
                pack = _recovery_pack(setup)
                recovery = pack.disaster_recovery if pack else None
                result.targets = targets(self.drill, recovery, str(result.path))
                target = Target(
                    sandbox.chain,
                    sandbox.nodes,
                    services,
                    sandbox.cloud,
                    proxy,
                    self.scale,
                    sandbox.kubernetes,
                )
                await self._with_daemon(setup, target, pack)
                if self.hold and not self.interrupted.is_set():
                    await self._hold({**sandbox.urls, **urls}, sandbox, config_path.parent)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            result.ended_at = time.time()
        return result

    def _sigint(self) -> None:
        self.interrupted.set()

    async def _hold(self, urls: dict[str, str], sandbox: Sandbox, state_dir: Path) -> None:
        """Keep the sandbox as the drill left it (with ``--no-rollback``: broken) for study,
        the reports written first; until SIGINT. The daemon has stopped; its journal stays."""
        self.result.ended_at = time.time()
        write_reports(self.result)
        self.progress.done()
        endpoints = dict(sorted(urls.items()))
        if sandbox.cloud is not None:
            endpoints["aws (moto)"] = sandbox.cloud.url
        lines = [f"  {name}: {url}" for name, url in endpoints.items()]
        lines.append(f"  journal: srd journal --journal {state_dir}")
        print(_summary_line(self.result))
        print("sandbox held for study; Ctrl-C ends it:\n" + "\n".join(lines), flush=True)
        # The daemon's stop gave SIGINT back to the default; here it ends the hold.
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._sigint)
        await self.interrupted.wait()

    async def _real(self, config_path: Path, state_dir: Path) -> None:
        """Preflight, read-only; then the drill, unless a check failed."""
        result = self.result
        setup = real_setup(self.drill, config_path, state_dir, self.scale, self.mode)
        pack = _recovery_pack(setup)
        result.targets = targets(
            self.drill, pack.disaster_recovery if pack else None, str(result.path)
        )
        self.progress.event("preflight: read-only checks of every probe, read and permission")
        try:
            result.preflight = await preflight(setup, self.drill, list(setup.runbooks))
        finally:
            for actuator in setup.actuators.values():
                await actuator.close()
        failed = [c for c in result.preflight if not c.ok]
        for check in failed:
            self.note("preflight_failed", f"preflight: {check.name}: {check.detail}")
        if failed:
            result.outcome = "preflight_failed"
            return
        self.note("preflight_passed", f"preflight: {len(result.preflight)} checks passed")
        empty = Target(None, {}, {}, None, None, self.scale)
        await self._with_daemon(setup, empty, pack)

    async def _with_daemon(self, setup: Setup, target: Target, pack: RecoveryPack | None) -> None:
        metrics = Metrics()
        daemon = Daemon(
            setup,
            metrics=metrics,
            log_level=self.log_level,
            extra_groups=[alert_group(self.drill, self.scale)],
        )
        task = asyncio.create_task(daemon.run(), name="drill-daemon")
        try:
            while daemon.failover is None and not task.done():  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.05)
            if task.done():
                raise RuntimeError(f"the daemon stopped at start (exit {task.result()})")
            # The daemon took SIGINT for itself; during a drill it interrupts the drill.
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._sigint)
            _stage(daemon).dispatcher.tags = {
                "kind": "drill",
                "drill": self.drill.name,
                "time_scale": self.scale,
            }
            await self._drill(daemon, target, pack)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, timeout=30)
        journal = await open_journal(setup.config.state_dir, create=False)
        try:
            await self._collect(journal)
            self._measure()
            await self._record(journal, metrics)
        finally:
            await journal.close()

    async def _steady(self, daemon: Daemon) -> tuple[bool, str]:
        for condition in self.steady:
            ok, why = condition.all_hold(daemon.metrics.registry)
            if not ok:
                return False, why
        return True, ""

    async def _wait_steady(self, daemon: Daemon, what: str) -> bool:
        budget = max(self.wall(self.drill.steady_state.within), MIN_STEADY_WAIT)
        deadline = time.time() + budget
        why = ""
        while time.time() < deadline:
            ok, why = await self._steady(daemon)
            if ok:
                return True
            if self.interrupted.is_set() and what == "before":
                return False
            self.progress.status(f"waiting for the steady state ({what}): {why}")
            await asyncio.sleep(TICK * 2)
        self.note("steady_state_missing", f"steady state not reached {what} the faults: {why}")
        return False

    async def _drill(self, daemon: Daemon, target: Target, pack: RecoveryPack | None) -> None:
        result, drill = self.result, self.drill
        failover = _stage(daemon)
        if not await self._wait_steady(daemon, "before"):
            result.outcome = "interrupted" if self.interrupted.is_set() else "aborted"
            return
        self.note("steady_state", "steady state holds: " + "; ".join(drill.steady_state.probes))
        t0 = time.time()
        ids = drill.fault_ids()
        result.faults = [
            FaultRun(i, f.kind, dict(f.params), f.at, f.repaired_by)
            for i, f in zip(ids, drill.faults, strict=True)
        ]
        deadline_drill = drill.deadline or 2 * result.targets.rto
        injected_at: float | None = None
        symptom_at: float | None = None
        healthy_at: float | None = None
        alerts_seen: set[tuple[str, str]] = set()
        approvals_seen: dict[str, float] = {}
        runbook_of: dict[str, str] = {}
        steps_seen: set[tuple[str, int, str]] = set()
        states_seen: set[tuple[str, str]] = set()
        last_journal = 0.0
        settled = False
        rpo_task: asyncio.Task[RpoStatus | None] | None = None
        try:
            while True:
                now = time.time()
                self.progress.status(self._status(now, injected_at, symptom_at, healthy_at))
                if self.interrupted.is_set():
                    self.note("interrupted", "interrupted (SIGINT): rolling back")
                    result.outcome = "interrupted"
                    break
                for fault in result.faults:
                    if (
                        fault.injected_at is None
                        and fault.error is None
                        and now >= t0 + self.wall(fault.at)
                    ):
                        await self._inject(fault, target)
                if injected_at is None:
                    injected_at = min(
                        (f.injected_at for f in result.faults if f.injected_at), default=None
                    )
                    if injected_at is not None:
                        # Listing S3 takes a moment of wall time: it must not delay anything else.
                        rpo_task = asyncio.create_task(self._rpo(pack), name="drill-rpo")
                if injected_at is None:
                    await asyncio.sleep(TICK)
                    continue
                if trip := self._tripped(daemon):
                    result.stop = {"condition": trip, "at": now}
                    self.note("stop_condition", f"stop condition tripped: {trip}")
                    result.outcome = "aborted"
                    break
                ok, why = await self._steady(daemon)
                if not ok and symptom_at is None:
                    symptom_at = now
                    self.note("first_symptom", f"first symptom: {why}", "registry")
                # A drill with no runbook to expect may cause no symptom at all (a backup fault):
                # then it has recovered once the sustain window passes without one.
                unharmed = drill.expect.runbook is None and now - injected_at > self.wall(
                    drill.sustain
                )
                if ok and healthy_at is None and (symptom_at is not None or unharmed):
                    healthy_at = now
                    self.note("service_healthy", "steady state holds again", "registry")
                elif not ok and healthy_at is not None:
                    healthy_at = None
                    self.note("relapse", f"steady state lost again: {why}", "registry")
                self._alerts(daemon, alerts_seen)
                if now - last_journal >= 0.25:
                    last_journal = now
                    executions = await failover.journal.executions(20)
                    await self._follow(
                        failover.journal, executions, steps_seen, states_seen, target
                    )
                    for execution in executions:
                        runbook_of[execution.id] = execution.runbook
                    await self._approve(daemon, approvals_seen, runbook_of, now)
                    settled = self._runbook_settled(executions)
                    if self.mode == "dry-run" and self._planned(executions):
                        # Nothing acted: no recovery will come. The plan is the result.
                        self.note("plan_journaled", "dry run: the runbook's plan is journaled")
                        break
                if (
                    healthy_at is not None
                    and settled
                    and now - healthy_at >= self.wall(drill.sustain)
                ):
                    self.note(
                        "recovery_sustained",
                        f"recovery sustained for {format_duration(drill.sustain)}",
                    )
                    break
                if now - injected_at > self.wall(deadline_drill):
                    self.note(
                        "deadline",
                        f"deadline {format_duration(deadline_drill)} passed, not recovered",
                    )
                    break
                await asyncio.sleep(TICK)
        finally:
            # Rollback runs however the drill ended: met, failed, aborted, interrupted, crashed.
            if rpo_task is not None:
                result.rpo = await rpo_task
            await self._rollback(daemon)

    def _status(
        self, now: float, injected: float | None, symptom: float | None, healthy: float | None
    ) -> str:
        if injected is None:
            return "steady state holds; faults pending"
        t = format_duration((now - injected) * self.scale)
        phase = "recovering" if healthy else ("degraded" if symptom else "watching")
        return f"T+{t} (drill time) {phase}"

    def _runbook_settled(self, executions: Sequence[ExecutionRecord]) -> bool:
        expected = self.drill.expect.runbook
        relevant = [e for e in executions if expected is None or e.runbook == expected]
        if expected is None and not relevant:
            return True
        return any(e.state not in ("planned", "running") for e in relevant)

    def _planned(self, executions: Sequence[ExecutionRecord]) -> bool:
        expected = self.drill.expect.runbook
        return any(
            e.state == "dry_run" and (expected is None or e.runbook == expected) for e in executions
        )

    async def _inject(self, fault: FaultRun, target: Target) -> None:
        kind = KINDS[fault.kind]
        try:
            fault.revert = await kind.apply(target, fault.params)
        except Exception as exc:  # a fault that cannot be injected is reported, not fatal
            fault.error = f"{type(exc).__name__}: {exc}"
            self.note(
                "fault_failed",
                f"fault {fault.id} ({fault.kind}) could not be injected: {fault.error}",
            )
            return
        fault.injected_at = time.time()
        label = f"fault injected: {fault.id} ({kind.summary})"
        if fault.kind == "manual":
            label = f"operator, inject {fault.id} now: {fault.params['instructions']}"
        self.note("fault_injected", label, fault=fault.id)

    async def _revert(self, fault: FaultRun, by: str) -> None:
        if fault.revert is None or fault.reverted_at is not None:
            return
        await fault.revert()
        fault.reverted_at, fault.reverted_by = time.time(), by
        label = f"fault {fault.id} reverted ({by})"
        if fault.kind == "manual":
            undo = fault.params.get("undo") or "repair what you broke"
            label = f"operator, undo {fault.id} now ({by}): {undo}"
        self.note("fault_reverted", label, fault=fault.id)

    async def _rpo(self, pack: RecoveryPack | None) -> RpoStatus | None:
        if pack is None:
            return None
        try:
            return (await BackupChecker(pack).check()).get(self.drill.scenario)
        except Exception as exc:  # an unreadable S3 makes RPO unknown, not a crash
            self.result.notes.append(f"RPO not measured: {exc}")
            return None

    def _tripped(self, daemon: Daemon) -> str | None:
        for condition in self.stop_conditions:
            if found := condition.any_holds(daemon.metrics.registry):
                return found
        return None

    def _alerts(self, daemon: Daemon, seen: set[tuple[str, str]]) -> None:
        for family in daemon.metrics.registry.collect():
            if family.name != "srd_alert_state":
                continue
            for sample in family.samples:
                name, state = sample.labels.get("alertname", ""), sample.labels.get("state", "")
                # Other rules' pending alerts are noise in a drill's timeline; firing is not.
                if name not in self.drill_alerts and state != "firing":
                    continue
                if (
                    sample.value > 0
                    and state in ("pending", "firing")
                    and (name, state) not in seen
                ):
                    seen.add((name, state))
                    self.note(f"alert_{state}", f"alert {name} {state}", "registry", alertname=name)

    async def _follow(
        self,
        journal: Journal,
        executions: Sequence[ExecutionRecord],
        steps_seen: set[tuple[str, int, str]],
        states_seen: set[tuple[str, str]],
        target: Target,
    ) -> None:
        for execution in executions:
            for change in await journal.states(execution.id):
                if (execution.id, change.state) not in states_seen:
                    states_seen.add((execution.id, change.state))
                    label = "decision" if change.state == "planned" else f"execution {change.state}"
                    self.progress.event(f"{label}: {execution.runbook}")
            for step in await journal.steps(execution.id):
                key = (execution.id, step.index, f"{step.key}/{step.phase}")
                if key in steps_seen:
                    continue
                steps_seen.add(key)
                result = f" → {step.result}" if step.result else ""
                self.progress.event(f"step {step.name} {step.phase}{result}")
                if step.phase == "ended" and step.result == "ok":
                    for fault in self.result.faults:
                        if fault.repaired_by == step.name:
                            await self._revert(fault, f"repaired by step {step.name}")

    async def _approve(
        self, daemon: Daemon, seen: dict[str, float], runbook_of: dict[str, str], now: float
    ) -> None:
        approvals = _stage(daemon).guards.approvals
        by_name = {r.name: r for r in daemon.setup.runbooks}
        for approval_id in approvals.pending():
            first = seen.setdefault(approval_id, now)
            execution_id, _, index = approval_id.rpartition("-")
            runbook = by_name.get(runbook_of.get(execution_id, ""))
            if runbook is None or not index.isdigit():
                continue
            step = runbook.step_at(int(index))[1]
            delay = self.drill.operator.approvals.get(
                step.name, self.drill.operator.default_approval
            )
            if now - first < self.wall(delay):
                continue
            # The operator's approval says the work is done: what it repairs is repaired first.
            for fault in self.result.faults:
                if fault.repaired_by == step.name:
                    await self._revert(fault, f"repaired by step {step.name}")
            if approvals.approve(approval_id, "drill-operator"):
                self.progress.event(f"operator approved {step.name} after {format_duration(delay)}")

    async def _rollback(self, daemon: Daemon) -> None:
        result = self.result
        injected = [f for f in result.faults if f.injected_at is not None]
        if not self.rollback_enabled:
            result.rollback = {
                "policy": "never",
                "ran": False,
                "reverted": [],
                "steady_state_restored": None,
            }
            self.note("rollback_skipped", "rollback skipped (--no-rollback): faults left in place")
            return
        reverted = []
        for fault in reversed(injected):
            if fault.reverted_at is None:
                try:
                    await self._revert(fault, "rollback")
                    reverted.append(fault.id)
                except Exception as exc:  # keep undoing the rest
                    self.note("rollback_failed", f"reverting {fault.id} failed: {exc}")
        restored = await self._wait_steady(daemon, "after")
        if restored:
            self.note("steady_state_restored", "steady state holds after rollback")
        result.rollback = {
            "policy": "always",
            "ran": True,
            "reverted": reverted,
            "steady_state_restored": restored,
        }

    # --- after the drill: the journal's account ---------------------------------------------

    async def _collect(self, journal: Journal) -> None:
        result = self.result
        for execution in reversed(await journal.executions(100)):
            if execution.alert.get("kind") != "drill" or execution.runbook.startswith("drill:"):
                continue
            states = await journal.states(execution.id)
            steps = await journal.steps(execution.id)
            for change in states:
                label = "decision" if change.state == "planned" else f"execution {change.state}"
                result.add(
                    Event(
                        change.at,
                        "decision" if change.state == "planned" else f"execution_{change.state}",
                        f"{label}: {execution.runbook}",
                        "journal",
                        {"execution": execution.id},
                    )
                )
            merged: dict[str, dict[str, Any]] = {}
            for step in steps:
                if step.key.endswith(":approval"):
                    continue
                item = merged.setdefault(
                    step.key,
                    {
                        "index": step.index,
                        "name": step.name,
                        "started_at": None,
                        "ended_at": None,
                        "result": None,
                        "compensation": step.key.endswith(":compensate"),
                    },
                )
                if step.phase == "started":
                    item["started_at"] = item["started_at"] or step.at
                else:
                    item["ended_at"], item["result"] = step.at, step.result
                kind = "step_started" if step.phase == "started" else "step_ended"
                text = f"step {step.name} {step.phase}" + (
                    f" → {step.result}" if step.result else ""
                )
                result.add(
                    Event(
                        step.at,
                        kind,
                        text,
                        "journal",
                        {"execution": execution.id, "step": step.name, "result": step.result},
                    )
                )
            result.executions.append(
                {
                    "id": execution.id,
                    "runbook": execution.runbook,
                    "mode": execution.mode,
                    "state": execution.state,
                    "alert_starts_at": execution.alert.get("startsAt"),
                    "created_at": execution.created_at,
                    "updated_at": execution.updated_at,
                    "states": [{"state": c.state, "at": c.at} for c in states],
                    "steps": list(merged.values()),
                }
            )
        result.events.sort(key=lambda e: e.at)

    def _measure(self) -> None:
        """RTO from the journal: injection → the expected execution's ``succeeded`` event
        (its health check passed), counted only when the steady state then held for
        ``sustain``. Split: detect (→ decision: the firing alert reached failover), decide
        (→ the execution ``running``: settle and guards), act (→ last step ended: the
        actuators' reads, retries and writes), converge (→ succeeded)."""
        result, drill, scale = self.result, self.drill, self.scale
        injected = min((f.injected_at for f in result.faults if f.injected_at), default=None)
        expected = drill.expect.runbook
        execution = next(
            (e for e in result.executions if expected is None or e["runbook"] == expected), None
        )
        sustained = any(e.event == "recovery_sustained" for e in result.events)
        succeeded = next(
            (s["at"] for s in (execution or {}).get("states", []) if s["state"] == "succeeded"),
            None,
        )
        rto: dict[str, Any] = {
            "source": "journal",
            "injected_at": injected,
            "decided_at": execution["created_at"] if execution else None,
            "recovered_at": succeeded,
            "sustained": sustained,
            "execution": execution["id"] if execution else None,
            "measured_seconds": None,
            "phases": {},
        }
        if injected is not None and execution is not None:
            steps = [s for s in execution["steps"] if not s["compensation"]]
            running = next((s["at"] for s in execution["states"] if s["state"] == "running"), None)
            last = max((s["ended_at"] for s in steps if s["ended_at"]), default=None)
            marks = [injected, execution["created_at"], running, last, succeeded]
            names = ["detect", "decide", "act", "converge"]
            for name, a, b in zip(names, marks, marks[1:], strict=False):
                rto["phases"][name] = (b - a) * scale if a is not None and b is not None else None
            if succeeded is not None and sustained:
                rto["measured_seconds"] = (succeeded - injected) * scale
        result.rto = rto
        objectives = []
        if self.mode == "dry-run":
            result.notes.append("dry run: nothing acted, so no RTO is measured")
        elif "rto" in drill.expect.objectives:
            measured = rto["measured_seconds"]
            target = result.targets.rto
            met = measured is not None and measured <= target
            reason = (
                ""
                if measured is not None
                else "not recovered (no sustained recovery within the deadline)"
            )
            objectives.append(_objective("RTO", target, measured, met, reason))
        if "rpo" in drill.expect.objectives:
            rpo = result.rpo
            age = rpo.age if rpo is not None else None
            met = rpo is not None and rpo.state == "met"
            reason = rpo.reason if rpo is not None else "backups could not be checked"
            objectives.append(_objective("RPO", result.targets.rpo, age, met, reason))
        if expected is not None:
            done = "dry_run" if self.mode == "dry-run" else "succeeded"
            ran = execution is not None and execution["state"] == done
            why = (
                ""
                if ran
                else (f"execution ended {execution['state']}" if execution else "never ran")
            )
            objectives.append({"name": "runbook", "target": expected, "met": ran, "reason": why})
        result.objectives = objectives
        if result.outcome in ("interrupted", "aborted"):
            return
        if result.rollback.get("steady_state_restored") is False:
            result.outcome = "not_restored"
        elif not all(o["met"] for o in objectives):
            result.outcome = "breached"
        else:
            result.outcome = "met"

    async def _record(self, journal: Journal, metrics: Metrics) -> None:
        """A drill record in the journal, in drill time, so ``srd_rto_last_seconds`` (and the
        DR-readiness summary) report the drill's RTO rather than its scaled wall time."""
        seconds = self.result.rto.get("measured_seconds")
        if seconds is None or self.mode != "armed":
            return
        now = time.time()
        alert = {
            "kind": "drill",
            "scenario": self.drill.scenario,
            "drill": self.drill.name,
            "time_scale": self.scale,
            "startsAt": iso_utc(now - seconds),
            "report": str(self.result.report_dir),
        }
        record = await journal.start_execution(
            f"drill:{self.drill.name}",
            f"drill/{self.drill.name}/{uuid.uuid4().hex}",
            "armed",
            uuid.uuid4().hex,
            alert,
        )
        if record is None:
            return
        await journal.set_state(record.id, "succeeded", {"reason": "drill recovered"})
        measured = measure_rto(await journal.recovery_records()).get(self.drill.scenario)
        if measured is not None:
            metrics.rto_last.labels(self.drill.scenario).set(measured.last_seconds)
            self.result.recorded_rto = measured.last_seconds


async def _reset_moto(url: str) -> None:
    """moto keeps its state per process, not per server: without a reset the next drill's
    sandbox (``--all``) would find the last one's bucket, zone and target group."""
    async with aiohttp.ClientSession() as session, session.post(f"{url}/moto-api/reset") as reply:
        reply.raise_for_status()


def _stage(daemon: Daemon) -> FailoverStage:
    if daemon.failover is None:
        raise RuntimeError("the daemon's failover stage is not open")
    return daemon.failover


def _objective(
    name: str, target: float, measured: float | None, met: bool, reason: str
) -> dict[str, Any]:
    by = measured - target if measured is not None and measured > target else None
    return {
        "name": name,
        "target_seconds": target,
        "measured_seconds": measured,
        "met": met,
        "breached_by_seconds": by,
        "reason": "" if met else reason,
    }


# --- the command ----------------------------------------------------------------------------


async def run_drill(
    path: Path,
    *,
    report_dir: Path,
    time_scale: float | None = None,
    rollback: bool = True,
    mode: str | None = None,
    quiet: bool = False,
    log_level: str = "error",
    real_config: Path | None = None,
    progress: Progress | None = None,
    hold: bool = False,
) -> DrillResult:
    """Run the drill at ``path`` on the sandbox or, given ``real_config``, on the environment
    that config watches (in real time unless ``time_scale`` says otherwise; ``dry-run`` unless
    ``mode`` says armed); write its reports. ConfigError when the drill is invalid, or cannot
    run on that target."""
    drill = load_drill(path)
    _check_faults(drill, path, real=real_config is not None)
    if real_config is not None:
        scale, mode = time_scale or 1.0, mode or "dry-run"
    else:
        scale, mode = time_scale or drill.time_scale, mode or "armed"
    progress = progress or Progress(drill.name, quiet=quiet)
    run = DrillRun(
        drill,
        path,
        report_dir=report_dir,
        scale=scale,
        rollback=rollback,
        mode=mode,
        progress=progress,
        log_level=log_level,
        real_config=real_config,
        hold=hold,
    )
    result = await run.run()
    progress.done()
    write_reports(result)
    return result


def _check_faults(drill: Drill, path: Path, *, real: bool) -> None:
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


def _summary_line(result: DrillResult) -> str:
    parts = []
    for o in result.objectives:
        if "target_seconds" in o:
            measured = o["measured_seconds"]
            shown = format_duration(measured) if measured is not None else "—"
            verdict = "ok" if o["met"] else "BREACHED"
            parts.append(f"{o['name']} {shown}/{format_duration(o['target_seconds'])} {verdict}")
        else:
            parts.append(f"runbook {o['target']} {'ok' if o['met'] else 'FAILED'}")
    parts += [f"preflight FAILED {c.name}: {c.detail}" for c in result.preflight if not c.ok]
    return f"{result.drill.name}: {result.outcome} (exit {result.exit_code}) — " + ", ".join(parts)


def simulate_command(
    drills: Sequence[Path],
    *,
    run_all: bool = False,
    drills_dir: Path = Path("drills"),
    report_dir: Path | None = None,
    time_scale: float | None = None,
    rollback: bool = True,
    mode: str | None = None,
    log_level: str = "error",
    real_config: Path | None = None,
    hold: bool = False,
) -> int:
    """Run one drill (its exit code) or, with ``run_all``, every drill in ``drills_dir``
    (0 when each met its objectives, or breached one as its ``expect_breach`` says; else 1)."""
    paths = (
        sorted([*drills_dir.glob("*.yaml"), *drills_dir.glob("*.yml")]) if run_all else list(drills)
    )
    if not paths:
        print("srd simulate: no drills to run", file=sys.stderr)
        return EXIT_INVALID
    if not run_all and len(paths) != 1:
        print("srd simulate: give one drill file, or --all", file=sys.stderr)
        return EXIT_INVALID
    base = report_dir or Path("drill-reports")
    summary: list[tuple[str, bool, str]] = []
    for path in paths:
        target_dir = base / path.stem if run_all else (report_dir or base / path.stem)
        try:
            result = asyncio.run(
                run_drill(
                    path,
                    report_dir=target_dir,
                    time_scale=time_scale,
                    rollback=rollback,
                    mode=mode,
                    log_level=log_level,
                    real_config=real_config,
                    hold=hold,
                )
            )
        except ConfigError as exc:
            print(f"srd simulate: invalid drill {path}:", file=sys.stderr)
            for issue in exc.issues:
                print(f"  {issue}", file=sys.stderr)
            if not run_all:
                return EXIT_INVALID
            summary.append((path.name, False, "invalid drill"))
            continue
        line = _summary_line(result)
        print(line)
        print(f"  reports: {target_dir}/report.{{json,md,html}}")
        if not run_all:
            return result.exit_code
        passed = result.outcome == "met" or (
            result.drill.expect_breach and result.outcome == "breached"
        )
        if result.outcome == "interrupted":
            summary.append((path.name, False, "interrupted"))
            break
        summary.append((path.name, passed, line))
    print("\nsummary:")
    for name, passed, _line in summary:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(passed for _, passed, _ in summary) else 1
