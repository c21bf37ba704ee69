"""Runs every probe of one config under the supervisor, and routes what they observe.

Substrate nodes get a long-running watcher each (nodes of one chain share a ChainGroup, so
blocks are counted once per chain); other targets are polled periodically; discovered targets
are started and stopped as discovery finds them; exporter pages of a node are cross-checked
against that node's RPC view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import structlog

from srd import logs
from srd.config import Config
from srd.config.probes import ProbeTarget
from srd.model import ChainSnapshot, Observation
from srd.probes import Probe, make_probe, periodic_targets
from srd.probes.chain import ChainGroup
from srd.probes.crosscheck import CrossCheckState, Heights, cross_check, page_heights
from srd.probes.discovery import DiscoveredTarget, Discovery
from srd.probes.metrics import ProbeMetrics
from srd.probes.substrate_watcher import SubstrateWatcher
from srd.supervisor import Job, Supervisor, TaskFactory, run_until_stopped

log = structlog.get_logger("srd.probes")

Sink = Callable[[Observation], None]


class ProbeRunner:
    def __init__(
        self,
        config: Config,
        supervisor: Supervisor,
        session: aiohttp.ClientSession,
        metrics: ProbeMetrics,
        sink: Sink,
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._session = session
        self._metrics = metrics
        self._sink = sink
        self.tasks: list[str] = []
        self._groups: dict[str, ChainGroup] = {}
        self._chains: dict[str, ChainSnapshot] = {}
        self._cross_states: dict[str, CrossCheckState] = {}
        self._cross_nodes = {
            page.name: page.substrate_node
            for page in config.probes.exporter
            if page.substrate_node is not None
        }
        self._discovered: dict[str, DiscoveredTarget] = {}

    def start(self) -> None:
        for node in self._config.probes.substrate:
            watcher = SubstrateWatcher(
                node, self._session, self._metrics, groups=self._groups, on_observation=self.observe
            )
            self._start(f"probe:substrate:{node.name}", watcher.run)
        for target in periodic_targets(self._config.probes):
            self._start_periodic(target)
        if self._config.discovery.scrape_config_files or self._config.discovery.kubernetes_pods:
            self._start("discovery", self._discover)

    async def stop(self, grace: float) -> None:
        await self._supervisor.stop(list(self.tasks), grace)
        self.tasks.clear()

    def observe(self, obs: Observation) -> None:
        if obs.chain is not None:
            self._chains[obs.target] = obs.chain
        node = self._cross_nodes.get(obs.target)
        if node is not None and obs.samples is not None and node in self._chains:
            self._cross_check(node, obs)
        self._sink(obs)

    def _cross_check(self, node: str, obs: Observation) -> None:
        rpc = self._chains[node]
        page = page_heights(obs.samples or (), rpc.chain)
        if page is None:
            return
        check = cross_check(Heights(rpc.best, rpc.finalized), page, self._cross_states.get(node))
        self._cross_states[node] = check.state
        self._metrics.record_cross_check(rpc.chain, node, check)
        if check.reason:
            log.warning("exporter disagrees with RPC", node=node, reason=check.reason)

    def _start(self, name: str, body: TaskFactory) -> None:
        self._supervisor.start(name, body)
        self.tasks.append(name)

    def _start_periodic(self, target: ProbeTarget, prefix: str = "probe") -> str:
        kind, probe = make_probe(target, self._session)
        name = f"{prefix}:{kind}:{target.name}"
        self._supervisor.start_periodic(
            name, target.interval, self._poll(probe), jitter=self._config.runtime.schedule_jitter
        )
        self.tasks.append(name)
        return name

    def _poll(self, probe: Probe) -> Job:
        async def poll() -> None:
            with structlog.contextvars.bound_contextvars(correlation_id=logs.new_correlation_id()):
                self.observe(await probe())

        return poll

    async def _discover(self, stop: asyncio.Event) -> None:
        discovery = Discovery(self._config.discovery, self._metrics)

        async def follow() -> None:
            async for targets in discovery.updates():
                await self._apply(targets)

        await run_until_stopped(follow(), stop)

    async def _apply(self, targets: list[DiscoveredTarget]) -> None:
        found = {target.name: target for target in targets}
        gone = [name for name, old in self._discovered.items() if found.get(name) != old]
        names = [self._discovered_task(self._discovered.pop(name)) for name in gone]
        await self._supervisor.stop(names, self._config.runtime.shutdown_grace)
        self.tasks = [task for task in self.tasks if task not in names]
        for name, target in found.items():
            if name not in self._discovered:
                self._discovered[name] = target
                self._start_periodic(target.target, prefix="discovered")
        log.info("discovered targets", count=len(found), stopped=len(gone))

    @staticmethod
    def _discovered_task(target: DiscoveredTarget) -> str:
        return f"discovered:{target.kind}:{target.name}"
