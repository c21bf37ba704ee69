"""The example configs in the docs are valid: a user copying them gets a working srd."""

from __future__ import annotations

from pathlib import Path

import pytest

from srd.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_config_passes_srd_check(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SRD_API_HEALTH_TOKEN", "example-token")
    assert main(["check", "--config", str(example)]) == 0, capsys.readouterr().err
