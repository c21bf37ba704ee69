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

import structlog
import yaml
from aiohttp import web

from srd.simulate import background
from srd.simulate.sandbox.aws import AwsProxy
from srd.simulate.sandbox.cloud import (
    DR_ADDRESS,
    DR_TARGET,
    PRIMARY_TARGET,
    SandboxCloud,
    sandbox_cloud,
)
from srd.simulate.sandbox.cloud import SERVICES as CLOUD_SERVICES
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


SHIPPED_RUNBOOKS = Path(__file__).resolve().parents[3] / "rules" / "runbooks"
"""The runbooks srd ships (a source checkout's ``rules/runbooks``): the sandbox loads them,
with their AWS names and addresses set to the sandbox's."""


def runbook_vars(cloud: SandboxCloud) -> dict[str, str]:
    """The shipped runbooks' site-specific ``vars``, set to the sandbox's AWS (moto)."""
    return {
        "zone": cloud.zone_id,
        "primary_tg": cloud.target_group_arn,
        "dr_tg": cloud.dr_target_group_arn,
        "primary_target": PRIMARY_TARGET,
        "dr_target": DR_TARGET,
        "dr_address": DR_ADDRESS,
    }


def write_runbooks(state_dir: Path, site: dict[str, str]) -> bool:
    """The shipped runbooks rendered into ``state_dir/runbooks`` with the vars they declare
    from ``site`` set to the sandbox's; False (nothing written) without a source checkout."""
    if not SHIPPED_RUNBOOKS.is_dir():
        return False
    out = state_dir / "runbooks"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(SHIPPED_RUNBOOKS.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for runbook in document.get("runbooks", []):
            declared = runbook.get("vars") or {}
            runbook["vars"] = declared | {k: v for k, v in site.items() if k in declared}
        (out / path.name).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return True


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
    services = {"web-viewer": FakeService(), "web-creator": FakeService()}
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
        values |= {"STATE_DIR": str(state_dir), "LISTEN": listen} | _aws_values(
            cloud, aws_url, state_dir
        )
        shipped = cloud is not None and write_runbooks(state_dir, runbook_vars(cloud))
        values["FAILOVER"] = (
            "failover:\n  runbooks: [runbooks]   # the shipped ones, on the sandbox's AWS"
            if shipped
            else "# failover: the shipped runbooks need AWS (moto) and a source checkout"
        )
        config_path = write_config(state_dir, values, aws=cloud is not None)
        yield Sandbox(chain, nodes, services, platform, kubernetes, cloud, urls, config_path, aws)


def _aws_values(cloud: SandboxCloud | None, actuator_url: str, state_dir: Path) -> dict[str, str]:
    if cloud is None:
        log.warning("the sandbox runs without AWS: install moto (pip install 'srd[sandbox]')")
        return {"AWS_URL": "", "AWS_ACTUATOR": "  # aws: needs moto (pip install 'srd[sandbox]')"}
    # moto takes any keys; files in the state directory keep the rendered config
    # self-contained (srd check, srd runbooks read it from another shell).
    secrets_dir = state_dir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    key_file, secret_file = secrets_dir / "aws_key_id", secrets_dir / "aws_secret"
    key_file.write_text("sandbox\n", encoding="utf-8")
    secret_file.write_text("sandbox\n", encoding="utf-8")
    secrets = f"access_key_id: {{file: {key_file}}}, secret_access_key: {{file: {secret_file}}}"
    actuator = f'  aws: {{endpoint_url: "{actuator_url}", region: {cloud.region}, {secrets}}}'
    return {
        "AWS_URL": cloud.url,
        "AWS_ACTUATOR": actuator,
        "AWS_KEY_FILE": str(key_file),
        "AWS_SECRET_FILE": str(secret_file),
    }


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
