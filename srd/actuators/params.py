"""Action parameters as pydantic models (one per action, validated at runbook load), and the
snapshots they are restored from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from srd.actuators.base import ActuatorError, Params, State

T = TypeVar("T")
A = TypeVar("A")


class ModelledActions(Generic[A]):
    """What an actuator's action models decide: the actions it offers, and each action's
    parameters checked (at runbook load) and parsed (at every call) against its model."""

    name: str
    models: ClassVar[Mapping[str, type[BaseModel]]]

    def actions(self) -> frozenset[str]:
        return frozenset(self.models)

    def validate(self, action: str, params: Params) -> None:
        self._parse(action, params)

    def _parse(self, action: str, params: Params) -> A:
        return cast(A, parse_params(self.name, self.models, action, params))


def parse_params(
    actuator: str, models: Mapping[str, type[BaseModel]], action: str, params: Params
) -> BaseModel:
    """``params`` as the model of ``action``; ValueError naming the action and each bad
    parameter, or the actions on offer when ``action`` is unknown."""
    model = models.get(action)
    if model is None:
        offered = ", ".join(sorted(models))
        raise ValueError(f"actuator {actuator!r} has no action {action!r}; it offers: {offered}")
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise ValueError(f"{action}: {_reasons(exc)}") from None


def _reasons(exc: ValidationError) -> str:
    reasons = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(parameters)"
        reason = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown parameter"
        elif error["type"] == "missing":
            reason = "required parameter is missing"
        reasons.append(f"{where}: {reason}")
    return "; ".join(reasons)


def prior_value(prior: State, key: str, kind: type[T]) -> T:
    """``prior[key]`` as ``kind``; a permanent ActuatorError when the snapshot lacks it."""
    value = prior.get(key)
    if not isinstance(value, kind):
        message = f"the snapshot to restore has no {key} (got {prior!r})"
        raise ActuatorError(message, retryable=False)
    return value
