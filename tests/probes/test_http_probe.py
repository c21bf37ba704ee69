"""The HTTP health probe against real aiohttp servers on loopback: status, body matches, limits,
redirects and TLS, each failure with its own reason."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from srd.config import ConfigError, parse_config
from srd.config.probes import HttpTarget
from srd.probes.http import HttpProbe
from srd.probes.metrics import ProbeMetrics
from tests.support.servers import running

HEALTH = {"status": "ok", "checks": {"db": {"ok": True}, "cache": {"ok": 1}}, "nodes": [{"id": 7}]}


def app_with(**routes: Any) -> web.Application:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get("/" + path, handler)
    return app


async def health(_: web.Request) -> web.Response:
    return web.json_response(HEALTH)


async def unavailable(_: web.Request) -> web.Response:
    return web.Response(status=503, text="down")


async def moved(_: web.Request) -> web.Response:
    raise web.HTTPFound("/health")


async def loop_forever(_: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


async def big(_: web.Request) -> web.Response:
    return web.Response(text="x" * 10_000)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = app_with(health=health, unavailable=unavailable, moved=moved, loop=loop_forever, big=big)
    async with running(app) as server:
        yield server.url


def target(url: str, **settings: Any) -> HttpTarget:
    return HttpTarget.model_validate({"name": "web", "url": url, "timeout": 1, **settings})


async def probe(session: aiohttp.ClientSession, url: str, **settings: Any) -> tuple[bool, str]:
    obs = await HttpProbe(target(url, **settings), session)()
    return obs.up, obs.reason


async def test_an_expected_status_in_time_is_up_with_its_duration_exported(
    base_url: str, session: aiohttp.ClientSession, metrics: ProbeMetrics
) -> None:
    obs = await HttpProbe(target(f"{base_url}/health"), session)()
    metrics.record(obs)
    assert (obs.up, obs.reason, obs.http_status, obs.probe) == (True, "", 200, "http")
    assert 0 < obs.duration < 1
    assert metrics.registry.get_sample_value("srd_probe_up", {"probe": "http", "target": "web"})
    count = {"probe": "http"}
    assert metrics.registry.get_sample_value("srd_probe_duration_seconds_count", count) == 1


async def test_an_unexpected_status_is_down_naming_the_status(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    obs = await HttpProbe(target(f"{base_url}/unavailable"), session)()
    assert (obs.up, obs.http_status) == (False, 503)
    assert obs.reason == "unexpected status 503"
    assert await probe(session, f"{base_url}/unavailable", expect_status=[200, 503]) == (True, "")


async def test_a_slow_answer_is_down_with_a_timeout_reason(
    session: aiohttp.ClientSession,
) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    async with running(app_with(slow=slow)) as server:
        up, reason = await probe(session, f"{server.url}/slow", timeout=0.2)
        release.set()
    assert (up, reason) == (False, "timeout after 0.2s")


async def test_a_refused_connection_is_down_naming_host_and_port(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    up, reason = await probe(session, f"http://127.0.0.1:{port}/health")
    assert (up, reason) == (False, f"connection refused by 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"json_path": "$.status", "equals": "ok"}, ""),
        ({"json_path": "$.checks.db.ok", "equals": True}, ""),
        ({"json_path": "$.nodes[0].id", "equals": 7}, ""),
        ({"regex": r'"status":\s*"ok"'}, ""),
        ({"json_path": "$.status", "equals": "degraded"}, '$.status is "ok", expected "degraded"'),
        ({"json_path": "$.checks.queue.ok", "equals": True}, "$.checks has no key 'queue'"),
        ({"json_path": "$.nodes[3].id", "equals": 7}, "$.nodes has no index 3"),
        ({"regex": "degraded"}, "no match for regex 'degraded'"),
        # JSON 1 is not JSON true, though Python's True == 1.
        (
            {"json_path": "$.checks.cache.ok", "equals": True},
            "$.checks.cache.ok is 1, expected true",
        ),
    ],
)
async def test_a_body_match_passes_or_says_what_the_body_held(
    base_url: str, session: aiohttp.ClientSession, body: dict[str, Any], reason: str
) -> None:
    up, got = await probe(session, f"{base_url}/health", body=body)
    assert (up, got) == (not reason, f"body mismatch: {reason}" if reason else "")


async def test_a_body_that_is_not_json_fails_a_json_path_match(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    up, reason = await probe(
        session, f"{base_url}/big", body={"json_path": "$.status", "equals": "ok"}
    )
    assert not up and reason.startswith("body mismatch: body is not JSON")


async def test_a_body_over_the_limit_fails_a_match_and_is_not_buffered(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    up, reason = await probe(session, f"{base_url}/big", body={"regex": "x"}, max_body_bytes=1000)
    assert not up and "exceeds the limit of 1000 bytes" in reason
    assert await probe(session, f"{base_url}/big", body={"regex": "x"}) == (True, "")


async def test_redirects_are_judged_not_followed_unless_allowed(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    assert await probe(session, f"{base_url}/moved") == (
        False,
        "unexpected status 302",
    )
    assert await probe(session, f"{base_url}/moved", max_redirects=1) == (True, "")
    up, reason = await probe(session, f"{base_url}/loop", max_redirects=2)
    assert not up and reason.startswith("more than 2 redirects")


# --- TLS ---------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srd test")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS health endpoint with a self-signed certificate: (url, certificate file)."""
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    async with running(app_with(health=health), tls=context) as server:
        yield f"{server.url}/health", cert_file


