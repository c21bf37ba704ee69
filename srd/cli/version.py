"""``srd version``."""

from __future__ import annotations

import argparse
import platform

from srd import __version__
from srd.cli.exitcodes import OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)


def _version(_: argparse.Namespace) -> int:
    print(f"srd {__version__} (Python {platform.python_version()})")
    return OK
