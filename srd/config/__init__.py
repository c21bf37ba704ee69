"""One validated model of ``srd.yaml``.

Every error names the file, the line, the key path and the reason, so ``srd check`` and a failed
start say exactly what to fix. Unknown keys are errors: a typo must never pass silently.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from srd.config.durations import Duration
from srd.journal import JournalError, check_journal_url
from srd.jsonpath import JsonPath

CONFIG_ENV = "SRD_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/srd/srd.yaml")


class Mode(StrEnum):
    """What srd may do to infrastructure. Acting needs ``armed``; the default only watches."""

    OBSERVE = "observe"
    DRY_RUN = "dry-run"
    ARMED = "armed"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """A secret read from an environment variable or a file, never written inline.

    The value is read when the config is loaded (and again on every reload, so rotated
    secrets are picked up) and kept as a ``SecretStr`` so it never reaches a log line.
    """

    env: str | None = Field(None, description="Name of the environment variable holding it.")
    file: Path | None = Field(None, description="File holding it; one trailing newline is cut.")
    _value: SecretStr = PrivateAttr(default=SecretStr(""))

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str | int | float):
            raise ValueError(
                "secrets are not accepted inline; write {env: VARIABLE} or {file: /path/to/secret}"
            )
        return data

    @model_validator(mode="after")
    def _read(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        value: str | None = None
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
        elif self.file is not None:
            try:
                value = self.file.read_text(encoding="utf-8").removesuffix("\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from None
        if not value:
            raise ValueError("the secret is empty")
        self._value = SecretStr(value)
        return self

    @property
    def value(self) -> str:
        return self._value.get_secret_value()


class ServerConfig(Strict):
    listen: str = Field(
        "127.0.0.1:9877",
        description="host:port for /metrics, /healthz, /readyz and the APIs. Loopback by default: "
        "expose it on purpose.",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]


def split_host_port(value: str) -> tuple[str, int]:
    """``127.0.0.1:9877`` or ``[::1]:9877`` → (host, port); ValueError naming the form otherwise."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:9877 or [::1]:9877, got {value!r}")
    if ":" in host:
        ipaddress.IPv6Address(host)
    return host, int(port_text)


LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(Strict):
    level: LogLevel = "info"
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable console output on a TTY, JSON lines otherwise."
    )


class RuntimeConfig(Strict):
    shutdown_grace: Duration = Field(
        10.0,
        description="How long in-flight work may finish after SIGTERM before it is cancelled. "
        "Below systemd's and Kubernetes' default stop timeouts (90 s, 30 s).",
    )
    restart_backoff_initial: Duration = Field(
        1.0, description="First delay before restarting a crashed task; doubles on each crash."
    )
    restart_backoff_max: Duration = Field(
        60.0, description="Cap of the restart delay; a task that ran this long resets it."
    )
    schedule_jitter: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Fraction of an interval used to spread the first run of periodic work, "
        "so many targets with one interval do not poll in lockstep (1.0: over the whole "
        "interval; measured on 1,000 targets at 5 s: p99 lag 2.6 ms at 1.0, 114 ms at 0.1).",
    )


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


class SubstrateTarget(ProbeTarget):
    """A Substrate node's JSON-RPC endpoint (HTTP, port 9944 by default). Heads come from a
    WebSocket subscription on the same URL; health and fallback polls go over HTTP."""

    url: AnyHttpUrl
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

    @field_validator("ca_file")
    @classmethod
    def _ca_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load CA file {value}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _ca_needs_verify(self) -> HttpTarget:
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError("ca_file has no effect with tls_verify: false; drop one of them")
        return self


JsonScalar = str | bool | int | float | None


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


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
        return None if value is None else _compiles(value)

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


