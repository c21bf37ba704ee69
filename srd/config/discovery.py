"""The ``discovery`` section: sources of targets found at run time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from srd.config.durations import Duration
from srd.config.files import validation_issues
from srd.config.probes import ExporterTarget, HttpTarget
from srd.config.types import Strict, compiles, resolve


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
        """The probe target for one found endpoint, its secrets read; ``defaults`` yield to
        the template. ValueError names each template key that is wrong."""
        return self._target(name, url, defaults, read=True)

    def _target(
        self, name: str, url: str, defaults: dict[str, Any], *, read: bool
    ) -> HttpTarget | ExporterTarget:
        model = HttpTarget if self.probe == "http" else ExporterTarget
        try:
            target = model.model_validate({**defaults, **self.template, "name": name, "url": url})
            return resolve(target) if read else target
        except ValidationError as exc:
            issues = validation_issues(exc, "", None, model)
            reasons = (f"template.{i.key}: {i.reason}" if i.key else i.reason for i in issues)
            raise ValueError("; ".join(reasons)) from None

    @model_validator(mode="after")
    def _template_makes_targets(self) -> DiscoverySource:
        if given := sorted({"name", "url"} & set(self.template)):
            raise ValueError(f"template must not set {given}: discovery fills them in")
        self._target("template", "http://127.0.0.1/", {}, read=False)
        return self

    def read(self) -> None:
        """Read what the template names (secrets, a CA file) once, so srd check finds it."""
        self.target("template", "http://127.0.0.1/")


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
        return None if value is None else compiles(value)

    @field_validator("label_regex")
    @classmethod
    def _label_regex(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value.values():
            compiles(pattern)
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
