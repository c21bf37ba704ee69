"""The ``probes`` section: the static targets srd observes, by kind."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, AnyUrl, Field, UrlConstraints, field_validator, model_validator

from srd.config.durations import Duration
from srd.config.types import ResolveError, SecretRef, Strict, compiles
from srd.jsonpath import JsonPath


class ProbeTarget(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Label value in metrics.")
    interval: Duration = 5.0
    timeout: Duration = 2.0

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> ProbeTarget:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if not 0 < self.timeout <= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be greater than 0 and at most the interval "
                f"({self.interval:g}s), or polls would overlap"
            )
        return self


NodeUrl = Annotated[
    AnyUrl, UrlConstraints(allowed_schemes=["http", "https", "ws", "wss"], host_required=True)
]
"""A node's JSON-RPC URL in either transport: Substrate serves both on one port."""


class SubstrateTarget(ProbeTarget):
    """A Substrate node's JSON-RPC endpoint (port 9944 by default), as ``http(s)://`` or
    ``ws(s)://``. Heads come from a WebSocket subscription on the same host, port and path;
    health and fallback polls go over HTTP, or over a WebSocket when the node serves only that
    (a ``ws(s)://`` URL whose HTTP side refuses JSON-RPC)."""

    url: NodeUrl
    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) to trust for https:// and wss:// instead of the "
        "system store. Certificates and host names are always verified.",
    )
    subscribe: bool = Field(
        True,
        description="Follow heads over a WebSocket subscription (every block, as it comes); "
        "false polls heads over HTTP every interval, for proxies that refuse WebSockets.",
    )
    silence_timeout: Duration = Field(
        30.0,
        description="Seconds without a new-head notification before srd polls over HTTP to "
        "tell a stalled chain from a stalled subscription: five 6 s blocks, well under the "
        "120 s stall threshold, so a silent subscription is repaired before a stall alert.",
    )
    reconnect_backoff: Duration = Field(
        1.0,
        description="Seconds before the first WebSocket reconnect; doubles (jittered) on each "
        "failure up to 60 s, so a restarting node is not hammered. Heads are polled meanwhile.",
    )
    expected_block_time: Duration | None = Field(
        None,
        description="Seconds per block of this node's chain (6 s on most Substrate chains). "
        "Unset: learned as the median block time of the last hour. Stall detection fires "
        "after the chain rules' stall_blocks of them.",
    )
    head_tracking: Literal["auto", "legacy", "chainhead", "poll"] = Field(
        "auto",
        description="How heads are followed: legacy chain_subscribeNewHeads, the new JSON-RPC "
        "spec's chainHead_v1_follow, or HTTP polls. auto: legacy when rpc_methods lists it, "
        "else chainHead_v1_follow when listed, else polls.",
    )

    @model_validator(mode="after")
    def _tracking_needs_subscribe(self) -> SubstrateTarget:
        if not self.subscribe and self.head_tracking in ("legacy", "chainhead"):
            raise ValueError(
                f"head_tracking {self.head_tracking} follows a WebSocket subscription; "
                "it contradicts subscribe: false (use head_tracking: poll)"
            )
        return self


class HttpTarget(ProbeTarget):
    """A service health endpoint: up when it answers one of ``expect_status`` in time."""

    url: AnyHttpUrl
    interval: Duration = 10.0
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200]
    )
    bearer_token: SecretRef | None = None
    tls_verify: bool = Field(
        True,
        description="Verify the server certificate and host name. Off only for a known "
        "self-signed endpoint; prefer ca_file.",
    )
    ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) to trust instead of the system store."
    )
    max_redirects: int = Field(
        0,
        ge=0,
        le=10,
        description="Redirects to follow. 0 judges a 3xx answer itself against expect_status, "
        "so a health URL that moved is noticed rather than followed.",
    )
    body: BodyMatch | None = Field(
        None, description="What the body must contain; without it the body is not read."
    )
    max_body_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="With body: a larger body fails the probe and is never buffered. Health "
        "answers are small; the limit keeps memory flat over many targets.",
    )

    @model_validator(mode="after")
    def _ca_needs_verify(self) -> HttpTarget:
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError("ca_file has no effect with tls_verify: false; drop one of them")
        return self

    def read(self) -> None:
        """Load the CA file now, so a bad one is a config error rather than a failing probe."""
        if self.ca_file is not None:
            try:
                ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ResolveError(
                    f"cannot load CA file {self.ca_file}: {exc}", "ca_file"
                ) from None


