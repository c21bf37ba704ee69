"""``srd check``: validate the config and every file it references, start nothing."""

from __future__ import annotations

import argparse

from srd.cli.exitcodes import OK, USAGE
from srd.cli.loading import load_or_report
from srd.config.root import resolve_config_path


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("check", help="validate the config and every file it references")
    check.add_argument("--config", help="config file (default: $SRD_CONFIG or /etc/srd/srd.yaml)")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    setup = load_or_report(path)
    if setup is None:
        return USAGE
    targets = len(setup.config.probes.target_names())
    slos = sum(len(pack.slos) for pack in setup.packs)
    print(
        f"{path}: ok (mode {setup.config.mode}, {targets} probe target(s), "
        f"{len(setup.packs)} rule pack(s), {slos} SLO(s), {len(setup.runbooks)} runbook(s), "
        f"{len(setup.actuators)} actuator(s))"
    )
    return OK
