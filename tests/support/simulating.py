"""``srd simulate`` as a user runs it: the installed command, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRD = str(Path(sys.executable).with_name("srd"))


def simulate(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``srd simulate ARGS``: its exit code and output (plain, no colour)."""
    return subprocess.run(
        [SRD, "simulate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
