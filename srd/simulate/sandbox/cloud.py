"""The sandbox's AWS: a moto server on loopback holding the platform's backups (S3), its DNS
zone (Route 53) and its load-balancer targets (ELBv2), so DR readiness and failover runbooks
have something real to read and act on.

moto is an optional dependency (``pip install srd[sandbox]``; ``make run`` installs it). Without
it the sandbox runs without AWS and says so.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from aiobotocore.session import get_session
from aiohttp import web
from multidict import CIMultiDict

from srd import clock
from srd.simulate.sandbox.exporters import serve

BUCKET = "vilokanam-backups-{environment}"
DATABASE_EVERY = 30 * 60.0
"""The sandbox's database backups run every 30 min: well inside the 1 h RPO."""
CHAIN_EVERY = 4 * 3600.0
"""Chain-state backups every 4 h: inside the 6 h RPO of a node failure."""
PRIMARY_ADDRESS = "203.0.113.10"
PRIMARY_TARGET = "10.0.1.10"
DR_ADDRESS = "198.51.100.20"
DR_TARGET = "10.0.2.10"
SERVICES = ("web-viewer", "web-creator", "database", "blockchain")
"""The services the platform fails over (REFERENCE.md §3), each with its DNS record."""


@dataclass(frozen=True)
class SandboxCloud:
    url: str
    region: str
    zone_id: str
    target_group_arn: str
    """``primary-tg``: the primary instance (port 80) is registered in it."""
    dr_target_group_arn: str
    """``dr-tg``: empty until a failover registers the DR instance."""
    bucket: str


@asynccontextmanager
async def sandbox_cloud(environment: str = "sandbox") -> AsyncIterator[SandboxCloud | None]:
    """moto on a free loopback port, seeded like the platform; None when moto is missing."""
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from moto.s3 import models as s3_models
    except ImportError:
        yield None
        return
    # S3 stamps an upload's LastModified, which the backup probe reads, with moto's utcnow:
    # on a drill's virtual clock that must be the loop's time, as every other srd timestamp.
    s3_models.utcnow = _utcnow  # type: ignore[attr-defined]
    moto = DomainDispatcherApplication(create_backend_app)
    async with serve(wsgi_app(moto)) as url:
        cloud = await _seed(url, BUCKET.format(environment=environment))
        task = asyncio.create_task(_keep_backing_up(cloud), name="sandbox-backups")
        try:
            yield cloud
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _utcnow() -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC).replace(tzinfo=None)


def wsgi_app(app: Callable[..., Iterable[bytes]]) -> web.Application:
    """``app`` (WSGI) served on the event loop, each request handled in the loop itself.

    moto is a WSGI app; its own server runs in a thread, which answers in wall time. Run on
    the loop, it answers before the loop looks at its clock again, so a drill's virtual
    clock never jumps while a call to the fake AWS is in flight (srd.simulate.clock). moto
    answers from memory within milliseconds: blocking the loop that long is harmless."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        host, _, port = (request.host or "127.0.0.1").partition(":")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            # PEP 3333: the path unquoted, its bytes as latin-1.
            "PATH_INFO": unquote_to_bytes(request.raw_path.partition("?")[0]).decode("latin-1"),
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": host,
            "SERVER_PORT": port or "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name in request.headers:
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = ",".join(request.headers.getall(name))
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            started[:] = [status, headers]

        chunks = app(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = started
        reply = CIMultiDict(
            (k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")
        )
        code = int(status.split()[0])
        empty = code in (204, 304) or request.method == "HEAD"
        return web.Response(status=code, headers=reply, body=None if empty else content)

    application = web.Application(client_max_size=64 * 1024**2)
    application.router.add_route("*", "/{tail:.*}", handle)
    return application


def _client_args(url: str) -> dict[str, Any]:
    # moto accepts any credentials; these keep the AWS credential chain (and its metadata
    # endpoint lookups) out of the sandbox.
    return {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "sandbox",
        "aws_secret_access_key": "sandbox",
    }


async def _seed(url: str, bucket: str) -> SandboxCloud:
    session = get_session()
    args = _client_args(url)
    async with (
        session.create_client("s3", **args) as s3,
        session.create_client("route53", **args) as route53,
        session.create_client("ec2", **args) as ec2,
        session.create_client("elbv2", **args) as elbv2,
    ):
        await s3.create_bucket(Bucket=bucket)
        now = clock.now()
        # The platform keeps 30 database and 7 chain-state backups.
        for i in range(30):
            await _backup(s3, bucket, "database", now - 600 - i * DATABASE_EVERY)
        for i in range(7):
            await _backup(s3, bucket, "blockchain", now - 7200 - i * CHAIN_EVERY)
        zone = await route53.create_hosted_zone(
            Name="vilokanam.com", CallerReference=str(uuid.uuid4())
        )
        zone_id = str(zone["HostedZone"]["Id"]).removeprefix("/hostedzone/")
        changes = [
            {
                "Action": "CREATE",
                "ResourceRecordSet": {
                    "Name": f"{service}.vilokanam.com",
                    "Type": "A",
                    "TTL": 300,
                    "ResourceRecords": [{"Value": PRIMARY_ADDRESS}],
                },
            }
            for service in SERVICES
        ]
        await route53.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": changes}
        )
        vpc = (await ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
        arn, dr_arn = [
            str(group["TargetGroups"][0]["TargetGroupArn"])
            for group in [
                await elbv2.create_target_group(
                    Name=name, Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip"
                )
                for name in ("primary-tg", "dr-tg")
            ]
        ]
        target = {"Id": PRIMARY_TARGET, "Port": 80}
        await elbv2.register_targets(TargetGroupArn=arn, Targets=[target])
    return SandboxCloud(url, "us-east-1", zone_id, arn, dr_arn, bucket)


async def _backup(s3: Any, bucket: str, kind: str, at: float) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(at))
    key = (
        f"database/postgres-backup-{stamp}.sql.gz"
        if kind == "database"
        else f"blockchain/blockchain-state-{stamp}.tar.gz"
    )
    await s3.put_object(Bucket=bucket, Key=key, Body=b"sandbox backup")


async def _keep_backing_up(cloud: SandboxCloud) -> None:
    """New backups on the platform's rhythm, so a long-running sandbox keeps meeting its RPO
    (and a drill that stops this task can breach it)."""
    session = get_session()
    async with session.create_client("s3", **_client_args(cloud.url)) as s3:
        last = {"database": clock.now() - 600, "blockchain": clock.now() - 7200}
        while True:
            await asyncio.sleep(60)
            now = clock.now()
            for kind, every in (("database", DATABASE_EVERY), ("blockchain", CHAIN_EVERY)):
                if now - last[kind] >= every:
                    await _backup(s3, cloud.bucket, kind, now)
                    await _prune(s3, cloud.bucket, kind)
                    last[kind] = now


async def _prune(s3: Any, bucket: str, kind: str) -> None:
    """Keep the platform's retention: the newest 30 database and 7 chain-state backups."""
    keep = 30 if kind == "database" else 7
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=f"{kind}/")
    keys = sorted(obj["Key"] for obj in listed.get("Contents", ()))
    for key in keys[:-keep]:
        await s3.delete_object(Bucket=bucket, Key=key)
