"""The platform's stream metrics, re-exported under its own ``vilokanam_*`` names.

Sources are observations carrying samples: the platform's exporter pages and its JSON stats
endpoint. Gauges are summed over sources; the transaction latency histogram is summed bucket
by bucket (same ``le``) over sources with the same labels. A source that fails keeps its last
values, so the summed histogram never goes backwards (which ``rate()`` would read as a
counter reset); ``srd_probe_up`` says which source is stale. With no source, a name is absent
from /metrics: no-data, never zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from srd.model import Observation, Sample

ACTIVE_STREAMS = "vilokanam_active_streams"
VIEWER_COUNT = "vilokanam_viewer_count"
TRANSACTION_LATENCY = "vilokanam_transaction_latency_seconds"
NAMES = (ACTIVE_STREAMS, VIEWER_COUNT, TRANSACTION_LATENCY)
_KEPT = frozenset(
    [ACTIVE_STREAMS, VIEWER_COUNT]
    + [TRANSACTION_LATENCY + suffix for suffix in ("_bucket", "_sum", "_count")]
)
_GAUGES = {
    ACTIVE_STREAMS: "Live streams on the platform, summed over its exporters or stats endpoint.",
    VIEWER_COUNT: "Connected viewers, summed over the platform's exporters or stats endpoint.",
}

LabelKey = tuple[tuple[str, str], ...]


class StreamMetrics(Collector):
    """A prometheus_client collector fed with observations by ``update``."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[Sample, ...]] = {}

    def update(self, obs: Observation) -> None:
        if not obs.up or obs.samples is None:
            return
        kept = tuple(sample for sample in obs.samples if sample.name in _KEPT)
        if kept:
            self._latest[obs.probe, obs.target] = kept

    def collect(self) -> Iterator[Metric]:
        samples = [sample for kept in self._latest.values() for sample in kept]
        for name, documentation in _GAUGES.items():
            values = [s.value for s in samples if s.name == name]
            if values:
                gauge = GaugeMetricFamily(name, documentation)
                gauge.add_metric([], math.fsum(values))
                yield gauge
        histogram = _histogram(samples)
        if histogram is not None:
            yield histogram


def _histogram(samples: list[Sample]) -> HistogramMetricFamily | None:
    buckets: dict[LabelKey, dict[float, float]] = {}
    sums: dict[LabelKey, float] = {}
    for sample in samples:
        if not sample.name.startswith(TRANSACTION_LATENCY):
            continue
        key = tuple(sorted((k, v) for k, v in sample.labels if k != "le"))
        suffix = sample.name[len(TRANSACTION_LATENCY) :]
        if suffix == "_bucket" and (le := sample.label("le")) is not None:
            per_le = buckets.setdefault(key, {})
            bound = float(le)
            per_le[bound] = per_le.get(bound, 0.0) + sample.value
        elif suffix == "_sum":
            sums[key] = sums.get(key, 0.0) + sample.value
    if not buckets:
        return None
    label_names = sorted({k for key in buckets for k, _ in key})
    family = HistogramMetricFamily(
        TRANSACTION_LATENCY,
        "Platform transaction latency, re-exported from the platform's exporters.",
        labels=label_names,
    )
    for key, per_le in sorted(buckets.items()):
        if math.inf not in per_le:
            continue  # without +Inf there is no count: not a valid histogram to re-export
        labels = dict(key)
        family.add_metric(
            [labels.get(name, "") for name in label_names],
            [(_le(bound), value) for bound, value in sorted(per_le.items())],
            sums.get(key),  # no _sum scraped: no _sum and _count re-exported, never a zero
        )
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)
