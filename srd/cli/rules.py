"""``srd rules export`` and ``srd rules test``: plain functions returning an exit code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from srd.config import ConfigError
from srd.evaluation.export import export_rules
from srd.evaluation.rulepacks import load_rule_packs

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def rules_export(rule_paths: Sequence[Path], out_dir: Path, *, out: TextIO = sys.stdout) -> int:
    """Write Prometheus rule files and their promtool tests for ``rule_paths`` to ``out_dir``."""
    try:
        packs = load_rule_packs(rule_paths)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    for path in export_rules(packs, out_dir):
        print(path, file=out)
    return EXIT_OK


def rules_test(
    rule_paths: Sequence[Path], *, promtool: str = "promtool", out: TextIO = sys.stdout
) -> int:
    """Export to a temporary directory, then ``promtool check rules`` and ``promtool test
    rules`` on it; exit non-zero when either fails or promtool is missing."""
    binary = shutil.which(promtool)
    if binary is None:
        print(f"{promtool} not found: install Prometheus (Debian: prometheus)", file=sys.stderr)
        return EXIT_FAILED
    try:
        packs = load_rule_packs(rule_paths)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="srd-rules-") as tmp:
        written = export_rules(packs, Path(tmp))
        rules = [str(p) for p in written if p.name.endswith(".rules.yml")]
        tests = [str(p) for p in written if p.name.endswith(".test.yml")]
        for args in (["check", "rules", *rules], ["test", "rules", *tests]):
            if len(args) == 2:
                continue
            result = subprocess.run(  # noqa: S603 - our own binary path and generated files
                [binary, *args], capture_output=True, text=True, check=False, timeout=300
            )
            out.write(result.stdout + result.stderr)
            if result.returncode != 0:
                return EXIT_FAILED
    return EXIT_OK