class DiscoverySource(Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Label value of srd_discovered_targets, and the prefix of the names of "
        "the targets found, so they never collide with other sources or static targets.",
    )
    probe: Literal["http", "exporter"]
    template: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of every target found, as under probes.http or probes.exporter, "
        "without name and url (discovery fills those in).",
    )
    max_targets: int = Field(
        100,
        gt=0,
        le=1000,
        description="Beyond this many, the first by name are kept and a warning logged, so a "
        "selector typo cannot start thousands of probes.",
    )

    def target(self, name: str, url: str, **defaults: Any) -> HttpTarget | ExporterTarget:
        """The probe target for one found endpoint; ``defaults`` yield to the template.
        ValueError names each template key that is wrong."""
        model = HttpTarget if self.probe == "http" else ExporterTarget
        try:
            return model.model_validate({**defaults, **self.template, "name": name, "url": url})
        except ValidationError as exc:
            issues = validation_issues(exc, "", None, model)
            reasons = (f"template.{i.key}: {i.reason}" if i.key else i.reason for i in issues)
            raise ValueError("; ".join(reasons)) from None

    @model_validator(mode="after")
    def _template_makes_targets(self) -> DiscoverySource:
        if given := sorted({"name", "url"} & set(self.template)):
            raise ValueError(f"template must not set {given}: discovery fills them in")
        self.target("template", "http://127.0.0.1/")
        return self


class ScrapeConfigSource(DiscoverySource):
    """The static_configs targets of a Prometheus config file, re-read every round."""

    file: Path
    probe: Literal["http", "exporter"] = "exporter"
    jobs: list[str] = Field(
        default_factory=list,
        description="job_name values to take; empty takes every job that has static_configs.",
    )


