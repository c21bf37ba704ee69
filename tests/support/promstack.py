"""Real processes on loopback for the end-to-end tests: Prometheus, node exporter and srd.

Each helper is a context manager that kills what it started, whatever happens. Under CI a
missing binary fails the test (the Makefile installs the Debian packages); elsewhere it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon import free_port


def binary(*names: str, package: str) -> str:
    for name in names:
        if found := shutil.which(name):
            return found
    reason = f"{names[0]} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run this test")
    pytest.skip(reason)


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET on loopback; a connection failure is status 0."""
    try:
        # Loopback URLs the tests built themselves.
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready within {timeout}s")


@contextmanager
def started(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` with output to ``log``; killed on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@contextmanager
def srd(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None, port: int = 0
) -> Iterator[str]:
    """A real ``srd`` daemon: yields its base URL once /healthz answers. It must listen on
    ``port`` (a free one when 0), which ``{port}`` in ``args`` is replaced with."""
    port = port or free_port()
    command = [sys.executable, "-m", "srd.cli", *(a.format(port=port) for a in args)]
    with started([*command, "--log-format", "json"], log, env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(url + "/healthz")[0] == 200, 30, f"srd {args}", process)
        yield url


def logged(log: Path, event: str) -> dict[str, Any]:
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{") and (entry := json.loads(line)).get("event") == event:
            return dict(entry)
    raise AssertionError(f"{event!r} not logged in {log}")


@contextmanager
def node_exporter(tmp: Path) -> Iterator[str]:
    """The real Debian node exporter; yields host:port."""
    exe = binary("prometheus-node-exporter", "node_exporter", package="prometheus-node-exporter")
    address = f"127.0.0.1:{free_port()}"
    with started([exe, f"--web.listen-address={address}"], tmp / "node-exporter.log") as process:
        url = f"http://{address}/metrics"
        wait_until(lambda: get(url)[0] == 200, 15, "node exporter", process)
        yield address


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (empty on an error, which ``error`` tells)."""
        return list(self._query(expr).get("data", {}).get("result", []))

    def error(self, expr: str) -> str | None:
        reply = self._query(expr)
        return None if reply.get("status") == "success" else str(reply.get("error"))

    def _query(self, expr: str) -> dict[str, Any]:
        status, body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if status == 0 or not body.startswith(b"{"):
            # Not answering yet, or "Service Unavailable" in plain text while it starts.
            return {"status": "error", "error": f"HTTP {status}: {body[:200]!r}"}
        reply: dict[str, Any] = json.loads(body)
        return reply

    def targets_up(self) -> dict[str, str]:
        status, body = get(self.url + "/api/v1/targets")
        # Prometheus answers 503 in plain text until its storage is ready.
        active = json.loads(body)["data"]["activeTargets"] if status == 200 else []
        return {t["scrapeUrl"]: t["health"] for t in active}


@contextmanager
def prometheus(
    tmp: Path, jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """A real Prometheus scraping ``jobs`` (job → host:port targets) every second, with
    ``rule_files`` evaluated every second; yields once every target is up."""
    exe = binary("prometheus", package="prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    address = f"127.0.0.1:{free_port()}"
    args = [
        exe,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={address}",
    ]
    with started(args, tmp / "prometheus.log") as process:
        server = Prometheus(f"http://{address}")
        count = sum(len(t) for t in jobs.values())

        def all_up() -> bool:
            health = server.targets_up()
            return len(health) == count and all(h == "up" for h in health.values())

        wait_until(all_up, 30, "prometheus targets", process)
        yield server
