"""The probe stage's metrics: what srd observed of its targets, chains, backups' sources and
PromQL SLIs, on a registry the runtime gives (never the global one: tests build their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from srd.model import ChainSnapshot, Observation
from srd.probes.crosscheck import CrossCheck
from srd.probes.stream_metrics import StreamMetrics

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BLOCK_TIME_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 18.0, 30.0, 60.0, 120.0)
"""Around the platform's 6 s target, finely; up to the 120 s stall threshold."""
REORG_DEPTH_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 20.0, 50.0, 100.0)


class ProbeMetrics:
    """The probe stage's metrics, created on ``registry``."""

    UP = "srd_probe_up"
    RESULTS = "srd_probe_results"
    DURATION = "srd_probe_duration_seconds"
    DISCOVERED_TARGETS = "srd_discovered_targets"
    DISCOVERY_FAILURES = "srd_discovery_failures"
    PROMQL_SLI_EVENTS = "srd_promql_sli_events"
    CHAIN_BEST_BLOCK = "srd_chain_best_block"
    CHAIN_FINALIZED_BLOCK = "srd_chain_finalized_block"
    CHAIN_EXPORTER_DISAGREEMENT = "srd_chain_exporter_disagreement"
    CHAIN_EXPORTER_STALE = "srd_chain_exporter_stale"
    CHAIN_FINALITY_LAG = "srd_chain_finality_lag_blocks"
    CHAIN_HEAD_AGE = "srd_chain_head_age_seconds"
    CHAIN_FINALIZED_AGE = "srd_chain_finalized_age_seconds"
    CHAIN_PEERS = "srd_chain_peers"
    CHAIN_SHOULD_HAVE_PEERS = "srd_chain_should_have_peers"
    CHAIN_SYNCING = "srd_chain_syncing"
    CHAIN_SYNC_GAP = "srd_chain_sync_gap_blocks"
    CHAIN_BLOCK_TIME = "srd_chain_block_time_seconds"
    CHAIN_REORGS = "srd_chain_reorgs"
    CHAIN_REORG_DEPTH = "srd_chain_reorg_depth_blocks"
    CHAIN_BEST_SPREAD = "srd_chain_best_block_spread_blocks"
    CHAIN_FINALIZED_DISAGREEMENT = "srd_chain_finalized_hash_disagreement"
    CHAIN_SUBSCRIPTION_RESTARTS = "srd_chain_subscription_restarts"
    CHAIN_SUBSCRIPTION_ATTEMPTS = "srd_chain_subscription_attempts"
    CHAIN_HEIGHT_REGRESSIONS = "srd_chain_height_regressions"
    CHAIN_EXPECTED_BLOCK_TIME = "srd_chain_expected_block_time_seconds"
    CHAIN_HEAD_AGE_BLOCKS = "srd_chain_head_age_blocks"
    BLOCKS_PRODUCED = "vilokanam_blocks_produced"
    RPC_DURATION = "srd_rpc_request_duration_seconds"
    RPC_ERRORS = "srd_rpc_errors"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = reg = registry
        self.probe_up = Gauge(
            self.UP,
            "1 when the last probe of a target succeeded, 0 otherwise.",
            ["probe", "target"],
            registry=reg,
        )
        self.probe_results = Counter(
            self.RESULTS,
            "Probes by outcome (success, failure): the event counts availability SLIs use.",
            ["probe", "target", "result"],
            registry=reg,
        )
        self.probe_duration = Histogram(
            self.DURATION,
            "Duration of probes, by probe kind.",
            ["probe"],
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.discovered_targets = Gauge(
            self.DISCOVERED_TARGETS,
            "Targets the last successful discovery round of a source found (after max_targets).",
            ["source"],
            registry=reg,
        )
        self.discovery_failures = Counter(
            self.DISCOVERY_FAILURES,
            "Discovery rounds of a source that failed; its previous targets were kept.",
            ["source"],
            registry=reg,
        )
        self.chain_best_block = Gauge(
            self.CHAIN_BEST_BLOCK,
            "Best block number a node reports.",
            ["chain", "node"],
            registry=reg,
        )
        self.chain_finalized_block = Gauge(
            self.CHAIN_FINALIZED_BLOCK,
            "Finalized block number a node reports.",
            ["chain", "node"],
            registry=reg,
        )
        self.chain_exporter_disagreement = Gauge(
            self.CHAIN_EXPORTER_DISAGREEMENT,
            "1 when a node's metrics page (substrate_block_height) disagrees with its RPC "
            "beyond the tolerance.",
            ["chain", "node"],
            registry=reg,
        )
        self.chain_exporter_stale = Gauge(
            self.CHAIN_EXPORTER_STALE,
            "1 when a node's metrics page stopped advancing while its RPC kept advancing.",
            ["chain", "node"],
            registry=reg,
        )
        self._chain_metrics(reg)
        self.promql_sli_events = Counter(
            self.PROMQL_SLI_EVENTS,
            "Events of a PromQL SLI counted from Prometheus query results, by kind (bad, "
            "total): the counters the SLO engine evaluates such an SLI on.",
            ["slo", "kind"],
            registry=reg,
        )
        self.streams = StreamMetrics()
        reg.register(self.streams)

    def _chain_metrics(self, reg: CollectorRegistry) -> None:
        node = ["chain", "node"]
        self.chain_finality_lag = Gauge(
            self.CHAIN_FINALITY_LAG,
            "Best minus finalized block number.",
            node,
            registry=reg,
        )
        self.chain_head_age = Gauge(
            self.CHAIN_HEAD_AGE,
            "Seconds since a node's best block number last rose.",
            node,
            registry=reg,
        )
        self.chain_finalized_age = Gauge(
            self.CHAIN_FINALIZED_AGE,
            "Seconds since a node's finalized block number last rose.",
            node,
            registry=reg,
        )
        self.chain_peers = Gauge(self.CHAIN_PEERS, "Peers of a node.", node, registry=reg)
        self.chain_should_have_peers = Gauge(
            self.CHAIN_SHOULD_HAVE_PEERS,
            "1 when the node expects peers (shouldHavePeers); peers 0 is then a fault.",
            node,
            registry=reg,
        )
        self.chain_syncing = Gauge(
            self.CHAIN_SYNCING, "1 while a node is major-syncing.", node, registry=reg
        )
        self.chain_sync_gap = Gauge(
            self.CHAIN_SYNC_GAP,
            "Blocks a node is behind the highest block it knows of (system_syncState).",
            node,
            registry=reg,
        )
        self.chain_block_time = Histogram(
            self.CHAIN_BLOCK_TIME,
            "Seconds between consecutive blocks of a chain as srd saw them (forks and "
            "backfilled gaps excluded).",
            ["chain"],
            buckets=BLOCK_TIME_BUCKETS,
            registry=reg,
        )
        self.chain_reorgs = Counter(
            self.CHAIN_REORGS, "Reorgs a node went through.", node, registry=reg
        )
        self.chain_reorg_depth = Histogram(
            self.CHAIN_REORG_DEPTH,
            "Depth of reorgs: best-chain blocks that stopped being canonical.",
            node,
            buckets=REORG_DEPTH_BUCKETS,
            registry=reg,
        )
        self.chain_best_spread = Gauge(
            self.CHAIN_BEST_SPREAD,
            "Highest minus lowest best block number across the nodes of a chain.",
            ["chain"],
            registry=reg,
        )
        self.chain_finalized_disagreement = Gauge(
            self.CHAIN_FINALIZED_DISAGREEMENT,
            "1 when nodes of a chain finalized different blocks at the same height.",
            ["chain"],
            registry=reg,
        )
        self.chain_subscription_restarts = Counter(
            self.CHAIN_SUBSCRIPTION_RESTARTS,
            "Working head subscriptions started again, by reason (silent: no notification "
            "while the chain advanced; closed: an open WebSocket failed or closed; stop: the "
            "node ended a chainHead_v1_follow). Failed connection attempts are not restarts: "
            "srd_chain_subscription_attempts_total counts those.",
            ["chain", "node", "reason"],
            registry=reg,
        )
        self.chain_subscription_attempts = Counter(
            self.CHAIN_SUBSCRIPTION_ATTEMPTS,
            "WebSocket connections srd opened (or tried to) to follow heads; while a node "
            "stays down they back off exponentially, with jitter, up to 60 s apart.",
            ["chain", "node"],
            registry=reg,
        )
        self.chain_height_regressions = Counter(
            self.CHAIN_HEIGHT_REGRESSIONS,
            "Times a node's best or finalized height went back without a reorg (kind: best, "
            "finalized): a node reset to a fresh database or an old snapshot, or a URL "
            "load-balanced across nodes that are not in step. srd follows what the node says.",
            ["node", "kind"],
            registry=reg,
        )
        self.chain_expected_block_time = Gauge(
            self.CHAIN_EXPECTED_BLOCK_TIME,
            "Seconds per block a chain is expected to take: configured (expected_block_time), "
            "else the median block time of the last hour; absent until known.",
            ["chain"],
            registry=reg,
        )
        self.chain_head_age_blocks = Gauge(
            self.CHAIN_HEAD_AGE_BLOCKS,
            "Seconds since a node's best block rose, in expected block times: the stall "
            "signal at the chain's own pace; absent while the expected block time is unknown.",
            ["chain", "node"],
            registry=reg,
        )
        self.blocks_produced = Counter(
            self.BLOCKS_PRODUCED,
            "Blocks srd saw the chain produce, forks excluded, counted once per chain.",
            ["chain"],
            registry=reg,
        )
        self.rpc_duration = Histogram(
            self.RPC_DURATION,
            "Duration of JSON-RPC calls to Substrate nodes, by method.",
            ["method"],
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.rpc_errors = Counter(
            self.RPC_ERRORS,
            "Failed JSON-RPC calls by method and error class (bounded set, see "
            "srd.probes.substrate.classify).",
            ["method", "class"],
            registry=reg,
        )

    def record_cross_check(self, chain: str, node: str, check: CrossCheck) -> None:
        self.chain_exporter_disagreement.labels(chain, node).set(int(check.disagreement))
        self.chain_exporter_stale.labels(chain, node).set(int(check.stale))

    def record(self, obs: Observation) -> None:
        """Export one observation. A failed probe keeps the last chain numbers out of date
        rather than zeroing them: ``srd_probe_up`` says the data is stale."""
        self.probe_up.labels(obs.probe, obs.target).set(1 if obs.up else 0)
        # Both outcomes exist from the first probe, so a bad/total ratio is 0, not absent.
        success = self.probe_results.labels(obs.probe, obs.target, "success")
        failure = self.probe_results.labels(obs.probe, obs.target, "failure")
        (success if obs.up else failure).inc()
        self.probe_duration.labels(obs.probe).observe(obs.duration)
        if obs.chain is not None:
            self.chain_best_block.labels(obs.chain.chain, obs.target).set(obs.chain.best)
            self.chain_finalized_block.labels(obs.chain.chain, obs.target).set(obs.chain.finalized)
            self._record_chain(obs.chain, obs.target)
        if obs.samples is not None:
            self.streams.update(obs)

    def _record_chain(self, chain: ChainSnapshot, node: str) -> None:
        labels = (chain.chain, node)
        # Reorg series exist at 0 from a node's first snapshot: no reorgs is 0, not no-data,
        # and rate() sees the first reorg (a counter born at 1 would hide it).
        self.chain_reorgs.labels(*labels)
        self.chain_reorg_depth.labels(*labels)
        self.chain_finality_lag.labels(*labels).set(chain.finality_lag)
        self.chain_peers.labels(*labels).set(chain.peers)
        self.chain_should_have_peers.labels(*labels).set(int(chain.should_have_peers))
        self.chain_syncing.labels(*labels).set(int(chain.is_syncing))
        # Unknown values are left out rather than exported as zero: no-data is not "fresh".
        if chain.head_age is not None:
            self.chain_head_age.labels(*labels).set(chain.head_age)
        if chain.finalized_age is not None:
            self.chain_finalized_age.labels(*labels).set(chain.finalized_age)
        if chain.sync_gap is not None:
            self.chain_sync_gap.labels(*labels).set(chain.sync_gap)
        if chain.expected_block_time is not None:
            self.chain_expected_block_time.labels(chain.chain).set(chain.expected_block_time)
        if chain.head_age_blocks is not None:
            self.chain_head_age_blocks.labels(*labels).set(chain.head_age_blocks)