JsonScalar = str | bool | int | float | None


class BodyMatch(Strict):
    """A health answer's body must hold ``equals`` at ``json_path``, or match ``regex``."""

    json_path: str | None = Field(
        None,
        description="Where the value is, in a small subset: $.status, $.checks.db.ok, "
        "$.nodes[0].ready, $['key.with.dots'].",
    )
    equals: JsonScalar = Field(
        None, description="The value expected at json_path (a string, number, boolean or null)."
    )
    regex: str | None = Field(
        None, description="Python regular expression searched for in the body (UTF-8)."
    )

    @field_validator("json_path")
    @classmethod
    def _json_path(cls, value: str | None) -> str | None:
        if value is not None:
            JsonPath.parse(value)
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else compiles(value)

    @model_validator(mode="after")
    def _one_kind(self) -> BodyMatch:
        if (self.json_path is None) == (self.regex is None):
            raise ValueError("give exactly one of 'json_path' (with 'equals') or 'regex'")
        given = "equals" in self.model_fields_set
        if self.json_path is not None and not given:
            raise ValueError("json_path needs 'equals', the value expected there")
        if self.regex is not None and given:
            raise ValueError("'equals' goes with json_path, not with regex")
        return self


MetricName = Annotated[str, Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]


class ExporterTarget(ProbeTarget):
    """A Prometheus text-format page (node exporter :9100, Substrate :9615, postgres :9187,
    redis :9121). Only the series named in ``keep`` are extracted from it."""

    url: AnyHttpUrl
    interval: Duration = 10.0
    keep: list[MetricName] = Field(
        min_length=1,
        description="Metric names to keep; a histogram or summary name also keeps its "
        "_bucket, _sum and _count series.",
    )
    match: dict[MetricName, dict[str, str]] = Field(
        default_factory=dict,
        description="Per kept name, labels a series must have (exact values) to be kept.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Larger pages are refused, never buffered. A node exporter page is "
        "about 50-300 KiB; 4 MiB leaves room for big hosts and stays flat over 1,000 targets.",
    )
    substrate_node: str | None = Field(
        None,
        description="Name of the substrate target whose RPC view this page (a node's :9615) "
        "is cross-checked against; the page must keep substrate_block_height.",
    )

    @model_validator(mode="after")
    def _match_names_kept(self) -> ExporterTarget:
        unknown = sorted(set(self.match) - set(self.keep))
        if unknown:
            raise ValueError(f"match names metrics that are not in keep: {unknown}")
        if self.substrate_node is not None and "substrate_block_height" not in self.keep:
            raise ValueError("substrate_node needs substrate_block_height in keep")
        return self


class StreamStatsTarget(ProbeTarget):
    """The platform's JSON stream stats, such as ``{"active_streams": 3, "viewers": 120}``."""

    url: AnyHttpUrl
    interval: Duration = 10.0


class ProbesConfig(Strict):
    substrate: list[SubstrateTarget] = Field(default_factory=list)
    http: list[HttpTarget] = Field(default_factory=list)
    exporter: list[ExporterTarget] = Field(default_factory=list)
    streams: list[StreamStatsTarget] = Field(default_factory=list)

    def target_names(self) -> list[str]:
        """Every static target's name, of every kind: what a runbook's ``probe:`` may name."""
        kinds = (self.substrate, self.http, self.exporter, self.streams)
        return [target.name for kind in kinds for target in kind]

    @model_validator(mode="after")
    def _unique_names(self) -> ProbesConfig:
        for kind in ("substrate", "http", "exporter", "streams"):
            names = [target.name for target in getattr(self, kind)]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{kind} target names must be unique; repeated: {duplicates}")
        nodes = {node.name for node in self.substrate}
        for page in self.exporter:
            if page.substrate_node is not None and page.substrate_node not in nodes:
                raise ValueError(
                    f"exporter {page.name!r}: substrate_node {page.substrate_node!r} "
                    "is not a substrate target"
                )
        return self
