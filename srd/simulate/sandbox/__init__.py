"""The built-in sandbox: a small simulated platform on loopback ports, in srd's own process.

One chain produced by two fake Substrate nodes (validator-1 pads block numbers, validator-2
does not, as real servers differ), a web service health endpoint, a node exporter page and
the platform's stream exporter with simulated viewers and transactions. ``srd run --sandbox``
monitors it with the bundled ``sandbox.yaml``.
"""

from __future__ import annotations

import asyncio
import os
import random
import string
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import structlog
from aiohttp import web

from srd.simulate import background
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.cloud import SERVICES as CLOUD_SERVICES
from srd.simulate.sandbox.cloud import SandboxCloud, sandbox_cloud
from srd.simulate.sandbox.exporters import (
    FakeNodeExporter,
    FakeStreamPlatform,
    node_exporter_app,
    serve,
)
from srd.simulate.sandbox.kubernetes import FakeKubernetes, seed_platform
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode, producing

log = structlog.get_logger("srd.simulate.sandbox")

SANDBOX_BLOCK_TIME = 2.0
"""Seconds per sandbox block: 3× faster than the platform's 6 s so a newcomer sees it move."""


class FakeService:
    """A web service's health endpoint; set ``healthy`` to False to make it fail, ``delay``
    (seconds) to make it answer late."""

    def __init__(self) -> None:
        self.healthy = True
        self.delay = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        return app

    async def _health(self, _: web.Request) -> web.Response:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if self.healthy:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failing"}, status=503)


@dataclass
class Sandbox:
    chain: FakeChain
    nodes: dict[str, FakeSubstrateNode]
    services: dict[str, FakeService]
    platform: FakeStreamPlatform
    kubernetes: FakeKubernetes
    cloud: SandboxCloud | None
    urls: dict[str, str]
    config_path: Path
    aws: AwsProxy | None = None
    """The proxy the config's ``aws`` actuator calls moto through: it answers IAM's policy
    simulation (``aws.allowed``) for the preflight of ``srd simulate --target real``."""


def write_config(state_dir: Path, values: dict[str, str], *, aws: bool) -> Path:
    """Render the bundled ``sandbox.yaml`` into ``state_dir/srd.yaml`` and its rule packs into
    ``state_dir/rules`` (``*.yaml.aws`` ones only when the sandbox has AWS)."""
    bundled = files("srd.simulate.sandbox")
    rules = state_dir / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for item in bundled.joinpath("rules").iterdir():
        name = item.name.removesuffix(".aws")
        if name.endswith(".yaml") and (aws or not item.name.endswith(".aws")):
            text = string.Template(item.read_text(encoding="utf-8")).substitute(values)
            (rules / name).write_text(text, encoding="utf-8")
    path = state_dir / "srd.yaml"
    template = bundled.joinpath("sandbox.yaml").read_text(encoding="utf-8")
    path.write_text(string.Template(template).substitute(values), encoding="utf-8")
    return path


@asynccontextmanager
async def running_sandbox(
    state_dir: Path, listen: str, block_time: float = SANDBOX_BLOCK_TIME
) -> AsyncIterator[Sandbox]:
    """Start the simulated platform on free loopback ports and write the config that
    monitors it to ``state_dir/srd.yaml``."""
    chain = FakeChain()
    nodes = {
        "validator-1": FakeSubstrateNode(chain, name="validator-1", pad_numbers=True),
        "validator-2": FakeSubstrateNode(chain, name="validator-2", pad_numbers=False),
    }
    services = {"web-viewer": FakeService()}
    platform = FakeStreamPlatform()
    apps = {
        "node-exporter": node_exporter_app(FakeNodeExporter()),
        "platform": platform.app(),
        **{name: service.app() for name, service in services.items()},
    }
    kubernetes = FakeKubernetes()
    seed_platform(kubernetes, ("web", *CLOUD_SERVICES))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(producing(chain, block_time))
        cloud = await stack.enter_async_context(sandbox_cloud())
        aws = AwsProxy(cloud.url) if cloud is not None else None
        aws_url = await stack.enter_async_context(aws.serving()) if aws is not None else ""
        traffic = _stream_traffic(platform, block_time)
        await stack.enter_async_context(background(traffic, "sandbox-traffic"))
        urls = {name: await stack.enter_async_context(node.serve()) for name, node in nodes.items()}
        for name, app in apps.items():
            urls[name] = await stack.enter_async_context(serve(app))
        urls["kubernetes"] = await stack.enter_async_context(kubernetes.serving())
        values = {name.upper().replace("-", "_") + "_URL": url for name, url in urls.items()}
        values |= {"STATE_DIR": str(state_dir), "LISTEN": listen} | _aws_values(cloud, aws_url)
        config_path = write_config(state_dir, values, aws=cloud is not None)
        yield Sandbox(chain, nodes, services, platform, kubernetes, cloud, urls, config_path, aws)


def _aws_values(cloud: SandboxCloud | None, actuator_url: str) -> dict[str, str]:
    if cloud is None:
        log.warning("the sandbox runs without AWS: install moto (pip install 'srd[sandbox]')")
        return {"AWS_URL": "", "AWS_ACTUATOR": "  # aws: needs moto (pip install 'srd[sandbox]')"}
    # moto takes any keys; named variables keep the sandbox's keys apart from real ones.
    os.environ["SRD_SANDBOX_AWS_KEY_ID"] = "sandbox"
    os.environ["SRD_SANDBOX_AWS_SECRET"] = "sandbox"  # noqa: S105 - moto accepts any key
    secrets = "access_key_id: {env: SRD_SANDBOX_AWS_KEY_ID}, "
    secrets += "secret_access_key: {env: SRD_SANDBOX_AWS_SECRET}"
    actuator = f'  aws: {{endpoint_url: "{actuator_url}", region: {cloud.region}, {secrets}}}'
    return {"AWS_URL": cloud.url, "AWS_ACTUATOR": actuator}


async def _stream_traffic(platform: FakeStreamPlatform, block_time: float) -> None:
    """Viewers come and go and each block carries a few transactions, so the sandbox's
    stream metrics and latency histogram move like the platform's."""
    rng = random.Random(7)  # noqa: S311 - simulated traffic, not security
    while True:
        await asyncio.sleep(block_time)
        platform.viewers = max(0, platform.viewers + rng.randint(-10, 12))
        platform.active_streams = max(1, platform.active_streams + rng.choice((-1, 0, 0, 1)))
        for _ in range(rng.randint(1, 5)):
            platform.observe(rng.lognormvariate(-3.0, 0.8))
