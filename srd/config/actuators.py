"""Settings shared by actuators and the stages that reach the same APIs."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, model_validator

from srd.config.types import Strict


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
