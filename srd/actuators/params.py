"""Action parameters as pydantic models (one per action, validated at runbook load), and the
snapshots they are restored from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from srd.actuators.base import ActuatorError, Params, State

T = TypeVar("T")


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
