"""A config srd cannot read is exit 2 naming the file (systemd does not restart it), or, on
SIGHUP, a reload that keeps the running config and is counted: never a traceback."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from srd.config import ConfigError, parse_config
from tests.support.daemon import free_port, running_srd


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "srd.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"mode: observe\nstate_dir: /tmp/x\x00\n", "invalid YAML: special characters"),
        (b"mode: observe\n# caf\xe9\n", "not UTF-8 text: byte 0xe9 at offset 19"),
        (b"\xff\xfe" + "mode: observe\n".encode("utf-16-le"), "not UTF-8 text: byte 0xff"),
    ],
    ids=["nul-byte", "latin-1", "utf-16"],
)
def test_a_config_that_is_not_utf8_yaml_text_is_exit_2_naming_the_file(
    tmp_path: Path, content: bytes, says: str
) -> None:
    config = tmp_path / "srd.yaml"
    config.write_bytes(content)
    result = check(config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{config}: (top level): {says}" in result.stderr


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e308", "inf", "100000 weeks"])
def test_non_finite_and_absurd_durations_are_refused_naming_the_key(
    tmp_path: Path, value: str
) -> None:
    config = tmp_path / "srd.yaml"
    config.write_text(f"evaluation:\n  interval: {value}\n")
    result = check(config)
    assert result.returncode == 2, result.stdout
    assert f"{config}:2: evaluation.interval:" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_sighup_with_an_unreadable_config_keeps_the_old_one_and_counts_an_error(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "srd.yaml"
    good = {"state_dir": str(tmp_path / "state"), "server": {"listen": f"127.0.0.1:{port}"}}
    config.write_text(json.dumps(good))
    async with running_srd("run", "--config", str(config), port=port) as srd:
        errors = {"result": "error"}
        for broken in (b"mode: observe\x00\n", b"mode: obs\xe9rve\n"):
            before = await srd.metric("srd_config_reloads_total", errors) or 0
            config.write_bytes(broken)
            srd.process.send_signal(signal.SIGHUP)
            await srd.wait_for("srd_config_reloads_total", errors, above(before))
        assert (await srd.get("/healthz"))[0] == 200
        # The reloader lives on: a good config afterwards is applied.
        config.write_text(json.dumps(good))
        srd.process.send_signal(signal.SIGHUP)
        await srd.wait_for("srd_config_reloads_total", {"result": "success"}, lambda v: v >= 1)
        await asyncio.sleep(0.2)
        assert not srd.logged("(not json)")
        failed = srd.logged("config reload failed; the running config stays in force")
        assert len(failed) == 2
        assert all(str(config) in str(line["errors"]) for line in failed)


def test_a_body_limit_above_the_queues_byte_budget_is_refused_saying_what_to_change() -> None:
    text = "failover:\n  max_body_bytes: 2000000\n  queue_bytes: 1000000\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "srd.yaml")
    [issue] = caught.value.issues
    assert (issue.file, issue.key, issue.line) == ("srd.yaml", "failover", 1)
    assert "such a body could never be queued; raise queue_bytes" in issue.reason


def above(before: float) -> Callable[[float], bool]:
    """A metric condition: the value rose past ``before``."""
    return lambda value: value > before
