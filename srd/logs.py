"""Structured logging: JSON lines by default, readable console output on a TTY.

Every log line carries the context bound with ``structlog.contextvars`` — the task name and,
for work that acts or decides, its ``correlation_id`` — so one action can be followed through
probes, evaluation, failover and the journal.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Keys whose values must never be written, whatever a caller passes by mistake.
_SECRET_KEY = re.compile(r"(token|password|secret|authorization|credential)", re.IGNORECASE)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if _SECRET_KEY.search(key):
            event[key] = "**redacted**"
    return event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time, not the one seen at configure time
    (test runners and daemonizers swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog for the process. ``fmt`` is ``auto``, ``json`` or ``console``."""
    out: Any = stream or _CurrentStderr()
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.StackInfoRenderer(),
    ]
    if not console:
        # JSON needs the traceback as a string; ConsoleRenderer formats exc_info itself.
        processors.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(_LEVELS[level])


class _StdlibToStructlog(logging.Handler):
    """Sends what libraries log through the stdlib (aiohttp's "Error handling request",
    asyncio's "Task exception was never retrieved") to structlog, so in JSON mode even their
    tracebacks are JSON lines, never plain text on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **fields)


def _route_stdlib(level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibToStructlog)]:
        root.removeHandler(handler)
    handler = _StdlibToStructlog(level=max(level, logging.WARNING))
    root.addHandler(handler)
    logging.captureWarnings(True)  # Python's warnings too, instead of plain text on stderr


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
