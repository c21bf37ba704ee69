"""The built-in sandbox: a small simulated platform on loopback ports, in srd's own process.

One chain produced by two fake Substrate nodes (validator-1 pads block numbers, validator-2
does not, as real servers differ), a web service health endpoint, a node exporter page and
the platform's stream exporter with simulated viewers and transactions. ``srd run --sandbox``
monitors it with the bundled ``sandbox.yaml``.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from srd.simulate import background
from srd.simulate.exporters import (
    FakeNodeExporter,
    FakeStreamPlatform,
    node_exporter_app,
    serve,
)
from srd.simulate.substrate import FakeChain, FakeSubstrateNode, producing

SANDBOX_BLOCK_TIME = 2.0
"""Seconds per sandbox block: 3× faster than the platform's 6 s so a newcomer sees it move."""


class FakeService:
    """A web service's health endpoint; set ``healthy`` to False to make it fail."""

    def __init__(self) -> None:
        self.healthy = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        return app

    async def _health(self, _: web.Request) -> web.Response:
        if self.healthy:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failing"}, status=503)


@dataclass
class Sandbox:
    chain: FakeChain
    nodes: dict[str, FakeSubstrateNode]
    services: dict[str, FakeService]
    platform: FakeStreamPlatform
    urls: dict[str, str]
    config_path: Path


def write_config(state_dir: Path, values: dict[str, str]) -> Path:
    """Render the bundled ``sandbox.yaml`` with ``values`` into ``state_dir/srd.yaml``."""
    template = files("srd.simulate").joinpath("sandbox.yaml").read_text(encoding="utf-8")
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "srd.yaml"
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
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(producing(chain, block_time))
        traffic = _stream_traffic(platform, block_time)
        await stack.enter_async_context(background(traffic, "sandbox-traffic"))
        urls = {name: await stack.enter_async_context(node.serve()) for name, node in nodes.items()}
        for name, app in apps.items():
            urls[name] = await stack.enter_async_context(serve(app))
        values = {name.upper().replace("-", "_") + "_URL": url for name, url in urls.items()}
        config_path = write_config(
            state_dir,
            values
            | {
                "STATE_DIR": str(state_dir),
                "LISTEN": listen,
                "RULES_DIR": str(files("srd.simulate").joinpath("rules")),
            },
        )
        yield Sandbox(chain, nodes, services, platform, urls, config_path)


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