class KubernetesPodsSource(DiscoverySource):
    """Running and Ready pods of one namespace, probed at pod IP and port."""

    probe: Literal["http", "exporter"] = "http"
    namespace: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    label_selector: str | None = Field(
        None, description="Kubernetes label selector the API server applies (app=web)."
    )
    name_regex: str | None = Field(
        None, description="Pod names to keep; anchored at both ends: web-(creator|viewer)-.+"
    )
    label_regex: dict[str, str] = Field(
        default_factory=dict,
        description="Pod label → anchored regex its value must match: app: web-(creator|viewer)",
    )
    port: int | str = Field(
        description="Container port number, or the name of a port the pod declares."
    )
    scheme: Literal["http", "https"] = "http"
    path: str = Field("/", pattern=r"^/", description="URL path probed on each pod.")
    kubeconfig: Path | None = Field(
        None,
        description="kubeconfig file; without it srd uses the in-cluster service account when "
        "run in a pod, else $KUBECONFIG or ~/.kube/config.",
    )
    context: str | None = Field(None, description="kubeconfig context; its current one if unset.")
    api_timeout: Duration = Field(10.0, description="Limit of each Kubernetes API call.")

    @field_validator("name_regex")
    @classmethod
    def _name_regex(cls, value: str | None) -> str | None:
        return None if value is None else _compiles(value)

    @field_validator("label_regex")
    @classmethod
    def _label_regex(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value.values():
            _compiles(pattern)
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 < value < 65536:
            raise ValueError("a port number is between 1 and 65535")
        if isinstance(value, str) and not re.fullmatch(
            r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", value
        ):
            raise ValueError(f"{value!r} is not a Kubernetes port name (such as http or metrics)")
        return value


class DiscoveryConfig(Strict):
    """Targets found at run time. Static targets stay under probes."""

    interval: Duration = Field(30.0, description="How often every source is looked at again.")
    scrape_config_files: list[ScrapeConfigSource] = Field(default_factory=list)
    kubernetes_pods: list[KubernetesPodsSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_sources(self) -> DiscoveryConfig:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        names = [source.name for source in [*self.scrape_config_files, *self.kubernetes_pods]]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"discovery source names must be unique; repeated: {repeated}")
        return self


class PrometheusSource(Strict):
    """A Prometheus server to read SLIs that srd cannot compute from its own series."""

    url: AnyHttpUrl
    timeout: Duration = Field(10.0, description="Limit of each query; the loop never waits on it.")
    lag: Duration = Field(
        30.0,
        description="Queries are evaluated this far in the past: about two scrape intervals, so "
        "the newest samples have arrived and a window is never read half-filled.",
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


class BasicAuth(Strict):
    username: str = Field(min_length=1)
    password: SecretRef


class WebhookAuth(Strict):
    """How callers of /alertmanager and /api/* prove who they are (Alertmanager's
    ``http_config``: ``authorization`` with a bearer token, or ``basic_auth``)."""

    bearer_token: SecretRef | None = None
    basic: BasicAuth | None = None

    @model_validator(mode="after")
    def _one(self) -> WebhookAuth:
        if (self.bearer_token is None) == (self.basic is None):
            raise ValueError("give exactly one of 'bearer_token' or 'basic'")
        return self


class EscalationConfig(Strict):
    """Where a runbook that stops and needs a human pages: Alertmanager's API."""

    alertmanager_url: AnyHttpUrl | None = Field(
        None,
        description="Alertmanager's base URL (http://alertmanager:9093): the escalation alert "
        "SrdRunbookEscalated is POSTed to its /api/v2/alerts and routed like any other page. "
        "Unset: the escalation is only logged, journaled and counted.",
    )
    timeout: Duration = Field(
        10.0, gt=0, description="Seconds one POST may take; failures are retried 5 times."
    )
    hold: Duration = Field(
        86400.0,
        gt=0,
        description="Seconds the escalation stays firing (its endsAt): srd posts it once, and "
        "Alertmanager would resolve an alert without endsAt after its resolve_timeout (5 m), "
        "before a human has seen it. 24 h: a day to acknowledge it.",
    )


class FailoverConfig(Strict):
    """Alert intake (Alertmanager webhook, srd's own rules), runbooks and their guards."""

    runbooks: list[Path] = Field(
        default_factory=list,
        description="Runbook files or directories (every *.yaml / *.yml in them); relative "
        "paths are read beside the config.",
    )
    auth: WebhookAuth | None = Field(
        None,
        description="Credentials /alertmanager and /api/* require. Required in armed mode: an "
        "unauthenticated endpoint that can trigger failover is an open door.",
    )
    queue_size: int = Field(
        1000,
        gt=0,
        description="Alerts waiting to be decided on. When full the webhook answers 503 and "
        "Alertmanager retries; 1000 is minutes of a large incident's alert storm.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest webhook body (bytes); larger gets 413. An alert is about 1 KiB; "
        "1 MiB holds a group of ~1000 alerts (set max_alerts in Alertmanager above that).",
    )
    queue_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="Webhook body bytes the queue holds at most (with queue_size, the intake's "
        "memory bound). At least max_body_bytes, so any accepted body fits an empty queue; "
        "16 MiB: 16 full-size groups in flight while the journal catches up.",
    )
    kill_switch_file: Path | None = Field(
        None,
        description="While this file exists no step runs (POST /api/killswitch creates and "
        "removes it, so the switch survives a restart). Default: <state_dir>/killswitch.",
    )
    cooldown: Duration = Field(
        1800.0,
        description="Seconds after an execution of a runbook ends before it may run again "
        "(a runbook can set its own). 30 m: longer than DNS TTL 300 s plus convergence, so a "
        "failover is judged on its effect before anything flips again.",
    )
    flap_window: Duration = Field(
        3600.0, description="Window (seconds) over which flap_max is counted."
    )
    flap_max: int = Field(
        3,
        gt=0,
        description="Executions one alert (fingerprint) may start within flap_window, cancelled "
        "ones included: an alert that fires and resolves over and over is flapping, and acting "
        "on each flip does more harm than the fault.",
    )
    execution_window: Duration = Field(
        3600.0, description="Window (seconds) over which max_executions is counted."
    )
    max_executions: int = Field(
        5,
        gt=0,
        description="Executions of all runbooks that may start within execution_window: a cap "
        "on the blast radius of automation gone wrong (the rest are blocked and journaled).",
    )
    journal: str | None = Field(
        None,
        description="Where the journal lives: sqlite:///abs/path.sqlite3, or "
        "postgresql://user@host:port/db for one journal shared by several replicas (ha). "
        "Default: <state_dir>/journal.sqlite3. Never put a password in the URL.",
    )
    journal_password: SecretRef | None = Field(
        None,
        description="Password of the PostgreSQL journal's user. Unset: libpq's PGPASSWORD or "
        "~/.pgpass, or none (trust or certificate authentication).",
    )
    journal_retention: Duration = Field(
        90 * 86400.0,
        gt=0,
        description="Seconds alert receipts are kept (pruned hourly; executions, steps and "
        "guard blocks are the audit trail and are never pruned). 90 d: far above any "
        "Alertmanager repeat_interval, so a pruned receipt never lets a live alert's resend "
        "through.",
    )
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)

    @field_validator("journal")
    @classmethod
    def _journal_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_journal_url(value)
            except JournalError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _body_fits_queue(self) -> FailoverConfig:
        if self.max_body_bytes > self.queue_bytes:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) is more than queue_bytes"
                f" ({self.queue_bytes}): such a body could never be queued; raise queue_bytes"
                " or lower max_body_bytes"
            )
        return self

    @model_validator(mode="after")
    def _password_for_postgres(self) -> FailoverConfig:
        if self.journal_password is not None and not (self.journal or "").startswith("postgres"):
            raise ValueError("journal_password is only used by a postgresql:// journal")
        return self


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubernetesConnection(Strict):
    """How srd reaches the Kubernetes API, as the kubernetes actuator's settings."""

    host: AnyHttpUrl | None = Field(
        None,
        description="API server URL used without credentials: the sandbox's fake API and tests. "
        "Unset: the in-cluster service account when run in a pod, else kubeconfig.",
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file; $KUBECONFIG or ~/.kube.")
    context: str | None = Field(None, description="kubeconfig context; its current one if unset.")

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesConnection:
        if self.host is not None and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("give host or kubeconfig/context, not both")
        return self


class HaConfig(Strict):
    """High availability: several replicas, one leader (a Kubernetes Lease); only the leader
    acts. ``standalone`` is a single srd, always the leader."""

    mode: Literal["standalone", "kubernetes"] = "standalone"
    namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the Lease. Default: srd's own, read from the service "
        "account; required outside a pod.",
    )
    lease_name: str = Field("srd-leader", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    lease_duration: Duration = Field(
        15.0,
        description="Whole seconds a lease lasts after its last renewal: how long followers "
        "wait before taking over from a leader that died (client-go's default, 15 s).",
    )
    renew_deadline: Duration = Field(
        10.0,
        description="A leader that could not renew for this long stops acting. Below "
        "lease_duration, so it has stopped before anyone can take over (the gap covers "
        "clock skew between nodes).",
    )
    retry_period: Duration = Field(
        2.0, description="Seconds between renewals, and between a follower's attempts."
    )
    identity: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Holder name. Default: $POD_NAME, else the host name. A random suffix is "
        "always added: a restarted process is a new holder, never its predecessor.",
    )
    kubernetes: KubernetesConnection = Field(default_factory=KubernetesConnection)

    @model_validator(mode="after")
    def _durations(self) -> HaConfig:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                f"need lease_duration ({self.lease_duration:g}s) > renew_deadline "
                f"({self.renew_deadline:g}s) > retry_period ({self.retry_period:g}s) > 0: a "
                "leader must stop acting before its lease can expire, and renew several times "
                "before it gives up"
            )
        if self.lease_duration != int(self.lease_duration):
            raise ValueError(
                f"lease_duration must be whole seconds (the Lease stores seconds), "
                f"got {self.lease_duration:g}s"
            )
        return self

    @model_validator(mode="after")
    def _namespace(self) -> HaConfig:
        if self.mode == "kubernetes" and self.namespace is None:
            try:
                own = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
            except OSError:
                raise ValueError(
                    "mode kubernetes outside a pod needs namespace: where the Lease lives"
                ) from None
            # Frozen model: the resolved namespace is set once, while validating.
            object.__setattr__(self, "namespace", own)
        return self


