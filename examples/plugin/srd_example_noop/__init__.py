"""``noop``: an srd actuator that changes nothing and records every call in memory.

A starting point for a real plug-in: it implements the ``srd.actuators.base.Actuator``
Protocol, validates its parameters with pydantic (so a bad runbook fails at load, never at
3 a.m.) and builds from its config section through ``config_model``.

Action ``record`` (parameters: ``message``): appends the message to ``calls``. Its "state" is
the number of messages recorded, so ``restore`` has a snapshot to put back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srd.actuators.base import ActuatorError, Params, Plan, State


class NoopSettings(BaseModel):
    """The ``actuators.noop`` config section. Unknown keys are errors, as in srd's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field("noop", min_length=1, description="Prefix of every recorded message.")


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(min_length=1)


ACTIONS: dict[str, type[Record]] = {"record": Record}


class NoopActuator:
    name = "noop"
    """Must equal the entry point's name: srd refuses an actuator that calls itself otherwise."""
    config_model = NoopSettings

    def __init__(self, settings: NoopSettings) -> None:
        self.settings = settings
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        """(method, action, params) of every snapshot, plan, apply, converged and restore."""
        self.messages: list[str] = []

    def actions(self) -> frozenset[str]:
        return frozenset(ACTIONS)

    def validate(self, action: str, params: Params) -> None:
        self._parse(action, params)

    async def snapshot(self, action: str, params: Params) -> State:
        self._note("snapshot", action, params)
        return {"count": len(self.messages)}

    async def plan(self, action: str, params: Params) -> Plan:
        self._note("plan", action, params)
        line = f"+ {self._message(action, params)}"
        return Plan(action, f"{self.settings.tag} log", (line,))

    async def apply(self, action: str, params: Params) -> State:
        self._note("apply", action, params)
        self.messages.append(self._message(action, params))
        return {"count": len(self.messages)}

    async def converged(self, action: str, params: Params) -> bool:
        self._note("converged", action, params)
        return True

    async def restore(self, action: str, params: Params, prior: State) -> None:
        self._note("restore", action, params)
        count = prior.get("count")
        if not isinstance(count, int):
            # Permanent: retrying cannot make a bad snapshot good.
            raise ActuatorError(f"the snapshot has no count: {prior!r}", retryable=False)
        del self.messages[count:]

    async def close(self) -> None:
        return None

    def _parse(self, action: str, params: Params) -> Record:
        model = ACTIONS.get(action)
        if model is None:
            raise ValueError(f"noop has no action {action!r}; it offers: {', '.join(ACTIONS)}")
        try:
            return model.model_validate(dict(params))
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(parameters)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(reasons) from None

    def _message(self, action: str, params: Params) -> str:
        return f"{self.settings.tag}: {self._parse(action, params).message}"

    def _note(self, method: str, action: str, params: Params) -> None:
        self.calls.append((method, action, dict(params)))
