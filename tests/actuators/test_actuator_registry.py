"""Actuators are found by name — srd's own and plug-ins installed with an entry point in
``srd.actuators`` — imported only when named, built from their validated config section, and
refused with an error that says what to do when they cannot be had."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from srd.actuators import registry
from srd.actuators.aws import AwsActuator
from srd.actuators.base import ENTRY_POINT_GROUP
from srd.actuators.kubernetes import KubernetesActuator
from srd.actuators.registry import ActuatorFactory, PluginError

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = """
from pydantic import BaseModel, ConfigDict
from srd.actuators.base import Plan


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str


class EchoActuator:
    name = "{name}"
    config_model = Settings

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def actions(self):
        return frozenset({{"echo"}})

    def validate(self, action, params):
        pass

    async def snapshot(self, action, params):
        return {{}}

    async def plan(self, action, params):
        return Plan(action, "echo", (self.settings.greeting,))

    async def apply(self, action, params):
        return {{}}

    async def converged(self, action, params):
        return True

    async def restore(self, action, params, prior):
        pass

    async def close(self):
        pass


NOT_A_FACTORY = "just a string"
"""


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entry_points: dict[str, str],
    source: str = PLUGIN.format(name="echo"),
) -> str:
    """A distribution on sys.path with ``entry_points`` ({name: "{module}:attr"}), as pip
    installs one; returns the plug-in module's (unique) name."""
    module = f"srd_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = [f"{name} = {value.format(module=module)}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def test_the_packaging_registers_srds_own_actuators_under_the_entry_point_group() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][ENTRY_POINT_GROUP] == registry.BUILTIN
    factory: ActuatorFactory = KubernetesActuator  # the classes are factories, to mypy too
    assert factory.config_model is KubernetesActuator.config_model


def test_naming_actuators_imports_none_and_loading_one_imports_only_it() -> None:
    script = textwrap.dedent(
        """
        import sys
        from srd.actuators import registry
        assert {"aws", "kubernetes"} <= set(registry.available())
        assert "srd.actuators.aws" not in sys.modules
        registry.load("kubernetes")
        assert "srd.actuators.kubernetes" in sys.modules
        assert "srd.actuators.aws" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_an_actuator_is_built_from_its_validated_config_section() -> None:
    actuator = registry.build("aws", {"region": "eu-west-1", "endpoint_url": "http://127.0.0.1:1"})
    assert isinstance(actuator, AwsActuator)
    assert actuator.name == "aws"
    await actuator.close()


def test_a_bad_config_section_is_a_validation_error_at_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        registry.build("kubernetes", {"api_timeot": "3s"})
    [error] = caught.value.errors()
    assert (error["loc"], error["type"]) == (("api_timeot",), "extra_forbidden")


def test_an_unknown_actuator_names_those_available_and_how_to_add_one() -> None:
    with pytest.raises(PluginError) as caught:
        registry.load("gcp")
    message = str(caught.value)
    assert "no actuator named 'gcp'; available: aws, kubernetes." in message
    assert "entry point group 'srd.actuators'" in message
    assert "pip install" in message


async def test_a_plugin_installed_with_an_entry_point_is_found_and_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, {"echo": "{module}:EchoActuator"})
    assert set(registry.available()) == {"aws", "echo", "kubernetes"}
    actuator = registry.build("echo", {"greeting": "hello"})
    assert actuator.actions() == {"echo"}
    assert (await actuator.plan("echo", {})).changes == ("hello",)


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "import srd_dependency_that_is_not_installed\n"
    module = install_plugin(tmp_path, monkeypatch, {"echo": "{module}:EchoActuator"}, source)
    with pytest.raises(PluginError) as caught:
        registry.load("echo")
    message = str(caught.value)
    assert f"actuator 'echo' ({module}:EchoActuator, from {module}) cannot be imported" in message
    assert "No module named 'srd_dependency_that_is_not_installed'" in message
    assert f"pip install --force-reinstall {module}" in message


def test_a_plugin_that_is_not_an_actuator_factory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, {"echo": "{module}:NOT_A_FACTORY"})
    with pytest.raises(PluginError, match="is not an actuator factory: it needs a config_model"):
        registry.load("echo")


def test_a_plugin_whose_actuator_goes_by_another_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = PLUGIN.format(name="shout")
    install_plugin(tmp_path, monkeypatch, {"echo": "{module}:EchoActuator"}, source)
    with pytest.raises(PluginError, match="actuator 'echo' calls itself 'shout'"):
        registry.build("echo", {"greeting": "hello"})


def test_a_plugin_cannot_take_the_name_of_srds_own_actuator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, {"kubernetes": "{module}:EchoActuator"})
    assert registry.available()["kubernetes"].value == registry.BUILTIN["kubernetes"]
    assert registry.load("kubernetes") is KubernetesActuator