class Config(Strict):
    mode: Mode = Field(Mode.OBSERVE, description="observe (default), dry-run or armed.")
    state_dir: Path = Field(
        Path("/var/lib/srd"), description="Where the journal and durable state live."
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    ha: HaConfig = Field(default_factory=HaConfig)
    actuators: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Actuator name (kubernetes, aws, or a plug-in of the srd.actuators entry "
        "point group) → its settings; runbook steps act only through actuators listed here.",
    )

    @model_validator(mode="after")
    def _armed_needs_auth(self) -> Config:
        if self.mode is Mode.ARMED and self.failover.auth is None:
            raise ValueError(
                "mode armed needs failover.auth (bearer_token or basic): srd will not take "
                "failover triggers from unauthenticated callers"
            )
        return self


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.reason}"


class ConfigError(Exception):
    """The config cannot be used. ``issues`` lists every problem found, each with file and key."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def resolve_config_path(cli_value: str | None) -> Path:
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> Config:
    """Read and validate ``path``; raise ConfigError naming every problem."""
    return load_yaml_model(path, Config)


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Read ``path`` and validate it as ``model``; an unreadable file is a ConfigError too."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        raise ConfigError([ConfigIssue(str(path), "", reason)]) from None
    return parse_yaml_model(text, str(path), model)


M = TypeVar("M", bound=BaseModel)


def parse_config(text: str, filename: str) -> Config:
    return parse_yaml_model(text, filename, Config)


def parse_yaml_model(text: str, filename: str, model: type[M]) -> M:
    """Validate YAML ``text`` as ``model``; ConfigError names file, line and key of each problem.

    Rule packs, runbooks and drills use this too, so every file srd reads reports errors alike.
    """
    node, data = load_yaml(text, filename)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(filename, "", "the file must be a mapping of keys")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, filename, node, model)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML keeps the last silently, hiding typos."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, filename: str) -> tuple[yaml.Node | None, Any]:
    """Parse YAML refusing duplicate keys; returns the node tree (for line numbers) and data."""
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(filename, exc)]) from None
    return node, data


def _yaml_issue(filename: str, exc: yaml.YAMLError) -> ConfigIssue:
    """Where and why YAML refused the text: a syntax error, or a character YAML does not
    allow (a NUL byte, a control character), which the reader reports without a mark."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        return ConfigIssue(filename, "", f"invalid YAML: {exc.problem or exc}", line)
    if isinstance(exc, yaml.reader.ReaderError):
        reason = f"invalid YAML: {exc.reason} {exc.character!r} at offset {exc.position}"
        return ConfigIssue(filename, "", reason)
    return ConfigIssue(filename, "", f"invalid YAML: {exc}")


