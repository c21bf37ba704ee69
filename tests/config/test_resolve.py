"""Validators do no I/O: what a config names outside its file is read by ``resolve``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from srd.config import Config, ConfigError, parse_config
from srd.config.ha import HaConfig
from srd.config.types import resolve

TOKEN = {"probes": {"http": [{"name": "web", "url": "http://x/", "bearer_token": {"env": "T"}}]}}


def test_validation_reads_no_secret_and_resolve_reads_it_reporting_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("T", raising=False)
    config = Config.model_validate(TOKEN)

    with pytest.raises(ValidationError) as caught:
        resolve(config)
    [error] = caught.value.errors()
    assert error["loc"] == ("probes", "http", 0, "bearer_token")
    assert error["msg"] == "Value error, environment variable T is not set"

    monkeypatch.setenv("T", "rotated")
    token = resolve(config).probes.http[0].bearer_token
    assert token is not None and token.value == "rotated"


def test_the_pods_namespace_is_read_by_resolve_not_by_validation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace = tmp_path / "namespace"
    monkeypatch.setattr("srd.config.ha.SERVICE_ACCOUNT_NAMESPACE", namespace)
    settings = HaConfig.model_validate({"mode": "kubernetes"})
    assert settings.namespace is None

    namespace.write_text("monitoring\n")
    assert resolve(settings).namespace == "monitoring"


def test_a_typo_and_an_unreadable_secret_elsewhere_are_reported_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SRD_TEST_TOKEN", raising=False)
    text = (
        "probes:\n  http:\n    - name: web\n      url: http://x/\n"
        "      bearer_token: {env: SRD_TEST_TOKEN}\n    - name: api\n      url: http://y/\n"
        "      intervall: 5s\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "srd.yaml")
    assert [str(issue) for issue in caught.value.issues] == [
        "srd.yaml:8: probes.http[1].intervall: unknown key (did you mean 'interval'?)",
        "srd.yaml:5: probes.http[0].bearer_token: environment variable SRD_TEST_TOKEN is not set",
    ]


def test_the_config_package_loads_no_other_stage_and_no_database_driver() -> None:
    code = (
        "import sys, srd.config\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('srd.', 'psycopg')))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert loaded, "srd.config itself must be listed"
    outside = [m for m in loaded if not m.startswith(("srd.config", "srd.jsonpath", "srd.model"))]
    assert outside == []
