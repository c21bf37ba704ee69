"""The daemon: wires config, probes, evaluation, metrics and the server under one supervisor.

Signals only set flags (SIGTERM/SIGINT: stop; SIGHUP: reload); the work happens in tasks.
Shutdown goes in stages: intake stops (readiness turns false, no new polls are scheduled),
in-flight polls finish within ``runtime.shutdown_grace``, then the server closes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from pydantic import ValidationError

from srd import __version__, clock, logs, systemd
from srd.actuators import registry
from srd.actuators.base import Actuator
from srd.config import Config, ConfigError, ConfigIssue, load_config
from srd.evaluation.engine import Engine
from srd.evaluation.recovery import RecoverySource
from srd.evaluation.rulepacks import RulePack, load_rule_packs
from srd.evaluation.rules import RuleGroup
from srd.evaluation.slo import Slo
from srd.failover.leader import leadership_from_config
from srd.failover.runbooks import Runbook, load_runbooks
from srd.failover.stage import FailoverStage
from srd.http.app import build_app, serving
from srd.journal import Journal
from srd.metrics import Metrics
from srd.model import Observation
from srd.probes.backups import BackupChecker, assess_readiness
from srd.probes.promql import PromqlClient, PromqlSource, event_slo
from srd.probes.runner import ProbeRunner
from srd.supervisor import Backoff, Supervisor, wait_first

log = structlog.get_logger("srd.runtime")

EXIT_OK = 0
EXIT_FAILED = 1
PRUNE_INTERVAL = 3600.0
"""Seconds between applications of failover.journal_retention: receipts only grow by the
alerts received, so hourly keeps the table within an hour of the retention."""
DRILL_LOOKBACK = 500
"""Executions read back for drill records: the newest, where the last run of each drill is."""


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
        metrics: Metrics | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        extra_groups: Sequence[RuleGroup] = (),
    ) -> None:
        """``extra_groups``: rule groups evaluated beside the rule packs' (a drill's alerts)."""
        self.setup = setup
        self._extra_groups = tuple(extra_groups)
        self.metrics = metrics or Metrics()
        self._log_level = log_level
        self._log_format = log_format
        self._last_up: dict[tuple[str, str], bool] = {}
        self._stop_requested = asyncio.Event()
        self._reload_requested = asyncio.Event()
        runtime = setup.config.runtime
        self.supervisor = Supervisor(
            self.metrics, Backoff(runtime.restart_backoff_initial, runtime.restart_backoff_max)
        )
        self._probes: ProbeRunner | None = None
        self._evaluation_tasks: list[str] = []
        self._last_obs: dict[str, Observation] = {}
        self._retired: list[Actuator] = []
        self.failover: FailoverStage | None = None

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
        return reasons

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until an essential task fails (exit 1)."""
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload,
        }
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        self._configure_logs(self.config)
        self.metrics.config_reloads.labels("success")
        self.metrics.config_reloads.labels("error")
        self.metrics.config_last_reload_success.set(clock.now())
        try:
            return await self._run()
        finally:
            for signum in handlers:
                loop.remove_signal_handler(signum)

    async def _run(self) -> int:
        headers = {"User-Agent": f"srd/{__version__}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            self._session = session
            leadership, keep_leadership = leadership_from_config(
                self.config, self.metrics, on_loss=self._deposed, on_acquire=self._elected
            )
            failover = self.failover = await FailoverStage.open(
                self.config,
                session,
                self.metrics,
                actuators=self.setup.actuators,
                runbooks=self.setup.runbooks,
                probe_status=self._last_obs.get,
                leadership=leadership,
            )
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
        self._failover().add_routes(app)
        async with serving(app, server.host, server.port) as port:
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
            except ConfigError as exc:
                self.metrics.config_reloads.labels("error").inc()
                log.error(
                    "config reload failed; the running config stays in force",
                    file=str(path),
                    errors=[str(issue) for issue in exc.issues],
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
            self._configure_logs(new.config)
            self._start_stages(new)
            self.metrics.config_reloads.labels("success").inc()
            self.metrics.config_last_reload_success.set(clock.now())
            log.info("config reloaded", file=str(path), tasks=len(self._stage_tasks()))
            systemd.notify("READY=1", "STATUS=config reloaded")
            return True

    def _configure_logs(self, config: Config) -> None:
        logs.configure(self._log_level or config.log.level, self._log_format or config.log.format)

    def _stage_tasks(self) -> list[str]:
        """Probe and evaluation tasks: the intake that stops first on shutdown and reload."""
        probes = self._probes.tasks if self._probes is not None else []
        return [*probes, *self._evaluation_tasks]

    def _start_stages(self, setup: Setup) -> None:
        config = setup.config
        self._probes = ProbeRunner(
            config, self.supervisor, self._session, self.metrics, self._observed
        )
        self._probes.start()
        slos = [slo for pack in setup.packs for slo in pack.slos]
        sources = self._promql_sources(config, slos)
        # SLOs read from Prometheus are judged on the event counters their sources fill.
        judged = {source.slo.name: event_slo(source.slo) for source in sources}
        engine = Engine(
            [judged.get(slo.name, slo) for slo in slos],
            self.metrics,
            state_dir=config.state_dir,
            extra_groups=[
                *(group for pack in setup.packs for group in pack.groups()),
                *self._extra_groups,
            ],
            coarse_step=config.evaluation.coarse_step,
        )
        evaluation = [] if not engine.groups else ["evaluation"]
        if evaluation:
            self.supervisor.start_periodic(
                "evaluation",
                config.evaluation.interval,
                lambda: self._evaluate(engine, sources, config),
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
        return [PromqlSource(slo, client, self.metrics) for slo in pending]

    async def _evaluate(
        self, engine: Engine, sources: Sequence[PromqlSource], config: Config
    ) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=logs.new_correlation_id()):
            lag = config.evaluation.prometheus.lag if config.evaluation.prometheus else 0.0
            for source in sources:
                poll = await source.poll(clock.now() - lag)
                if poll.reason:
                    log.debug("PromQL SLI not counted", slo=poll.slo, reason=poll.reason)
            for alert in engine.evaluate(clock.now()):
                log.info(
                    "alert " + alert.state,
                    alertname=alert.name,
                    labels=dict(alert.labels),
                    fingerprint=alert.fingerprint,
                )
                await self._failover().submit(alert)

    async def _check_backups(self, checker: BackupChecker, source: RecoverySource) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=logs.new_correlation_id()):
            for item in await assess_readiness(checker, source, self.metrics):
                log.debug("disaster-recovery readiness", **item.to_dict())
            await export_drills(self._failover().journal, self.metrics)

    def _observed(self, obs: Observation) -> None:
        self.metrics.record(obs)
        self._last_obs[obs.target] = obs
        key = (obs.probe, obs.target)
        if self._last_up.get(key) != obs.up:
            if obs.up:
                log.info("target up", probe=obs.probe, target=obs.target)
            else:
                log.warning("target down", probe=obs.probe, target=obs.target, reason=obs.reason)
        self._last_up[key] = obs.up


async def export_drills(journal: Journal, metrics: Metrics) -> None:
    """The last run of each drill ``srd simulate`` recorded in ``journal``, as
    ``srd_drill_last_*{drill}`` (newest first: the first record of a drill is its last)."""
    seen: set[str] = set()
    for execution in await journal.executions(DRILL_LOOKBACK):
        alert = execution.alert
        name = str(alert.get("drill", ""))
        if alert.get("kind") != "drill" or not name or name in seen:
            continue
        seen.add(name)
        metrics.drill_last_run.labels(name).set(execution.created_at)
        metrics.drill_last_passed.labels(name).set(int(bool(alert.get("passed"))))
        rto = alert.get("rto_seconds")
        if isinstance(rto, int | float):
            metrics.drill_last_rto.labels(name).set(rto)
        else:
            metrics.drill_last_rto.remove(name)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
