from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srd.config import ConfigError, Mode, load_config, parse_config
from srd.config.durations import format_duration, parse_duration


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "srd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_an_empty_config_starts_safe_observing_on_loopback() -> None:
    config = parse_config("", "srd.yaml")
    assert config.mode is Mode.OBSERVE
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 9877


def test_a_typo_in_a_key_names_file_line_key_path_and_the_likely_key() -> None:
    text = """\
probes:
  substrate:
    - name: node-1
      url: http://127.0.0.1:9944
      intervall: 5s
"""
    assert errors_of(text) == [
        "srd.yaml:5: probes.substrate[0].intervall: unknown key (did you mean 'interval'?)"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = "mode: yolo\nserver:\n  listen: nowhere\nloggin: {}\n"
    errors = errors_of(text)
    assert len(errors) == 3
    assert errors[0].startswith("srd.yaml:1: mode: ")
    assert "expected host:port" in errors[1] and errors[1].startswith("srd.yaml:3: server.listen")
    assert errors[2] == "srd.yaml:4: loggin: unknown key (did you mean 'log'?)"


def test_a_duplicated_key_is_refused_instead_of_silently_keeping_the_last() -> None:
    [error] = errors_of("mode: armed\nmode: observe\n")
    assert error.startswith("srd.yaml:2: (top level): invalid YAML: duplicate key 'mode'")


def test_broken_yaml_names_the_line() -> None:
    [error] = errors_of("probes:\n  substrate: [\n")
    assert error.startswith("srd.yaml:3:")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_a_probe_timeout_longer_than_its_interval_is_refused() -> None:
    text = "probes:\n  http:\n    - {name: web, url: 'http://x/', interval: 5s, timeout: 6s}\n"
    [error] = errors_of(text)
    assert "probes.http[0]" in error and "at most the interval" in error


def test_head_tracking_is_one_of_four_and_agrees_with_subscribe() -> None:
    node = "probes:\n  substrate:\n    - {name: n1, url: 'http://127.0.0.1:9944', %s}\n"
    config = parse_config(node % "head_tracking: chainhead", "srd.yaml")
    assert config.probes.substrate[0].head_tracking == "chainhead"
    assert (
        parse_config(node % "interval: 5s", "srd.yaml").probes.substrate[0].head_tracking == "auto"
    )
    [unknown] = errors_of(node % "head_tracking: v2")
    assert "probes.substrate[0].head_tracking" in unknown and "'chainhead'" in unknown
    [contradiction] = errors_of(node % "head_tracking: legacy, subscribe: false")
    assert "contradicts subscribe: false" in contradiction


def test_target_names_must_be_unique() -> None:
    text = """\
probes:
  http:
    - {name: web, url: 'http://127.0.0.1/a'}
    - {name: web, url: 'http://127.0.0.1/b'}
"""
    [error] = errors_of(text)
    assert "repeated: ['web']" in error


SECRET_HTTP = "probes:\n  http:\n    - name: web\n      url: http://x/\n      bearer_token: {}\n"


def test_an_inline_secret_is_refused_with_the_forms_that_work() -> None:
    [error] = errors_of(SECRET_HTTP.format("hunter2"))
    assert "probes.http[0].bearer_token" in error
    assert "{env: VARIABLE} or {file:" in error


def test_a_secret_from_an_unset_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SRD_TEST_TOKEN", raising=False)
    [error] = errors_of(SECRET_HTTP.format("{env: SRD_TEST_TOKEN}"))
    assert "environment variable SRD_TEST_TOKEN is not set" in error


def test_secrets_are_read_from_env_or_file_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SRD_TEST_TOKEN", "s3cret-from-env")
    config = parse_config(SECRET_HTTP.format("{env: SRD_TEST_TOKEN}"), "srd.yaml")
    token = config.probes.http[0].bearer_token
    assert token is not None and token.value == "s3cret-from-env"
    assert "s3cret" not in repr(config) and "s3cret" not in config.model_dump_json()

    secret_file = tmp_path / "token"
    secret_file.write_text("s3cret-from-file\n")
    config = parse_config(SECRET_HTTP.format("{file: " + str(secret_file) + "}"), "srd.yaml")
    token = config.probes.http[0].bearer_token
    assert token is not None and token.value == "s3cret-from-file"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5),
        ("1m30s", 90),
        ("1 hour", 3600),
        ("2 hours", 7200),
        ("24 hours", 86400),
        ("500ms", 0.5),
        (300, 300),
        ("1.5h", 5400),
        ("30 minutes", 1800),
        ("7d", 604800),
    ],
)
def test_durations_read_prometheus_and_platform_forms(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 parsecs", "soon", "", "-5s", "5s5"])
def test_unreadable_durations_say_which_forms_work(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10 * 365 * 86400))
def test_formatted_durations_read_back_to_the_same_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
