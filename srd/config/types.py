"""The base types of every srd file: ``Strict`` models, secrets, and the step that reads what
a validated model names outside its file.

Validators do no I/O: a model is checked from its text alone. What it names outside (a
secret's variable or file, a CA file, the pod's namespace) is read afterwards by ``resolve``,
which reports a problem exactly as validation would, at the key that names it.
"""

from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar, Union, get_args, get_origin, runtime_checkable

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from pydantic_core import InitErrorDetails, ValidationError


class Strict(BaseModel):
    """A model of a file's section: an unknown key is an error (a typo must never pass
    silently), and a loaded model is never changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class External(Protocol):
    """A model that names something outside its file and reads it in ``read``, which raises
    ValueError (ResolveError to name one of its keys) when it cannot."""

    def read(self) -> None: ...


class ResolveError(ValueError):
    """What ``read`` found wrong, at ``key`` below the model (the model itself when empty)."""

    def __init__(self, reason: str, *key: str | int) -> None:
        super().__init__(reason)
        self.key = key


M = TypeVar("M", bound=BaseModel)


def resolve(model: M) -> M:
    """Read what the validated ``model`` names outside its file (``External`` models, inner
    ones first). Raises pydantic's ValidationError, as validation does, with one error at the
    key of each problem."""
    errors: list[InitErrorDetails] = []
    _read(model, (), errors)
    if errors:
        raise ValidationError.from_exception_data(type(model).__name__, errors)
    return model


def unread_parts(model: type[BaseModel], data: Any) -> ValidationError | None:
    """For ``data`` that failed validation as ``model``: what ``resolve`` finds wrong in its
    parts that validate on their own (a secret that cannot be read beside a typo elsewhere),
    so a file's every problem is reported at once."""
    errors: list[InitErrorDetails] = []
    _read_raw(model, data, (), errors)
    return ValidationError.from_exception_data(model.__name__, errors) if errors else None


def _read_raw(
    annotation: Any, data: Any, loc: tuple[str | int, ...], errors: list[InitErrorDetails]
) -> None:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        _read_raw(args[0], data, loc, errors)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(data, dict):
            return
        try:
            part = annotation.model_validate(data)
        except ValidationError:
            for name, field in annotation.model_fields.items():
                key = field.alias or name
                if key in data:
                    _read_raw(field.annotation, data[key], (*loc, key), errors)
            return
        _read(part, loc, errors)
    elif origin in (list, tuple) and isinstance(data, list):
        for i, item in enumerate(data):
            _read_raw(args[0], item, (*loc, i), errors)
    elif origin is dict and isinstance(data, dict):
        for key, item in data.items():
            _read_raw(args[1], item, (*loc, key), errors)
    elif origin in (Union, types.UnionType):
        # Which member of a union of models applies is for validation to say; only
        # ``Model | None`` is followed.
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            _read_raw(members[0], data, loc, errors)


def _read(value: Any, loc: tuple[str | int, ...], errors: list[InitErrorDetails]) -> bool:
    if isinstance(value, BaseModel):
        fields = type(value).model_fields.items()
        inner = [_read(getattr(value, name), (*loc, f.alias or name), errors) for name, f in fields]
        # As with pydantic's after-validators, a model is looked at only once its parts are fine.
        if all(inner) and isinstance(value, External):
            try:
                value.read()
            except ValueError as exc:
                key = exc.key if isinstance(exc, ResolveError) else ()
                errors.append(
                    {
                        "type": "value_error",
                        "loc": (*loc, *key),
                        "input": value,
                        "ctx": {"error": exc},
                    }
                )
                return False
        return all(inner)
    if isinstance(value, list | tuple):
        return all([_read(item, (*loc, i), errors) for i, item in enumerate(value)])
    if isinstance(value, dict):
        return all([_read(item, (*loc, key), errors) for key, item in value.items()])
    return True


class SecretRef(Strict):
    """A secret read from an environment variable or a file, never written inline.

    The value is read by ``resolve`` after the file is validated (and again on every reload,
    so rotated secrets are picked up), or on first use of a SecretRef built in code; it is
    kept as a ``SecretStr`` so it never reaches a log line.
    """

    env: str | None = Field(None, description="Name of the environment variable holding it.")
    file: Path | None = Field(None, description="File holding it; one trailing newline is cut.")
    _value: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str | int | float):
            raise ValueError(
                "secrets are not accepted inline; write {env: VARIABLE} or {file: /path/to/secret}"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def read(self) -> None:
        self._value = self._secret()

    def _secret(self) -> SecretStr:
        value: str | None = None
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
        elif self.file is not None:
            try:
                value = self.file.read_text(encoding="utf-8").removesuffix("\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from None
        if not value:
            raise ValueError("the secret is empty")
        return SecretStr(value)

    @property
    def value(self) -> str:
        if self._value is None:
            self._value = self._secret()
        return self._value.get_secret_value()


def compiles(pattern: str) -> str:
    """``pattern`` if it is a valid Python regular expression; ValueError saying why not."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


def matching(pattern: str, must_be: str) -> AfterValidator:
    """For ``Annotated[str, matching(pattern, must_be)]``: the whole string matches
    ``pattern``, or ValueError ``'<value>' is not <must_be>`` at the item's own key."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {must_be}")
        return value

    return AfterValidator(check)
