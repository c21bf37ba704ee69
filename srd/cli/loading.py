"""Loading the config for a command: every problem printed with file and key."""

from __future__ import annotations

import sys
from pathlib import Path

from srd.config import ConfigError
from srd.runtime import Setup, load_setup


def load_or_report(path: Path) -> Setup | None:
    """The config at ``path`` with its rule packs, or None after printing every problem with
    file and key."""
    try:
        return load_setup(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s); srd did not start", file=sys.stderr)
        return None
