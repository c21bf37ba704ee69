"""The root model of ``srd.yaml`` and where it is read from."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from srd.config.discovery import DiscoveryConfig
from srd.config.evaluation import EvaluationConfig
from srd.config.failover import FailoverConfig
from srd.config.files import load_yaml_model, parse_yaml_model
from srd.config.ha import HaConfig
from srd.config.probes import ProbesConfig
from srd.config.runtime import RuntimeConfig
from srd.config.server import LogConfig, ServerConfig
from srd.config.types import Strict

CONFIG_ENV = "SRD_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/srd/srd.yaml")


class Mode(StrEnum):
    """What srd may do to infrastructure. Acting needs ``armed``; the default only watches."""

    OBSERVE = "observe"
    DRY_RUN = "dry-run"
    ARMED = "armed"


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
                "mode armed needs failover.auth (bearer_token, basic or tokens): srd will not take "
                "failover triggers from unauthenticated callers"
            )
        return self


def resolve_config_path(cli_value: str | None) -> Path:
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> Config:
    """Read and validate ``path``, then read what it names (secrets, CA files, the pod's
    namespace); raise ConfigError naming every problem."""
    return load_yaml_model(path, Config)


def parse_config(text: str, filename: str) -> Config:
    return parse_yaml_model(text, filename, Config)