async def test_a_self_signed_certificate_fails_verification_which_is_on_by_default(
    tls_server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, _ = tls_server
    up, reason = await probe(session, url)
    assert not up
    assert reason.startswith("TLS certificate verification failed for 127.0.0.1:")
    assert "self-signed certificate" in reason


async def test_tls_verify_false_accepts_a_self_signed_certificate(
    tls_server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, _ = tls_server
    assert await probe(session, url, tls_verify=False) == (True, "")


async def test_a_configured_ca_file_makes_the_certificate_trusted(
    tls_server: tuple[str, Path], session: aiohttp.ClientSession
) -> None:
    url, cert_file = tls_server
    assert await probe(session, url, ca_file=str(cert_file)) == (True, "")


# --- config --------------------------------------------------------------------------------


def config_errors(http: str) -> list[str]:
    text = "probes:\n  http:\n    - name: web\n      url: https://web.example/health\n" + http
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "srd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_bad_regex_is_a_config_error_naming_the_key() -> None:
    [error] = config_errors("      body: {regex: 'ok('}\n")
    assert error.startswith("srd.yaml:5: probes.http[0].body.regex: invalid regular expression")


def test_an_unsupported_json_path_is_a_config_error_naming_the_key() -> None:
    [error] = config_errors("      body: {json_path: '$..status', equals: ok}\n")
    assert error.startswith("srd.yaml:5: probes.http[0].body.json_path: unsupported JSON path")


def test_a_json_path_without_an_expected_value_is_refused() -> None:
    [error] = config_errors("      body: {json_path: $.status}\n")
    assert (
        error
        == "srd.yaml:5: probes.http[0].body: json_path needs 'equals', the value expected there"
    )


def test_a_ca_file_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    [error] = config_errors(f"      ca_file: {bogus}\n")
    assert error.startswith(f"srd.yaml:5: probes.http[0].ca_file: cannot load CA file {bogus}")


def test_a_ca_file_with_verification_off_is_refused_as_contradictory(tmp_path: Path) -> None:
    cert_file, _ = self_signed(tmp_path)
    [error] = config_errors(f"      ca_file: {cert_file}\n      tls_verify: false\n")
    assert "ca_file has no effect with tls_verify: false" in error
