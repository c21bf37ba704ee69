"""How every part of srd that talks to Kubernetes (discovery, the Lease, the actuator) connects:
a given API server URL without credentials (the sandbox and tests), else the in-cluster service
account when run in a pod, else a kubeconfig file and context."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration


class Connection(Protocol):
    """Where settings say the API is (``srd.config.actuators.KubernetesConnection``)."""

    @property
    def host(self) -> object | None: ...

    @property
    def kubeconfig(self) -> Path | None: ...

    @property
    def context(self) -> str | None: ...


async def api_client(connection: Connection) -> ApiClient:
    """A client of the API ``connection`` names, configured as ``api_configuration`` says."""
    host = connection.host
    configuration = await api_configuration(
        host=str(host) if host is not None else None,
        kubeconfig=connection.kubeconfig,
        context=connection.context,
    )
    return ApiClient(configuration)


async def api_configuration(
    *, host: str | None = None, kubeconfig: Path | None = None, context: str | None = None
) -> Configuration:
    if host is not None:
        return Configuration(host=host.rstrip("/"))
    configuration = Configuration()
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        # kubernetes-asyncio leaves this one function unannotated; it refreshes the token.
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await kube_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig is not None else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return configuration
