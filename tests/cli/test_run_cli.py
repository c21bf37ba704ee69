"""``srd run`` and ``make run`` where operators first meet them: the listen address."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from srd.config.journal import JOURNAL_FILE
from tests.support import promstack
from tests.support.daemon import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy() -> Iterator[int]:
    """A loopback port another process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def run_srd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "srd.cli", "run", *args, "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_busy_port_stops_the_sandbox_before_it_starts_with_one_line_naming_it(
    busy: int, tmp_path: Path
) -> None:
    started = time.monotonic()
    done = run_srd(
        "--sandbox", "--listen", f"127.0.0.1:{busy}", "--state-dir", str(tmp_path / "state")
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()  # nothing else started, so nothing else logged
    entry = json.loads(line)
    assert (entry["event"], entry["address"]) == (
        "cannot listen; srd did not start",
        f"127.0.0.1:{busy}",
    )
    assert "Address already in use" in entry["error"]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # the sandbox never wrote its config
    assert time.monotonic() - started < 15


def test_a_busy_port_in_the_config_stops_the_daemon_before_the_journal_opens(
    busy: int, tmp_path: Path
) -> None:
    config = tmp_path / "srd.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nserver: {{listen: '127.0.0.1:{busy}'}}\n",
        encoding="utf-8",
    )
    done = run_srd("--config", str(config))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert json.loads(line)["address"] == f"127.0.0.1:{busy}"
    assert not (tmp_path / "state" / JOURNAL_FILE).exists()


def test_make_run_serves_the_sandbox_on_the_listen_it_is_given(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    port = free_port()
    # -o: the venv this test runs in is set up already; make must not reinstall it.
    command = ["make", "-o", f"{venv}/.installed", "run", f"VENV={venv}"]
    command.append(f"LISTEN=127.0.0.1:{port}")
    with (tmp_path / "make.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            promstack.wait_until(lambda: promstack.get(url)[0] == 200, 30, "make run", process)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
