"""Durations as people write them in YAML: ``5s``, ``1m30s``, ``1 hour``, ``2 hours``, ``300``.

The platform's own files say ``target: 1 hour``; Prometheus files say ``5m``. Both are accepted,
and a bare number means seconds.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
}
MAX_SECONDS = 10 * 365 * 86400.0
"""The longest duration accepted: anything above is a typo (``1e308``), and timers that long
overflow the event loop or never fire."""
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def parse_duration(value: object) -> float:
    """Return seconds for a duration; raise ValueError with the accepted forms otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '5s', '1m30s' or '1 hour', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(
            f"expected a duration such as '5s' or '1 hour', got {type(value).__name__}"
        )
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration; write it like '5s' or '1 hour'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"{value!r} is longer than {format_duration(MAX_SECONDS)} (10 years): surely a typo;"
            " srd would never act on it"
        )
    return seconds


def _parse_text(text: str) -> float:
    stripped = text.strip().lower()
    try:
        return float(stripped)
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(stripped):
        match = _PART.match(stripped, pos)
        if match is None:
            break
        unit = match.group(2)
        factor = _UNITS.get(unit) or _UNITS.get(unit.removesuffix("s"))
        if factor is None:
            break
        total += float(match.group(1)) * factor
        pos = match.end()
    if pos != len(stripped) or not stripped:
        raise ValueError(
            f"cannot read {text!r} as a duration; write it like '500ms', '5s', '1m30s', "
            "'1 hour' or a number of seconds"
        )
    return total


def format_duration(seconds: float) -> str:
    """Shortest Prometheus-style form (``90s`` → ``1m30s``) for rule files and messages."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A pydantic field type: seconds as float, read from any form ``parse_duration`` accepts."""
