"""``srd rules export`` and ``srd rules test``: plain functions returning an exit code."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from srd.cli.exitcodes import FAILED, OK, USAGE
from srd.cli.loading import load_or_report
from srd.config import ConfigError
from srd.config.root import CONFIG_ENV, resolve_config_path
from srd.evaluation.export import export_rules
from srd.evaluation.rulepacks import load_rule_packs


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = commands.add_parser("rules", help="export rule packs to Prometheus, or test them")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    export = rules_commands.add_parser(
        "export", help="write Prometheus rule files and their promtool unit tests"
    )
    export.add_argument("--out", required=True, type=Path, help="directory to write into")
    test = rules_commands.add_parser(
        "test", help="export to a temp dir, then promtool check rules and test rules"
    )
    test.add_argument("--promtool", default="promtool", help="promtool binary (PATH lookup)")
    for action, handler in ((export, _rules_export), (test, _rules_test)):
        action.add_argument(
            "--rules",
            type=Path,
            action="append",
            help="rule pack file or directory (repeatable; default: the config's "
            "evaluation.rules, else ./rules)",
        )
        action.add_argument("--config", help="config file whose evaluation.rules to use")
        action.set_defaults(handler=handler)


def _rule_paths(args: argparse.Namespace) -> list[Path] | None:
    if args.rules:
        return list(args.rules)
    if args.config or os.environ.get(CONFIG_ENV):
        setup = load_or_report(resolve_config_path(args.config))
        return None if setup is None else list(setup.rule_paths)
    return [Path("rules")]


def _rules_export(args: argparse.Namespace) -> int:
    paths = _rule_paths(args)
    return USAGE if paths is None else rules_export(paths, args.out)


def _rules_test(args: argparse.Namespace) -> int:
    paths = _rule_paths(args)
    return USAGE if paths is None else rules_test(paths, promtool=args.promtool)


def rules_export(rule_paths: Sequence[Path], out_dir: Path, *, out: TextIO = sys.stdout) -> int:
    """Write Prometheus rule files and their promtool tests for ``rule_paths`` to ``out_dir``."""
    try:
        packs = load_rule_packs(rule_paths)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return USAGE
    for path in export_rules(packs, out_dir):
        print(path, file=out)
    return OK


def rules_test(
    rule_paths: Sequence[Path], *, promtool: str = "promtool", out: TextIO = sys.stdout
) -> int:
    """Export to a temporary directory, then ``promtool check rules`` and ``promtool test
    rules`` on it; exit non-zero when either fails or promtool is missing."""
    binary = shutil.which(promtool)
    if binary is None:
        print(f"{promtool} not found: install Prometheus (Debian: prometheus)", file=sys.stderr)
        return FAILED
    try:
        packs = load_rule_packs(rule_paths)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return USAGE
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
                return FAILED
    return OK
