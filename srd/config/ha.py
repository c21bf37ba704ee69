"""The ``ha`` section: replicas, and the Lease that elects the one that acts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from srd.config.actuators import KubernetesConnection
from srd.config.durations import Duration
from srd.config.types import Strict

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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

    def read(self) -> None:
        """Take srd's own namespace from the service account when none is configured."""
        if self.mode == "kubernetes" and self.namespace is None:
            try:
                own = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
            except OSError:
                raise ValueError(
                    "mode kubernetes outside a pod needs namespace: where the Lease lives"
                ) from None
            # Frozen model: the resolved namespace is set once, by resolve().
            object.__setattr__(self, "namespace", own)
