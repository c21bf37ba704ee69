"""The ``failover`` section: alert intake and its auth, guards, escalation and the journal."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from srd.config.durations import Duration
from srd.config.journal import check_journal_url
from srd.config.types import SecretRef, Strict


class BasicAuth(Strict):
    username: str = Field(min_length=1)
    password: SecretRef


class NamedToken(Strict):
    """A bearer token of one caller: the journal records ``name`` as who set the kill switch
    or approved a step with it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    token: SecretRef


class WebhookAuth(Strict):
    """How callers of /alertmanager and /api/* prove who they are (Alertmanager's
    ``http_config``: ``authorization`` with a bearer token, or ``basic_auth``). The identity
    the journal records is the credential's: the token's ``name`` in ``tokens``, the
    ``basic`` username, or ``bearer_token`` for the one unnamed token."""

    bearer_token: SecretRef | None = None
    basic: BasicAuth | None = None
    tokens: list[NamedToken] | None = Field(
        None,
        min_length=1,
        description="Named bearer tokens, one per caller (Alertmanager, each operator): "
        "identity comes from the token, never from what a request says of itself.",
    )

    @model_validator(mode="after")
    def _one(self) -> WebhookAuth:
        given = [self.bearer_token, self.basic, self.tokens]
        if sum(1 for credential in given if credential is not None) != 1:
            raise ValueError("give exactly one of 'bearer_token', 'basic' or 'tokens'")
        names = [token.name for token in self.tokens or []]
        if len(set(names)) != len(names):
            raise ValueError("the names of 'tokens' must be unique")
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
            check_journal_url(value)
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
