"""The shipped systemd unit and Dockerfile pass their real linters."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRD = Path(sys.executable).with_name("srd")


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(SRD.parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(ROOT / "systemd" / "srd.service")
    return parser


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists, so point the shipped /opt/srd prefix at this install.
    text = (ROOT / "systemd" / "srd.service").read_text().replace("/opt/srd/bin/srd", str(SRD))
    (tmp_path / "srd.service").write_text(text)
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", str(tmp_path / "srd.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_systemd_unit_is_hardened_runs_as_its_own_user_and_keeps_state() -> None:
    service = unit()["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DynamicUser": "yes",
        "User": "srd",
        "StateDirectory": "srd",
        "Restart": "on-failure",
        "Type": "notify",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "srd run" in service["ExecStart"]


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_non_root_from_a_slim_base_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert "slim" in final_stage[0] and " AS " not in final_stage[0]
    user = next(line for line in final_stage if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in {"root", "0"}
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert healthcheck
    assert any("/healthz" in line for line in lines)
    assert not any(word in " ".join(final_stage) for word in ("gcc", "build-essential", "apt-get"))
