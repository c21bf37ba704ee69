"""Helpers for the evaluation tests: promtool discovery (a failure, not a skip, under CI)."""

from __future__ import annotations

import os
import shutil

import pytest


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required under CI: apt-get install prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found
