"""Actuators by name: srd's own and plug-ins registered under the entry point group
``srd.actuators``, each imported only when a config section names it.

An entry point names a factory — usually the actuator class — with a ``config_model`` (the
pydantic model of its config section) that builds the actuator from the validated section::

    [project.entry-points."srd.actuators"]
    gcp = "srd_gcp.actuator:GcpActuator"

srd's own (``kubernetes``, ``aws``) are found even when the package's metadata is not
installed (running from a source tree), and a plug-in cannot take their names.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, cast

import structlog
from pydantic import BaseModel

from srd.actuators.base import ENTRY_POINT_GROUP, Actuator
from srd.config.types import resolve

BUILTIN = {
    "kubernetes": "srd.actuators.kubernetes:KubernetesActuator",
    "aws": "srd.actuators.aws:AwsActuator",
}

log = structlog.get_logger("srd.actuators.registry")


class ActuatorFactory(Protocol):
    @property
    def config_model(self) -> type[BaseModel]:
        """The model of the actuator's config section (unknown keys should be errors)."""
        ...

    def __call__(self, settings: Any, /) -> Actuator:
        """Build the actuator from its validated section; no I/O until it is first used."""
        ...


class PluginError(Exception):
    """An actuator cannot be had: no such name, its import fails, or it breaks the contract."""


def available() -> dict[str, EntryPoint]:
    """Every actuator name and the entry point it loads from."""
    found = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    for name, value in BUILTIN.items():
        claimed = found.get(name)
        if claimed is None or claimed.value != value:
            if claimed is not None:
                log.warning(
                    "plug-in ignored: srd's own actuator has its name",
                    actuator=name,
                    plugin=claimed.value,
                    distribution=_distribution(claimed),
                )
            found[name] = EntryPoint(name, value, ENTRY_POINT_GROUP)
    return found


def load(name: str) -> ActuatorFactory:
    """The factory of actuator ``name``, imported now; PluginError says what to do if not."""
    points = available()
    point = points.get(name)
    if point is None:
        raise PluginError(
            f"no actuator named {name!r}; available: {', '.join(sorted(points))}. A plug-in adds "
            f"one under the entry point group {ENTRY_POINT_GROUP!r}: install the package that "
            "provides it into srd's environment (pip install <package>)"
        )
    where = f"actuator {name!r} ({point.value}, from {_distribution(point)})"
    try:
        factory = point.load()
    except Exception as exc:  # any failure importing a plug-in (syntax, missing dependency…)
        raise PluginError(
            f"{where} cannot be imported: {type(exc).__name__}: {exc}; reinstall it "
            f"(pip install --force-reinstall {_distribution(point)}) or remove it from the config"
        ) from exc
    model = getattr(factory, "config_model", None)
    if not callable(factory) or not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(
            f"{where} is not an actuator factory: it needs a config_model (the pydantic model "
            "of its config section) and must build the actuator from it"
        )
    return cast(ActuatorFactory, factory)


def build(name: str, section: Mapping[str, Any]) -> Actuator:
    """Actuator ``name`` built from its config section. Raises pydantic's ValidationError
    (locations relative to the section) when the section is invalid, PluginError otherwise."""
    factory = load(name)
    actuator = factory(resolve(factory.config_model.model_validate(dict(section))))
    if not isinstance(actuator, Actuator):
        raise PluginError(f"actuator {name!r} does not implement the Actuator protocol")
    if actuator.name != name:
        raise PluginError(
            f"actuator {name!r} calls itself {actuator.name!r}; runbooks name actuators by "
            "their entry point, so the two must agree"
        )
    return actuator


def _distribution(point: EntryPoint) -> str:
    return point.dist.name if point.dist is not None else "srd"
