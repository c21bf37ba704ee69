"""What the operator sees of a drill while it runs: event lines on stderr."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """Event lines on stderr; on a TTY also a live status line under them."""

    def __init__(self, name: str, *, stream: Any = None, quiet: bool = False) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.quiet = quiet
        self._status = ""

    def event(self, text: str) -> None:
        if self.quiet:
            return
        clear = "\r\x1b[K" if self.tty and self._status else ""
        self.stream.write(f"{clear}[{self.name}] {text}\n")
        if self.tty and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def status(self, text: str) -> None:
        if self.quiet or not self.tty:
            return
        self._status = f"[{self.name}] {text}"
        self.stream.write(f"\r\x1b[K{self._status}")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._status and not self.quiet:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._status = ""
