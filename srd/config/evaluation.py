"""The ``evaluation`` section: which rule packs are evaluated, how often, and the
Prometheus that PromQL SLIs are read from."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, model_validator

from srd.config.durations import Duration
from srd.config.types import Strict


class PrometheusSource(Strict):
    """A Prometheus server to read SLIs that srd cannot compute from its own series."""

    url: AnyHttpUrl
    timeout: Duration = Field(10.0, description="Limit of each query; the loop never waits on it.")
    lag: Duration = Field(
        30.0,
        description="Queries are evaluated this far in the past: about two scrape intervals, so "
        "the newest samples have arrived and a window is never read half-filled.",
    )
    scrape_interval: Duration = Field(
        60.0,
        description="How often Prometheus scrapes the SLIs' series (the longest, if they "
        "differ; 60 s is Prometheus' default): every query's range is at least two of them, "
        "so rate() finds two samples even when srd polls as often as Prometheus scrapes.",
    )


class EvaluationConfig(Strict):
    """In-process evaluation of the rule packs (SLOs, chain health, DR)."""

    rules: list[Path] = Field(
        default_factory=list,
        description="Rule pack files or directories (every *.yaml / *.yml in them); relative "
        "paths are read from the working directory.",
    )
    interval: Duration = Field(
        30.0,
        description="Seconds between evaluations. Prometheus' common 30 s: a 5 m window then "
        "holds 10 points, enough for rate() to be stable.",
    )
    prometheus: PrometheusSource | None = Field(
        None,
        description="Where SLIs written as PromQL (Sloth, OpenSLO) are read from; without it "
        "such SLOs are exported to Prometheus but not judged by srd.",
    )
    coarse_step: Duration = Field(
        300.0,
        description="Spacing of the history kept beyond the longest alert window (for SLO "
        "periods): memory stays flat over a 30 d period.",
    )

    @model_validator(mode="after")
    def _positive(self) -> EvaluationConfig:
        if self.interval <= 0 or self.coarse_step <= 0:
            raise ValueError("interval and coarse_step must be greater than 0")
        return self
