"""The daemon: wires config, probes, evaluation, metrics and the server under one supervisor.

Signals only set flags (SIGTERM/SIGINT: stop; SIGHUP: reload); the work happens in tasks.
Shutdown goes in stages: intake stops (readiness turns false, no new polls are scheduled),
in-flight polls finish within ``runtime.shutdown_grace``, then the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import signal
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from pydantic import ValidationError

from srd import __version__, clock, logs, systemd
from srd.actuators import registry
from srd.actuators.base import Actuator
from srd.config import Config, ConfigError, ConfigIssue, Mode, load_config
from srd.evaluation.backups import BackupChecker, assess_readiness
from srd.evaluation.engine import Engine, Schedule
from srd.evaluation.metrics import EvaluationMetrics
from srd.evaluation.promql_sli import PromqlSource, event_slo
from srd.evaluation.recovery import RecoverySource, export_drills, record_readiness
from srd.evaluation.rulepacks import RulePack, load_rule_packs
from srd.evaluation.rules import RuleGroup
from srd.evaluation.slo import Slo
from srd.failover.leader import leadership_from_config
from srd.failover.metrics import FailoverMetrics
from srd.failover.runbooks import Runbook, load_runbooks
from srd.failover.stage import AuthRequired, FailoverStage, share_auth
from srd.http.app import FailoverRoutes, build_app, listen, serving
from srd.journal import JournalError, JournalFault
from srd.model import Observation, Sample
from srd.probes.metrics import ProbeMetrics
from srd.probes.promql import PromqlClient
from srd.probes.runner import ProbeRunner
from srd.supervisor import RESTART_BACKOFF, Supervisor, SupervisorMetrics, wait_first

log = structlog.get_logger("srd.runtime")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
"""Nothing started: what srd was given cannot run here, and restarting would not help (a
journal file that is not a journal or that srd may not write; no ``failover.auth`` on a
journal an armed replica shares). systemd: RestartPreventExitStatus."""
PRUNE_INTERVAL = 3600.0
"""Seconds between applications of failover.journal_retention: receipts only grow by the
alerts received, so hourly keeps the table within an hour of the retention."""


class RuntimeMetrics:
    """The daemon's own metrics (build, config reloads, process), created on ``registry``."""

    BUILD_INFO = "srd_build_info"
    CONFIG_RELOADS = "srd_config_reloads"
    CONFIG_LAST_RELOAD_SUCCESS = "srd_config_last_reload_success_timestamp_seconds"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = reg = registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        self.build_info = Gauge(
            self.BUILD_INFO,
            "srd version and Python it runs on; always 1.",
            ["version", "python"],
            registry=reg,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.config_reloads = Counter(
            self.CONFIG_RELOADS,
            "Config reloads by result (success, error).",
            ["result"],
            registry=reg,
        )
        self.config_last_reload_success = Gauge(
            self.CONFIG_LAST_RELOAD_SUCCESS,
            "Unix time of the last config load or reload that succeeded.",
            registry=reg,
        )


class DaemonMetrics:
    """Every stage's metrics group on one registry (never the global one: tests build their
    own): what /metrics serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runtime = RuntimeMetrics(self.registry)
        self.supervisor = SupervisorMetrics(self.registry)
        self.probes = ProbeMetrics(self.registry)
        self.evaluation = EvaluationMetrics(self.registry)
        self.failover = FailoverMetrics(self.registry)

    def samples(self) -> Iterator[Sample]:
        """The current value of every series on the registry, as plain data for evaluation."""
        for family in self.registry.collect():
            for sample in family.samples:
                yield Sample(sample.name, tuple(sample.labels.items()), sample.value)


@dataclass(frozen=True)
class Setup:
    """Everything srd reads before it starts: the config and the rule packs it names.
    Loaded and validated as one, so a reload applies all of it or none."""

    path: Path
    config: Config
    rule_paths: tuple[Path, ...]
    packs: tuple[RulePack, ...]
    actuators: Mapping[str, Actuator]
    runbooks: tuple[Runbook, ...]


def load_setup(path: Path) -> Setup:
    """Read the config at ``path``, its rule packs and runbooks, and build its actuators
    (clients connect lazily: nothing is contacted); ConfigError lists every problem.
    Relative paths are read beside the config, whatever the working directory."""
    config = load_config(path)
    rules = [_beside(path, p) for p in config.evaluation.rules]
    packs = tuple(load_rule_packs(rules))
    actuators = _build_actuators(path, config)
    runbook_paths = [_beside(path, p) for p in config.failover.runbooks]
    slos = [slo.name for pack in packs for slo in pack.slos]
    names = config.probes.target_names()
    runbooks = tuple(load_runbooks(runbook_paths, actuators, names, slos))
    return Setup(path, config, tuple(rules), packs, actuators, runbooks)


def _beside(config_path: Path, path: Path) -> Path:
    return path if path.is_absolute() else config_path.parent / path


def _build_actuators(path: Path, config: Config) -> dict[str, Actuator]:
    built, issues = {}, []
    for name, section in config.actuators.items():
        key = f"actuators.{name}"
        try:
            built[name] = registry.build(name, section)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                issues.append(ConfigIssue(str(path), f"{key}.{where}", error["msg"]))
        except registry.PluginError as exc:
            issues.append(ConfigIssue(str(path), key, str(exc)))
    if issues:
        raise ConfigError(issues)
    return built


class Daemon:
    def __init__(
        self,
        setup: Setup,
        *,
        metrics: DaemonMetrics | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        extra_groups: Sequence[RuleGroup] = (),
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        """``extra_groups``: rule groups evaluated beside the rule packs' (a drill's alerts).
        ``sockets``: the server's, already bound (``srd.http.app.listen``); else ``run``
        binds ``server.listen`` before anything else starts."""
        self.setup = setup
        self._sockets = list(sockets)
        self._extra_groups = tuple(extra_groups)
        self.metrics = metrics or DaemonMetrics()
        self._log_level = log_level
        self._log_format = log_format
        self._last_up: dict[tuple[str, str], bool] = {}
        self._stop_requested = asyncio.Event()
        self._reload_requested = asyncio.Event()
        runtime = setup.config.runtime
        restarts = replace(
            RESTART_BACKOFF,
            initial=runtime.restart_backoff_initial,
            maximum=runtime.restart_backoff_max,
        )
        self.supervisor = Supervisor(self.metrics.supervisor, restarts)
        self._probes: ProbeRunner | None = None
        self._evaluation_tasks: list[str] = []
        self._last_obs: dict[str, Observation] = {}
        self._retired: list[Actuator] = []
        self.failover: FailoverStage | None = None
        self._routes: FailoverRoutes | None = None
        self._rederived: Engine | None = None

    @property
    def config(self) -> Config:
        return self.setup.config

    def _failover(self) -> FailoverStage:
        if self.failover is None:
            raise RuntimeError("the failover stage is opened before any task starts")
        return self.failover

    def request_stop(self) -> None:
        self._stop_requested.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def not_ready(self) -> list[str]:
        reasons = []
        if self.supervisor.stopping:
            reasons.append("shutting down")
        if not self.supervisor.essential_running():
            reasons.append("an essential task is not running")
        if self.failover is not None:
            reasons += self.failover.not_ready()
            for execution, why in self.failover.dispatcher.stuck.items():
                reasons.append(f"execution {execution} interrupted, being resumed: {why}")
        return reasons

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until an essential task fails (exit 1)."""
        self._configure_logs(self.config)
        if not self._sockets:
            server = self.config.server
            try:
                self._sockets = listen(server.host, server.port)
            except OSError as exc:
                log.error("cannot listen; srd did not start", address=server.listen, error=str(exc))
                return EXIT_FAILED
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload,
        }
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        self.metrics.runtime.config_reloads.labels("success")
        self.metrics.runtime.config_reloads.labels("error")
        self.metrics.runtime.config_last_reload_success.set(clock.now())
        try:
            return await self._run()
        finally:
            for signum in handlers:
                loop.remove_signal_handler(signum)
            for sock in self._sockets:
                sock.close()  # when the server never started on them

    async def _run(self) -> int:
        headers = {"User-Agent": f"srd/{__version__}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            self._session = session
            leadership, keep_leadership = leadership_from_config(
                self.config, self.metrics.failover, on_loss=self._deposed, on_acquire=self._elected
            )
            try:
                failover = self.failover = await FailoverStage.open(
                    self.config,
                    session,
                    self.metrics.failover,
                    actuators=self.setup.actuators,
                    runbooks=self.setup.runbooks,
                    probe_status=self._last_obs.get,
                    leadership=leadership,
                    budget=self.metrics.evaluation,
                )
            except AuthRequired as exc:
                log.error("srd did not start", reason=str(exc))
                return EXIT_USAGE
            except JournalError as exc:
                # A server that may come back is worth a restart; a file that is not a
                # journal, or one srd may not write, is not (systemd: RestartPreventExitStatus).
                transient = isinstance(exc, JournalFault) and exc.transient
                log.error("cannot open the journal; srd did not start", error=str(exc))
                return EXIT_FAILED if transient else EXIT_USAGE
            try:
                self.supervisor.start("server", self._serve, essential=True)
                self.supervisor.start("reloader", self._reloader)
                self.supervisor.start("failover", failover.run)
                self.supervisor.start_periodic(
                    "journal-retention",
                    PRUNE_INTERVAL,
                    failover.prune,
                    jitter=self.config.runtime.schedule_jitter,
                )
                if keep_leadership is not None:
                    self.supervisor.start("leader", keep_leadership)
                if self.config.failover.auth is None:
                    self.supervisor.start("shared-auth", self._watch_shared_auth, essential=True)
                self._start_stages(self.setup)
                await wait_first(self._stop_requested, self.supervisor.failed)
                failure = self.supervisor.failure
                systemd.notify("STOPPING=1")
                grace = self.config.runtime.shutdown_grace
                log.info("shutting down", grace_seconds=grace, reason=str(failure or "signal"))
                await self.supervisor.shutdown(grace, first=[*self._stage_tasks(), "failover"])
            finally:
                await failover.close()
                for actuator in self._retired:
                    await actuator.close()
        if failure is not None:
            log.error("stopped because an essential task failed", failure=str(failure))
            return EXIT_FAILED
        log.info("stopped")
        return EXIT_OK

    async def _watch_shared_auth(self, stop: asyncio.Event) -> None:
        """Without ``failover.auth``: stop (this essential task ends) as soon as an armed
        replica sharing the journal records that it requires auth (``AuthRequired``).
        Requests are refused from that moment; a restart then refuses to start (exit 2)
        until auth is configured."""
        failover = self._failover()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.ha.retry_period)
            if stop.is_set():
                return
            try:
                armed = await failover.journal.auth_required()
            except JournalError as exc:
                log.warning("cannot read the journal's shared auth; trying again", error=str(exc))
                continue
            if armed is not None:
                if self._routes is not None:
                    self._routes.auth.lock(armed)
                where = str(self.config.failover.journal or self.config.state_dir)
                log.error("stopping", reason=str(AuthRequired(where, armed)))
                return

    async def _deposed(self) -> None:
        """Leadership lost: cancel executions in flight now; alerts are still taken and
        planned in the journal, for whoever leads."""
        if self.supervisor.stopping:
            return
        await self._failover().deposed()

    async def _elected(self) -> None:
        """Leadership gained: the failover stage claims the term and reconciles at once."""
        self._failover().acquired()

    async def _serve(self, stop: asyncio.Event) -> None:
        server = self.config.server
        app = build_app(self.metrics.registry, self.not_ready)
        failover = self._failover()
        self._routes = FailoverRoutes(
            app,
            self.config.failover,
            self.metrics.failover,
            intake=failover.intake,
            kill_switch=failover.kill_switch,
            approvals=failover.guards.approvals,
            journal=failover.journal,
            dispatcher=failover.dispatcher,
        )
        async with serving(app, server.host, server.port, sockets=self._sockets) as port:
            url = f"http://{_url_host(server.host)}:{port}"
            log.info("serving", url=url, mode=self.config.mode)
            systemd.notify("READY=1", f"STATUS=serving on {server.host}:{port}")
            await stop.wait()

    async def _reloader(self, stop: asyncio.Event) -> None:
        while True:
            await wait_first(self._reload_requested, stop)
            if stop.is_set():
                return
            self._reload_requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Validate the config and rule packs again and apply them; if anything is wrong,
        everything that runs keeps running as it was."""
        path = self.setup.path
        with structlog.contextvars.bound_contextvars(
            correlation_id=logs.new_correlation_id(), action="reload"
        ):
            systemd.reloading()
            try:
                new = await asyncio.to_thread(load_setup, path)
                await self._share_auth(new.config)
            except Exception as exc:
                # Whatever went wrong, the reloader must live on to read the next SIGHUP.
                self.metrics.runtime.config_reloads.labels("error").inc()
                issues = exc.issues if isinstance(exc, ConfigError) else [_reason(exc)]
                log.error(
                    "config reload failed; the running config stays in force",
                    file=str(path),
                    errors=[str(issue) for issue in issues],
                )
                systemd.notify("READY=1", "STATUS=config reload failed; old config kept")
                return False
            if new.config.server != self.config.server:
                log.warning("server settings changed; they take effect after a restart")
            if new.config.ha != self.config.ha:
                log.warning("ha settings changed; they take effect after a restart")
            await self.supervisor.stop(self._stage_tasks(), self.config.runtime.shutdown_grace)
            self.setup = new
            self._retired += self._failover().reload(new.config, new.actuators, new.runbooks)
            if self._routes is not None:
                self._routes.reload(new.config.failover)
            self._configure_logs(new.config)
            self._start_stages(new)
            self.metrics.runtime.config_reloads.labels("success").inc()
            self.metrics.runtime.config_last_reload_success.set(clock.now())
            log.info("config reloaded", file=str(path), tasks=len(self._stage_tasks()))
            systemd.notify("READY=1", "STATUS=config reloaded")
            return True

    async def _share_auth(self, config: Config) -> None:
        """A reload into armed records now that every replica on the journal must
        authenticate (not at the next start); one without ``failover.auth`` checks that no
        armed replica requires it. AuthRequired or JournalError: refuse the reload — but for
        a replica that already ran without auth an unreadable journal does not block it (its
        ``shared-auth`` task checks again), and de-arming keeping auth reads nothing."""
        where = str(config.failover.journal or config.state_dir)
        try:
            await share_auth(config, self._failover().journal, where)
        except JournalError as exc:
            if config.mode is Mode.ARMED or self.config.failover.auth is not None:
                raise
            log.warning("cannot read the journal's shared auth; reloading anyway", error=str(exc))

    def _configure_logs(self, config: Config) -> None:
        logs.configure(self._log_level or config.log.level, self._log_format or config.log.format)

    def _stage_tasks(self) -> list[str]:
        """Probe and evaluation tasks: the intake that stops first on shutdown and reload."""
        probes = self._probes.tasks if self._probes is not None else []
        return [*probes, *self._evaluation_tasks]

    def _start_stages(self, setup: Setup) -> None:
        config = setup.config
        self._probes = ProbeRunner(
            config, self.supervisor, self._session, self.metrics.probes, self._observed
        )
        self._probes.start()
        slos = [slo for pack in setup.packs for slo in pack.slos]
        sources = self._promql_sources(config, slos)
        # SLOs read from Prometheus are judged on the event counters their sources fill.
        judged = {source.slo.name: event_slo(source.slo) for source in sources}
        engine = Engine(
            [judged.get(slo.name, slo) for slo in slos],
            self.metrics.evaluation,
            samples=self.metrics.samples,
            state_dir=config.state_dir,
            extra_groups=[
                *(group for pack in setup.packs for group in pack.groups()),
                *self._extra_groups,
            ],
            coarse_step=config.evaluation.coarse_step,
        )
        evaluation = [] if not engine.groups else ["evaluation"]
        if evaluation:
            schedule = Schedule(config.evaluation.interval)
            self.supervisor.start_periodic(
                "evaluation",
                config.evaluation.interval,
                lambda: self._evaluate(engine, schedule.at(clock.now()), sources, config),
                jitter=0,
            )
        # load_rule_packs allows one disaster-recovery pack at most.
        recovery = next((p.recovery for p in setup.packs if p.recovery is not None), None)
        if recovery is not None:
            checker = BackupChecker(recovery)
            journal = self._failover().journal
            self.supervisor.start_periodic(
                "backups",
                recovery.srd.s3.interval,
                lambda: self._check_backups(checker, journal),
                jitter=config.runtime.schedule_jitter,
            )
            evaluation.append("backups")
        self._evaluation_tasks = evaluation

    def _promql_sources(self, config: Config, slos: list[Slo]) -> list[PromqlSource]:
        prometheus = config.evaluation.prometheus
        pending = [slo for slo in slos if not slo.evaluable]
        if prometheus is None:
            if pending:
                log.warning(
                    "SLOs written in PromQL are exported but not judged: set "
                    "evaluation.prometheus to read them",
                    slos=[slo.name for slo in pending],
                )
            return []
        client = PromqlClient(str(prometheus.url), timeout=prometheus.timeout)
        lookback = 2 * prometheus.scrape_interval
        return [
            PromqlSource(slo, client, self.metrics.probes, lookback=lookback) for slo in pending
        ]

    async def _evaluate(
        self, engine: Engine, at: float, sources: Sequence[PromqlSource], config: Config
    ) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=logs.new_correlation_id()):
            lag = config.evaluation.prometheus.lag if config.evaluation.prometheus else 0.0
            for source in sources:
                poll = await source.poll(clock.now() - lag)
                if poll.reason:
                    log.debug("PromQL SLI not counted", slo=poll.slo, reason=poll.reason)
            transitions = engine.evaluate(at)
            for alert in transitions:
                log.info(
                    "alert " + alert.state,
                    alertname=alert.name,
                    labels=dict(alert.labels),
                    fingerprint=alert.fingerprint,
                )
                await self._failover().submit(alert)
            if engine is not self._rederived:
                # The first evaluation of these rules: a transition submitted before a crash
                # or a stop may not have reached the journal; the receipts dedup the rest.
                self._rederived = engine
                for alert in engine.states.alerts():
                    if alert not in transitions:
                        await self._failover().submit(alert)

    async def _check_backups(self, checker: BackupChecker, source: RecoverySource) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=logs.new_correlation_id()):
            for item in await assess_readiness(checker, source):
                record_readiness(self.metrics.evaluation, item)
                log.debug("disaster-recovery readiness", **item.to_dict())
            await export_drills(self._failover().journal, self.metrics.evaluation)

    def _observed(self, obs: Observation) -> None:
        self.metrics.probes.record(obs)
        self._last_obs[obs.target] = obs
        key = (obs.probe, obs.target)
        if self._last_up.get(key) != obs.up:
            if obs.up:
                log.info("target up", probe=obs.probe, target=obs.target)
            else:
                log.warning("target down", probe=obs.probe, target=obs.target, reason=obs.reason)
        self._last_up[key] = obs.up


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reason(exc: Exception) -> str:
    """Why a reload failed: srd's own errors by their message, anything else in full."""
    return str(exc) if isinstance(exc, AuthRequired | JournalError) else repr(exc)
