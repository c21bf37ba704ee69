"""The daemon: wires config, probes, metrics and the server under one supervisor.

Signals only set flags (SIGTERM/SIGINT: stop; SIGHUP: reload); the work happens in tasks.
Shutdown goes in stages: intake stops (readiness turns false, no new polls are scheduled),
in-flight polls finish within ``runtime.shutdown_grace``, then the server closes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import structlog

from srd import __version__, logs, systemd
from srd.config import Config, ConfigError, load_config
from srd.metrics import Metrics
from srd.model import Observation
from srd.probes import Probe, build_probes
from srd.server import build_app, serving
from srd.supervisor import Backoff, Supervisor, wait_first

log = structlog.get_logger("srd.runtime")

EXIT_OK = 0
EXIT_FAILED = 1


class Daemon:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        metrics: Metrics | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.metrics = metrics or Metrics()
        self._log_level = log_level
        self._log_format = log_format
        self._probe_tasks: list[str] = []
        self._last_up: dict[tuple[str, str], bool] = {}
        self._stop_requested = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._server_up = False
        self.supervisor = Supervisor(
            self.metrics,
            Backoff(config.runtime.restart_backoff_initial, config.runtime.restart_backoff_max),
        )

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
        self.metrics.config_last_reload_success.set(time.time())
        try:
            return await self._run()
        finally:
            for signum in handlers:
                loop.remove_signal_handler(signum)

    async def _run(self) -> int:
        headers = {"User-Agent": f"srd/{__version__}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            self._session = session
            self.supervisor.start("server", self._serve, essential=True)
            self.supervisor.start("reloader", self._reloader)
            self._start_probes(self.config)
            await wait_first(self._stop_requested, self.supervisor.failed)
            failure = self.supervisor.failure
            systemd.notify("STOPPING=1")
            grace = self.config.runtime.shutdown_grace
            log.info("shutting down", grace_seconds=grace, reason=str(failure or "signal"))
            await self.supervisor.shutdown(grace, first=self._probe_tasks)
        if failure is not None:
            log.error("stopped because an essential task failed", failure=str(failure))
            return EXIT_FAILED
        log.info("stopped")
        return EXIT_OK

    async def _serve(self, stop: asyncio.Event) -> None:
        server = self.config.server
        app = build_app(self.metrics.registry, self.not_ready)
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
        """Validate the config file again and apply it; a bad one leaves the old running."""
        with structlog.contextvars.bound_contextvars(
            correlation_id=logs.new_correlation_id(), action="reload"
        ):
            systemd.reloading()
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                self.metrics.config_reloads.labels("error").inc()
                log.error(
                    "config reload failed; the running config stays in force",
                    file=str(self.config_path),
                    errors=[str(issue) for issue in exc.issues],
                )
                systemd.notify("READY=1", "STATUS=config reload failed; old config kept")
                return False
            if new.server != self.config.server:
                log.warning("server settings changed; they take effect after a restart")
            await self.supervisor.stop(self._probe_tasks, self.config.runtime.shutdown_grace)
            self.config = new
            self._configure_logs(new)
            self._start_probes(new)
            self.metrics.config_reloads.labels("success").inc()
            self.metrics.config_last_reload_success.set(time.time())
            log.info("config reloaded", file=str(self.config_path), probes=len(self._probe_tasks))
            systemd.notify("READY=1", "STATUS=config reloaded")
            return True

    def _configure_logs(self, config: Config) -> None:
        logs.configure(self._log_level or config.log.level, self._log_format or config.log.format)

    def _start_probes(self, config: Config) -> None:
        self._probe_tasks = []
        for target, kind, probe in build_probes(config.probes, self._session):
            name = f"probe:{kind}:{target.name}"
            self.supervisor.start_periodic(
                name, target.interval, self._poll_job(probe), jitter=config.runtime.schedule_jitter
            )
            self._probe_tasks.append(name)

    def _poll_job(self, probe: Probe) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:
            with structlog.contextvars.bound_contextvars(correlation_id=logs.new_correlation_id()):
                self._observed(await probe())

        return poll

    def _observed(self, obs: Observation) -> None:
        self.metrics.record(obs)
        key = (obs.probe, obs.target)
        if self._last_up.get(key) != obs.up:
            if obs.up:
                log.info("target up", probe=obs.probe, target=obs.target)
            else:
                log.warning("target down", probe=obs.probe, target=obs.target, reason=obs.reason)
        self._last_up[key] = obs.up


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