def load_yaml_documents(text: str, filename: str) -> list[tuple[yaml.Node, Any]]:
    """Like ``load_yaml`` for a multi-document file (``---``, as OpenSLO files are written)."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_UniqueKeyLoader))
        docs = list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(filename, exc)]) from None
    return list(zip(nodes, docs, strict=True))


def issue_at(filename: str, node: yaml.Node | None, loc: list[Any], reason: str) -> ConfigIssue:
    """A ConfigIssue for a problem found after validation, at the YAML line of ``loc``."""
    return ConfigIssue(filename, _key_path(loc), reason, _line_of(node, loc))


def validation_issues(
    exc: ValidationError, filename: str, node: yaml.Node | None, root: type[BaseModel]
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, with the YAML line of the key when known."""
    issues = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_union_tag(part)]
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown key" + _suggestion(root, loc)
        elif error["type"] == "missing":
            reason = "required key is missing"
        issues.append(ConfigIssue(filename, _key_path(loc), reason, _line_of(node, loc)))
    return issues


def _is_union_tag(part: object) -> bool:
    # pydantic puts the union member or validator name into loc; users never wrote those.
    return isinstance(part, str) and ("[" in part or part in {"function-after", "function-before"})


def _key_path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _suggestion(root: type[BaseModel], loc: list[Any]) -> str:
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if isinstance(part, int):
            continue
        if field is None:
            return ""
        model = _model_in(field.annotation)
        if model is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                return line
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
