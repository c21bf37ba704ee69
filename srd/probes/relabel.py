"""Prometheus target relabelling (``relabel_configs``), as Prometheus applies it, for the
targets a scrape config's jobs yield (``srd.probes.discovery``).

Every action Prometheus has: ``replace`` (the default), ``keep``, ``drop``, ``keepequal``,
``dropequal``, ``hashmod``, ``labelmap``, ``labeldrop``, ``labelkeep``, ``lowercase`` and
``uppercase``; regexes are anchored at both ends, and ``$1`` / ``${name}`` in replacements
expand as Go's ``Regexp.Expand`` does (an unknown group is empty).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Action = Literal[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
]
_GROUP = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")


class RelabelConfig(BaseModel):
    """One entry of ``relabel_configs``, with Prometheus' defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_labels: list[str] = Field(default_factory=list)
    separator: str = ";"
    regex: str = "(.*)"
    modulus: int | None = Field(None, gt=0)
    target_label: str | None = None
    replacement: str = "$1"
    action: Action = "replace"

    @field_validator("regex", "replacement", "separator", "target_label", mode="before")
    @classmethod
    def _as_written(cls, value: object) -> object:
        # YAML reads `regex: true` as a boolean; Prometheus (Go) reads the text as written.
        if isinstance(value, bool):
            return str(value).lower()
        return str(value) if isinstance(value, int | float) else value

    @field_validator("action", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # as Prometheus reads it

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> RelabelConfig:
        needs_target = {"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"}
        if self.action in needs_target and not self.target_label:
            raise ValueError(f"action {self.action} needs target_label")
        if self.action == "hashmod" and self.modulus is None:
            raise ValueError("action hashmod needs modulus")
        return self

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(f"^(?:{self.regex})$")


def relabel(labels: Mapping[str, str], configs: Sequence[RelabelConfig]) -> dict[str, str] | None:
    """``labels`` after every step of ``configs`` in order; None when a step drops the
    target. A label set to the empty string is removed, as in Prometheus."""
    current = dict(labels)
    for config in configs:
        if not _apply(current, config):
            return None
    return {name: value for name, value in current.items() if value != ""}


def _apply(labels: dict[str, str], config: RelabelConfig) -> bool:
    value = config.separator.join(labels.get(name, "") for name in config.source_labels)
    pattern, action, target = config.pattern, config.action, config.target_label or ""
    if action == "keep":
        return pattern.match(value) is not None
    if action == "drop":
        return pattern.match(value) is None
    if action in ("keepequal", "dropequal"):
        return (labels.get(target, "") == value) == (action == "keepequal")
    if action == "replace":
        found = pattern.match(value)
        if found is not None:
            name = expand(found, target)
            result = expand(found, config.replacement)
            if result:
                labels[name] = result
            else:
                labels.pop(name, None)
    elif action in ("lowercase", "uppercase"):
        labels[target] = value.lower() if action == "lowercase" else value.upper()
    elif action == "hashmod":
        digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
        # Prometheus sums the digest's bytes into a uint64: the last eight count.
        labels[target] = str(int.from_bytes(digest[8:], "big") % (config.modulus or 1))
    elif action == "labelmap":
        for name, label_value in list(labels.items()):
            if (found := pattern.match(name)) is not None:
                labels[expand(found, config.replacement)] = label_value
    else:  # labeldrop, labelkeep
        keep = action == "labelkeep"
        for name in list(labels):
            if (pattern.match(name) is not None) != keep:
                del labels[name]
    return True


def expand(found: re.Match[str], template: str) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name`` and ``${name}`` replaced from ``found``
    (``$$`` is a dollar); an unknown group expands to nothing, as in Go."""

    def group(ref: re.Match[str]) -> str:
        if ref.group(3):
            return "$"
        name = ref.group(1) or ref.group(2)
        try:
            return found.group(int(name) if name.isdigit() else name) or ""
        except (IndexError, re.error):
            return ""

    return _GROUP.sub(group, template)
