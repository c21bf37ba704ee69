"""The metrics reference (docs/metrics.md) as the code defines it.

Regenerate after adding a metric: ``python -m tests.support.metrics_doc > docs/metrics.md``.
"""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from srd.runtime import DaemonMetrics

HEADER = """\
# Metrics srd exports

Generated from the code (`python -m tests.support.metrics_doc > docs/metrics.md`); the tests fail
when it is out of date. Counters are listed with their `_total` suffix; histograms also
expose `_bucket`, `_sum` and `_count`. Process metrics (`process_*`, `python_info`) come from
prometheus-client.

The platform's stream metrics `vilokanam_active_streams` (gauge), `vilokanam_viewer_count`
(gauge) and `vilokanam_transaction_latency_seconds` (histogram) are re-exported from the
platform's exporters or stream stats, summed over sources; they are absent until a source has
been read.

| metric | type | labels | meaning |
|---|---|---|---|
"""


def rows() -> list[str]:
    found = []
    daemon = DaemonMetrics()
    groups = (daemon.runtime, daemon.supervisor, daemon.probes, daemon.evaluation, daemon.failover)
    for value in (value for group in groups for value in vars(group).values()):
        if isinstance(value, MetricWrapperBase):
            # prometheus-client keeps these private; a reference generator may read them.
            name = value._name + ("_total" if value._type == "counter" else "")
            labels = ", ".join(f"`{label}`" for label in value._labelnames) or "—"
            found.append(f"| `{name}` | {value._type} | {labels} | {value._documentation} |")
    return sorted(found)


def document() -> str:
    return HEADER + "\n".join(rows()) + "\n"


if __name__ == "__main__":
    print(document(), end="")
