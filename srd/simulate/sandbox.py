"""The built-in sandbox: a small simulated platform on loopback ports, in srd's own process.

One chain produced by two fake Substrate nodes (validator-1 pads block numbers, validator-2
does not, as real servers differ) and one web service health endpoint. ``srd run --sandbox``
monitors it with the bundled ``sandbox.yaml``.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from srd.server import serving
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
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(producing(chain, block_time))
        urls = {name: await stack.enter_async_context(node.serve()) for name, node in nodes.items()}
        for name, service in services.items():
            port = await stack.enter_async_context(serving(service.app(), "127.0.0.1", 0))
            urls[name] = f"http://127.0.0.1:{port}"
        config_path = write_config(
            state_dir,
            {
                "STATE_DIR": str(state_dir),
                "LISTEN": listen,
                "NODE_1_URL": urls["validator-1"],
                "NODE_2_URL": urls["validator-2"],
                "WEB_VIEWER_URL": urls["web-viewer"],
            },
        )
        yield Sandbox(chain, nodes, services, urls, config_path)
