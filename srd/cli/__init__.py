"""``srd`` command line: run | check | rules | probe | runbooks | execute | journal | approve |
simulate | version.

One module per command, each adding its parser (``register``) and handling it; every exit
code of every command is in ``srd.cli.exitcodes``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from srd.cli import (
    approve,
    check,
    execute,
    journal,
    probe,
    rules,
    run,
    runbooks,
    simulate,
    version,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srd", description="Site-reliability daemon: probes, SLO and DR rules, failover."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (
        run,
        check,
        rules,
        probe,
        runbooks,
        execute,
        journal,
        approve,
        simulate,
        version,
    ):
        command.register(commands)
    return parser
