"""Where srd serves its HTTP surfaces and how it logs."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from srd.config.types import Strict


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
