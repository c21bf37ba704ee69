"""The examples are valid: a user copying them gets a working srd, Alertmanager and plug-in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from srd.actuators import registry
from srd.actuators.base import ENTRY_POINT_GROUP, Actuator
from srd.cli import main
from srd.config import ConfigError, load_config
from srd.failover.runbooks import load_runbooks, parse_runbooks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PLUGIN = ROOT / "examples" / "plugin"


@pytest.fixture
def example_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets the example configs read from the environment."""
    monkeypatch.setenv("SRD_API_HEALTH_TOKEN", "example-token")
    monkeypatch.setenv("SRD_WEBHOOK_TOKEN", "example-webhook-token")


@pytest.mark.usefixtures("example_secrets")
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_config_passes_srd_check(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(example)]) == 0, capsys.readouterr().err


def _amtool() -> str:
    found = shutil.which("amtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("amtool is required in CI (Debian prometheus-alertmanager ships it)")
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    return found


def test_the_alertmanager_example_passes_amtool_check_config() -> None:
    result = subprocess.run(
        [_amtool(), "check-config", str(ROOT / "examples" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.usefixtures("example_secrets")
def test_the_alertmanager_example_posts_to_the_failover_example_with_its_credentials() -> None:
    alertmanager = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
    [receiver] = [r for r in alertmanager["receivers"] if r["name"] == "srd"]
    [webhook] = receiver["webhook_configs"]
    srd = load_config(ROOT / "examples" / "failover.yaml")
    assert webhook["url"].endswith(f":{srd.server.port}/alertmanager")
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    assert srd.failover.auth is not None and srd.failover.auth.bearer_token is not None


@pytest.fixture
def noop_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """examples/plugin as pip would install it: its package on sys.path and a dist-info with
    the entry points its pyproject.toml declares. Yields the entry point's value."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    points = project["entry-points"][ENTRY_POINT_GROUP]
    name = project["name"].replace("-", "_")
    info = tmp_path / f"{name}-{project['version']}.dist-info"
    info.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    (info / "METADATA").write_text(metadata)
    lines = "".join(f"{key} = {value}\n" for key, value in points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield points["noop"]
    sys.modules.pop("srd_example_noop", None)


async def test_the_plugin_example_is_built_by_name_and_records_its_calls(
    noop_plugin: str,
) -> None:
    assert registry.available()["noop"].value == noop_plugin
    actuator = registry.build("noop", {"tag": "drill"})
    assert isinstance(actuator, Actuator)
    params = {"message": "web-viewer is down"}
    prior = await actuator.snapshot("record", params)
    assert (await actuator.plan("record", params)).changes == ("+ drill: web-viewer is down",)
    assert await actuator.apply("record", params) == {"count": 1}
    assert await actuator.converged("record", params)
    await actuator.restore("record", params, prior)
    calls = actuator.calls  # type: ignore[attr-defined]  # the plug-in's own, beyond the Protocol
    assert [method for method, _, _ in calls] == [
        "snapshot",
        "plan",
        "apply",
        "converged",
        "restore",
    ]
    assert actuator.messages == []  # type: ignore[attr-defined]  # restored to the snapshot
    await actuator.close()


@pytest.mark.usefixtures("noop_plugin")
def test_the_plugin_example_refuses_unknown_settings() -> None:
    with pytest.raises(ValueError, match="colour"):
        registry.build("noop", {"colour": "blue"})


@pytest.mark.usefixtures("noop_plugin")
def test_the_runbook_loader_accepts_a_step_using_the_plugin_and_refuses_bad_params() -> None:
    actuators = {"noop": registry.build("noop", {})}
    [runbook] = load_runbooks([PLUGIN / "runbook.yaml"], actuators)
    [step] = runbook.plan[0].steps
    assert step.action is not None
    assert (step.action.actuator, step.action.action) == ("noop", "record")
    assert step.action.params == {"message": "web-viewer is down"}

    text = (PLUGIN / "runbook.yaml").read_text().replace("message:", "mesage:")
    with pytest.raises(ConfigError) as caught:
        parse_runbooks(text, "runbook.yaml", actuators)
    [issue] = caught.value.issues
    assert issue.key == "runbooks[0].steps[0].action"
    assert issue.reason == (
        "noop.record: message: Field required; mesage: Extra inputs are not permitted"
    )


@pytest.mark.usefixtures("noop_plugin")
def test_srd_check_builds_the_plugin_from_the_config_and_checks_its_runbook(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--config", str(PLUGIN / "srd.yaml")]) == 0, capsys.readouterr().err
    assert "1 runbook(s), 1 actuator(s)" in capsys.readouterr().out


def test_without_the_plugin_installed_srd_check_says_how_to_add_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--config", str(PLUGIN / "srd.yaml")]) == 2
    err = capsys.readouterr().err
    assert "actuators.noop: no actuator named 'noop'" in err
    assert "entry point group 'srd.actuators'" in err
