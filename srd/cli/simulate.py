"""``srd simulate``: a game-day drill on the built-in sandbox, or after a read-only preflight
on a real environment; its exit code is the drill's outcome (``srd.cli.exitcodes``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srd.cli.exitcodes import USAGE


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="run a game-day drill on the built-in sandbox (or, after a read-only preflight, "
        "a real environment) and report RTO and RPO (exit 0 met, 2 invalid, 3 breached, "
        "4 not restored, 5 aborted, 6 interrupted, 7 preflight failed)",
    )
    simulate.add_argument("drill", nargs="?", type=Path, help="a drill file (drills/*.yaml)")
    simulate.add_argument("--all", action="store_true", help="run every drill in --drills")
    simulate.add_argument("--drills", type=Path, default=Path("drills"), help="for --all")
    simulate.add_argument("--report-dir", type=Path, help="default: drill-reports/<drill>")
    simulate.add_argument(
        "--time-scale",
        type=float,
        help="with --target real: drill seconds per wall second (the sandbox runs on virtual time)",
    )
    simulate.add_argument("--no-rollback", action="store_true", help="leave the faults in place")
    simulate.add_argument(
        "--hold",
        action="store_true",
        help="on the sandbox, one drill: after the reports, keep the sandbox up (with "
        "--no-rollback: broken) and print its endpoints, until Ctrl-C",
    )
    simulate.add_argument(
        "--target",
        choices=["sandbox", "real"],
        default="sandbox",
        help="real: the environment --config watches; only manual faults (default sandbox)",
    )
    simulate.add_argument("--config", type=Path, help="with --target real: its srd.yaml")
    simulate.add_argument(
        "--mode",
        choices=["armed", "dry-run"],
        help="default: armed on the sandbox, dry-run on a real target (armed there needs the "
        "config's mode: armed too)",
    )
    simulate.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    simulate.add_argument(
        "--explore",
        type=int,
        metavar="N",
        help="run N random fault schedules of the drill (default "
        "drills/complete_data_center_outage.yaml), checking invariants; exit 3 on a violation",
    )
    simulate.add_argument("--seed", type=int, default=0, help="for --explore: the schedules' seed")
    simulate.add_argument(
        "--replay", metavar="EXPLORE_JSON#K", help="run schedule K of an explore.json again"
    )
    simulate.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    # the sandbox's imports only when asked
    from srd.simulate.runner import DrillOptions, simulate_command

    if args.explore is not None or args.replay is not None:
        from srd.simulate.explore import DEFAULT_DRILL, explore, replay

        if args.replay is not None:
            return replay(args.replay, args.report_dir)
        report_dir = args.report_dir or Path("drill-reports") / "explore"
        return explore(args.drill or DEFAULT_DRILL, args.explore, args.seed, report_dir)
    if args.all == (args.drill is not None):
        print("srd simulate: give one drill file, or --all", file=sys.stderr)
        return USAGE
    if args.hold and (args.all or args.target == "real"):
        print("srd simulate: --hold is for one drill on the sandbox", file=sys.stderr)
        return USAGE
    if (args.target == "real") != (args.config is not None):
        message = "--target real needs --config, and --config is for --target real only"
        print(f"srd simulate: {message}", file=sys.stderr)
        return USAGE
    return simulate_command(
        [args.drill] if args.drill else [],
        run_all=args.all,
        drills_dir=args.drills,
        report_dir=args.report_dir,
        options=DrillOptions(
            real_config=args.config,
            time_scale=args.time_scale,
            mode=args.mode,
            rollback=not args.no_rollback,
            log_level=args.log_level or "error",
            hold=args.hold,
        ),
    )
