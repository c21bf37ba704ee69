"""Chain-health alert rules over srd's exported chain metrics, with the operator defaults.

The defaults are those of polkadot-sdk's own alerting rules (REFERENCE.md §2): production and
finalization slow (``increase(…[1m]) < 1``) 3 m warning / 10 m critical, finality lag over 10
blocks for 8 m critical, fewer than 3 peers 3 m warning / 15 m critical, and the stall tools'
120 s without a new block. Every threshold and duration is configurable in a ``chain:`` pack.

Each check yields one alert per severity with its own alertname (``…Critical`` for the critical
one when a check has both levels): srd keeps alert state per alertname, and two rules sharing a
name would clear each other.
Silencing the warning while the critical fires is Alertmanager's job (``inhibit_rules`` on
``severity``), as in the upstream rules.

A stopped node keeps its last block numbers in srd's gauges (``srd_probe_up`` says it is down),
so production-slow also fires for a node srd cannot reach: from the outside the two look alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from srd.config.durations import Duration, format_duration
from srd.config.files import load_yaml_model, parse_yaml_model
from srd.config.types import Strict
from srd.evaluation.rules import (
    AlertRule,
    Outcome,
    RecordingRule,
    Selector,
    SeriesNeed,
    SeriesReader,
)
from srd.model import LabelSet
from srd.probes.metrics import ProbeMetrics

BEST = ProbeMetrics.CHAIN_BEST_BLOCK
FINALIZED = ProbeMetrics.CHAIN_FINALIZED_BLOCK
FINALITY_LAG = ProbeMetrics.CHAIN_FINALITY_LAG
PEERS = ProbeMetrics.CHAIN_PEERS
SHOULD_HAVE_PEERS = ProbeMetrics.CHAIN_SHOULD_HAVE_PEERS
HEAD_AGE = ProbeMetrics.CHAIN_HEAD_AGE
HEAD_AGE_BLOCKS = ProbeMetrics.CHAIN_HEAD_AGE_BLOCKS
FINALIZED_DISAGREEMENT = ProbeMetrics.CHAIN_FINALIZED_DISAGREEMENT
EXPORTER_DISAGREEMENT = ProbeMetrics.CHAIN_EXPORTER_DISAGREEMENT


# --- conditions: one PromQL expression and its in-process twin ------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class IncreaseBelow:
    """``increase(metric[window]) < below``: the counter-like number did not rise enough."""

    metric: str
    window: float
    below: float

    def promql(self) -> str:
        return f"increase({self.metric}[{format_duration(self.window)}]) < {_number(self.below)}"

    def needs(self) -> list[SeriesNeed]:
        return [SeriesNeed(Selector(self.metric), self.window)]

    def evaluate(self, store: SeriesReader, at: float) -> dict[LabelSet, Outcome]:
        increases = store.increase(Selector(self.metric), at, self.window)
        return {labels: value < self.below for labels, value in increases.items()}


@dataclass(frozen=True)
class Compare:
    """``metric > threshold`` (or ``<``), optionally ``unless unless_zero == 0``: the same
    series of another gauge says the condition is expected (a node with no peers to have)."""

    metric: str
    op: Literal[">", "<"]
    threshold: float
    unless_zero: str | None = None

    def promql(self) -> str:
        expr = f"{self.metric} {self.op} {_number(self.threshold)}"
        return f"{expr} unless {self.unless_zero} == 0" if self.unless_zero else expr

    def needs(self) -> list[SeriesNeed]:
        names = [self.metric] + ([self.unless_zero] if self.unless_zero else [])
        # An instant read looks back; the store keeps the lookback beyond the range itself.
        return [SeriesNeed(Selector(name), 0.0) for name in names]

    def evaluate(self, store: SeriesReader, at: float) -> dict[LabelSet, Outcome]:
        values = store.last(Selector(self.metric), at)
        excused = set()
        if self.unless_zero:
            other = store.last(Selector(self.unless_zero), at)
            excused = {labels for labels, value in other.items() if value == 0}
        above = self.op == ">"
        return {
            labels: (value > self.threshold if above else value < self.threshold)
            for labels, value in values.items()
            if labels not in excused
        }


@dataclass(frozen=True)
class Stalled:
    """``blocks_metric > blocks or seconds_metric > seconds``: the head has not moved for
    ``blocks`` expected block times (the chain's own pace, when known), or for ``seconds``
    whatever the pace. ``or`` matches on labels without the metric name: one result a node."""

    blocks_metric: str
    blocks: float | None
    seconds_metric: str
    seconds: float

    def _parts(self) -> list[Compare]:
        parts = [] if self.blocks is None else [Compare(self.blocks_metric, ">", self.blocks)]
        return [*parts, Compare(self.seconds_metric, ">", self.seconds)]

    def promql(self) -> str:
        return " or ".join(part.promql() for part in self._parts())

    def needs(self) -> list[SeriesNeed]:
        return [need for part in self._parts() for need in part.needs()]

    def evaluate(self, store: SeriesReader, at: float) -> dict[LabelSet, Outcome]:
        out: dict[LabelSet, Outcome] = {}
        for part in self._parts():
            for labels, outcome in part.evaluate(store, at).items():
                out[labels] = bool(out.get(labels)) or bool(outcome)
        return out


Condition = IncreaseBelow | Compare | Stalled


@dataclass(frozen=True)
class ThresholdAlert:
    """An alerting rule (an ``AlertRule``) on one condition; the recovery rules use it too."""

    name: str
    condition: Condition
    for_: float
    severity: str
    summary: str
    description: str
    keep_firing_for: float = 0.0

    @property
    def labels(self) -> Mapping[str, str]:
        return {"severity": self.severity}

    @property
    def annotations(self) -> Mapping[str, str]:
        return {"summary": self.summary, "description": self.description}

    def expr(self) -> str:
        return self.condition.promql()

    def needs(self) -> Sequence[SeriesNeed]:
        return self.condition.needs()

    def evaluate(
        self, store: SeriesReader, at: float, firing: Mapping[str, bool]
    ) -> dict[LabelSet, Outcome]:
        return self.condition.evaluate(store, at)


@dataclass(frozen=True)
class AlertGroup:
    """A rule group (a ``RuleGroup``) of alerts only, no recordings."""

    name: str
    rules: tuple[ThresholdAlert, ...]

    def recording_rules(self) -> Sequence[RecordingRule]:
        return ()

    def alert_rules(self) -> Sequence[AlertRule]:
        return self.rules


# --- the pack: thresholds and durations ------------------------------------------------------


class Level(Strict):
    """One severity of a check: how long the condition must hold before it fires."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    for_: Duration = Field(alias="for")


def _level(seconds: float) -> Level:
    return Level(for_=seconds)


class Levels(Strict):
    """``warning``/``critical``; ``null`` turns a severity off."""

    warning: Level | None = None
    critical: Level | None = None


class IncreaseCheck(Levels):
    window: Duration = Field(60.0, description="Range of increase(); 10 blocks at 6 s.")
    min_increase: float = Field(1.0, gt=0, description="Fewer new blocks than this is slow.")
    warning: Level | None = Field(default_factory=lambda: _level(180.0))
    critical: Level | None = Field(default_factory=lambda: _level(600.0))


class FinalityLagCheck(Levels):
    max_blocks: float = Field(10.0, ge=0, description="Best minus finalized above this lags.")
    critical: Level | None = Field(default_factory=lambda: _level(480.0))


class PeersCheck(Levels):
    min_peers: float = Field(3.0, gt=0)
    warning: Level | None = Field(default_factory=lambda: _level(180.0))
    critical: Level | None = Field(default_factory=lambda: _level(900.0))


class HeadStalledCheck(Levels):
    max_age: Duration = Field(
        120.0,
        description="20 blocks at the 6 s target: not a slow block. The upper bound, also "
        "while the chain's expected block time is unknown.",
    )
    stall_blocks: float | None = Field(
        3.0,
        gt=0,
        description="Expected block times (configured per node, else the median of the last "
        "hour) without a new best block that make a stall: 18 s on a 6 s chain; null: only "
        "max_age.",
    )
    critical: Level | None = Field(default_factory=lambda: _level(0.0))


class FinalizedDisagreementCheck(Levels):
    """A 0/1 signal from the probes; ``for`` rides out one probe round of skew."""

    critical: Level | None = Field(default_factory=lambda: _level(60.0))


class ExporterDisagreementCheck(Levels):
    """A 0/1 signal from the probes; the metrics page refreshes every 5 s, RPC at once."""

    warning: Level | None = Field(default_factory=lambda: _level(300.0))


class ChainHealth(Strict):
    block_production_slow: IncreaseCheck = Field(default_factory=IncreaseCheck)
    finalization_slow: IncreaseCheck = Field(default_factory=IncreaseCheck)
    finality_lag: FinalityLagCheck = Field(default_factory=FinalityLagCheck)
    peers_low: PeersCheck = Field(default_factory=PeersCheck)
    head_stalled: HeadStalledCheck = Field(default_factory=HeadStalledCheck)
    finalized_hash_disagreement: FinalizedDisagreementCheck = Field(
        default_factory=FinalizedDisagreementCheck
    )
    exporter_disagreement: ExporterDisagreementCheck = Field(
        default_factory=ExporterDisagreementCheck
    )

    def group(self) -> AlertGroup:
        """The rules, critical before warning within a check, checks in a fixed order."""
        rules: list[ThresholdAlert] = []
        production, finalization = self.block_production_slow, self.finalization_slow
        lag, peers, stalled = self.finality_lag, self.peers_low, self.head_stalled
        checks: list[tuple[str, Levels, Condition, str, str]] = [
            (
                "ChainBlockProductionSlow",
                production,
                IncreaseBelow(BEST, production.window, production.min_increase),
                "Block production is slow",
                f"A node's best block rose by less than {_number(production.min_increase)} "
                f"in {format_duration(production.window)}.",
            ),
            (
                "ChainFinalizationSlow",
                finalization,
                IncreaseBelow(FINALIZED, finalization.window, finalization.min_increase),
                "Finalization is slow",
                f"A node's finalized block rose by less than "
                f"{_number(finalization.min_increase)} in {format_duration(finalization.window)}.",
            ),
            (
                "ChainFinalityLagHigh",
                lag,
                Compare(FINALITY_LAG, ">", lag.max_blocks),
                "Finality lags behind the best block",
                f"Best minus finalized block is above {_number(lag.max_blocks)} blocks.",
            ),
            (
                "ChainPeersLow",
                peers,
                Compare(PEERS, "<", peers.min_peers, unless_zero=SHOULD_HAVE_PEERS),
                "A node has few peers",
                f"A node that should have peers has fewer than {_number(peers.min_peers)}.",
            ),
            (
                "ChainHeadStalled",
                stalled,
                Stalled(HEAD_AGE_BLOCKS, stalled.stall_blocks, HEAD_AGE, stalled.max_age),
                "A node's head is stalled",
                f"No new best block for more than {format_duration(stalled.max_age)}"
                + (
                    ""
                    if stalled.stall_blocks is None
                    else f" or {_number(stalled.stall_blocks)} expected block times"
                )
                + ".",
            ),
            (
                "ChainFinalizedHashDisagreement",
                self.finalized_hash_disagreement,
                Compare(FINALIZED_DISAGREEMENT, ">", 0),
                "Nodes finalized different blocks",
                "Nodes of the chain report different finalized hashes at the same height.",
            ),
            (
                "ChainExporterDisagreement",
                self.exporter_disagreement,
                Compare(EXPORTER_DISAGREEMENT, ">", 0),
                "A node's metrics disagree with its RPC",
                "substrate_block_height on the node's metrics page disagrees with its RPC.",
            ),
        ]
        for base, levels, condition, summary, description in checks:
            # Only a check with both levels needs a second name; a lone level keeps the plain one.
            both = levels.warning is not None and levels.critical is not None
            for severity, level in (("critical", levels.critical), ("warning", levels.warning)):
                if level is not None:
                    name = f"{base}Critical" if both and severity == "critical" else base
                    rules.append(
                        ThresholdAlert(name, condition, level.for_, severity, summary, description)
                    )
        return AlertGroup("chain-health", tuple(rules))


class ChainPack(Strict):
    """A chain-health rule pack: one ``chain:`` key; anything left out keeps its default."""

    chain: ChainHealth = Field(default_factory=ChainHealth)


def parse_chain_pack(text: str, filename: str) -> ChainHealth:
    return parse_yaml_model(text, filename, ChainPack).chain


def load_chain_pack(path: Path) -> ChainHealth:
    """Read and validate a chain pack; ConfigError names file, line and key of each problem."""
    return load_yaml_model(path, ChainPack).chain
