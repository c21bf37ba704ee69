"""A small JSON path subset for health answers: ``$`` then ``.key``, ``['key']`` or ``[index]``.

Enough for bodies like ``{"status": "ok", "checks": {"db": {"ok": true}}}`` (``$.status``,
``$.checks.db.ok``, ``$.nodes[0].ready``, ``$['a.b']``). No wildcards, filters or recursive
descent: a path names exactly one value, so a mismatch can say which value and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\['([^']*)'\]|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class JsonPath:
    text: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Parse ``text``; ValueError saying where it stops being the supported subset."""
        if not text.startswith("$"):
            raise ValueError(f"a JSON path starts with '$', as in $.status; got {text!r}")
        steps: list[str | int] = []
        pos = 1
        while pos < len(text):
            step = _STEP.match(text, pos)
            if step is None:
                raise ValueError(
                    f"unsupported JSON path {text!r} at position {pos}: use .key, ['key'] "
                    "or [index] steps, as in $.checks.db.ok"
                )
            name, quoted, index = step.groups()
            steps.append(int(index) if index is not None else (name or quoted or ""))
            pos = step.end()
        return cls(text, tuple(steps))

    def find(self, document: Any) -> Any:
        """The value the path names; LookupError saying which step is missing otherwise."""
        value, at = document, "$"
        for step in self.steps:
            if isinstance(step, int) and isinstance(value, list) and step < len(value):
                value, at = value[step], f"{at}[{step}]"
            elif isinstance(step, str) and isinstance(value, dict) and step in value:
                value, at = value[step], f"{at}.{step}"
            else:
                raise LookupError(f"{at} has no {_describe(step)}")
        return value


def _describe(step: str | int) -> str:
    return f"index {step}" if isinstance(step, int) else f"key {step!r}"
