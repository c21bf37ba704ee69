"""One validated model of ``srd.yaml``.

Every error names the file, the line, the key path and the reason, so ``srd check`` and a failed
start say exactly what to fix. Unknown keys are errors: a typo must never pass silently.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
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

from srd.durations import Duration

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
        0.1,
        ge=0,
        le=1,
        description="Fraction of an interval used to spread the first run of periodic work, "
        "so many targets with one interval do not poll in lockstep.",
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
    """A Substrate node's JSON-RPC endpoint (HTTP, port 9944 by default)."""

    url: AnyHttpUrl


class HttpTarget(ProbeTarget):
    """A service health endpoint: up when it answers one of ``expect_status`` in time."""

    url: AnyHttpUrl
    interval: Duration = 10.0
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200]
    )
    bearer_token: SecretRef | None = None
    tls_verify: bool = True


class ProbesConfig(Strict):
    substrate: list[SubstrateTarget] = Field(default_factory=list)
    http: list[HttpTarget] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ProbesConfig:
        for kind in ("substrate", "http"):
            names = [target.name for target in getattr(self, kind)]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{kind} target names must be unique; repeated: {duplicates}")
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
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, str(path))


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
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        reason = f"invalid YAML: {exc.problem or exc}"
        raise ConfigError([ConfigIssue(filename, "", reason, line)]) from None
    return node, data


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
