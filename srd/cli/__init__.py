"""``srd`` command line: run | check | version.

Exit codes: 0 success; 1 the daemon stopped because an essential task failed; 2 the config
(or the command line) is invalid — nothing was started.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from pydantic import ValidationError

from srd import __version__, logs
from srd.cli.journal import journal_list, journal_show
from srd.cli.probe import probe_once
from srd.cli.rules import rules_export, rules_test
from srd.config import (
    CONFIG_ENV,
    ConfigError,
    resolve_config_path,
    split_host_port,
)
from srd.http.alertmanager import Authenticator
from srd.http.failover_api import approve
from srd.runtime import Daemon, Setup, load_setup

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srd", description="Site-reliability daemon: probes, SLO and DR rules, failover."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="config file (default: $SRD_CONFIG or /etc/srd/srd.yaml)")
    run.add_argument(
        "--sandbox",
        action="store_true",
        help="start the built-in simulated platform and monitor it (ignores --config)",
    )
    run.add_argument("--listen", help="with --sandbox: host:port to serve on (127.0.0.1:9877)")
    run.add_argument(
        "--state-dir", help="with --sandbox: where to keep state (default: a new temp dir)"
    )
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["auto", "json", "console"])
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate the config and every file it references")
    check.add_argument("--config", help="config file (default: $SRD_CONFIG or /etc/srd/srd.yaml)")
    check.set_defaults(handler=_check)

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

    probe = commands.add_parser(
        "probe", help="probe one target once and print what srd sees as JSON (exit 1 if down)"
    )
    probe.add_argument("kind", choices=["substrate", "exporter", "http"])
    probe.add_argument("url", help="JSON-RPC URL, metrics page URL or health URL")
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    probe.add_argument(
        "--keep", action="append", default=[], help="exporter: a metric name to extract (repeat)"
    )
    probe.add_argument(
        "--expect-status", type=int, action="append", help="http: an accepted status (repeat)"
    )
    probe.set_defaults(handler=_probe)

    journal = commands.add_parser(
        "journal", help="list failover executions, or show one with its steps and guard blocks"
    )
    journal.add_argument("id", nargs="?", help="an execution id (omit to list the newest)")
    journal.add_argument("--config", help="config whose state_dir holds the journal")
    journal.add_argument(
        "--journal",
        help="a state directory, sqlite:///path or postgresql://user@host/db (overrides; "
        "the password from PGPASSWORD or ~/.pgpass)",
    )
    journal.add_argument("--limit", type=int, default=20, help="executions to list (20)")
    journal.add_argument("--json", action="store_true", help="print JSON")
    journal.set_defaults(handler=_journal)

    approve = commands.add_parser(
        "approve", help="approve a runbook step waiting for a human (see GET /api/approvals)"
    )
    approve.add_argument("id", help="the approval id")
    approve.add_argument("--config", help="config of the running srd (its server and auth)")
    approve.add_argument("--url", help="srd's base URL (default: from the config's listen)")
    approve.set_defaults(handler=_approve)

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

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    return parser


def _simulate(args: argparse.Namespace) -> int:
    from srd.simulate.runner import simulate_command  # the sandbox's imports only when asked

    if args.explore is not None or args.replay is not None:
        from srd.simulate.explore import DEFAULT_DRILL, explore, replay

        if args.replay is not None:
            return replay(args.replay, args.report_dir)
        report_dir = args.report_dir or Path("drill-reports") / "explore"
        return explore(args.drill or DEFAULT_DRILL, args.explore, args.seed, report_dir)
    if args.all == (args.drill is not None):
        print("srd simulate: give one drill file, or --all", file=sys.stderr)
        return EXIT_CONFIG
    if args.hold and (args.all or args.target == "real"):
        print("srd simulate: --hold is for one drill on the sandbox", file=sys.stderr)
        return EXIT_CONFIG
    if (args.target == "real") != (args.config is not None):
        message = "--target real needs --config, and --config is for --target real only"
        print(f"srd simulate: {message}", file=sys.stderr)
        return EXIT_CONFIG
    return simulate_command(
        [args.drill] if args.drill else [],
        run_all=args.all,
        drills_dir=args.drills,
        report_dir=args.report_dir,
        time_scale=args.time_scale,
        rollback=not args.no_rollback,
        mode=args.mode,
        log_level=args.log_level or "error",
        real_config=args.config,
        hold=args.hold,
    )


def _load(path: Path) -> Setup | None:
    """The config at ``path`` with its rule packs, or None after printing every problem with
    file and key."""
    try:
        return load_setup(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s); srd did not start", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    setup = _load(path)
    if setup is None:
        return EXIT_CONFIG
    targets = len(setup.config.probes.target_names())
    slos = sum(len(pack.slos) for pack in setup.packs)
    print(
        f"{path}: ok (mode {setup.config.mode}, {targets} probe target(s), "
        f"{len(setup.packs)} rule pack(s), {slos} SLO(s), {len(setup.runbooks)} runbook(s), "
        f"{len(setup.actuators)} actuator(s))"
    )
    return 0


def _rule_paths(args: argparse.Namespace) -> list[Path] | None:
    if args.rules:
        return list(args.rules)
    if args.config or os.environ.get(CONFIG_ENV):
        setup = _load(resolve_config_path(args.config))
        return None if setup is None else list(setup.rule_paths)
    return [Path("rules")]


def _rules_export(args: argparse.Namespace) -> int:
    paths = _rule_paths(args)
    return EXIT_CONFIG if paths is None else rules_export(paths, args.out)


def _rules_test(args: argparse.Namespace) -> int:
    paths = _rule_paths(args)
    return EXIT_CONFIG if paths is None else rules_test(paths, promtool=args.promtool)


def _probe(args: argparse.Namespace) -> int:
    if args.kind == "exporter" and not args.keep:
        print("srd probe exporter: name the series to extract with --keep NAME", file=sys.stderr)
        return EXIT_CONFIG
    try:
        report, up = asyncio.run(
            probe_once(
                args.kind,
                args.url,
                timeout_seconds=args.timeout,
                keep=args.keep,
                expect_status=args.expect_status or [200],
            )
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            print(f"srd probe {args.kind}: {where}: {error['msg']}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(report, indent=2))
    return 0 if up else 1


def _journal(args: argparse.Namespace) -> int:
    target: str | Path
    password = None
    if args.journal:
        target = args.journal
    else:
        setup = _load(resolve_config_path(args.config))
        if setup is None:
            return EXIT_CONFIG
        failover = setup.config.failover
        target = failover.journal or setup.config.state_dir
        password = failover.journal_password.value if failover.journal_password else None
    if args.id:
        return journal_show(target, args.id, as_json=args.json, password=password)
    return journal_list(target, limit=args.limit, as_json=args.json, password=password)


def _approve(args: argparse.Namespace) -> int:
    setup = _load(resolve_config_path(args.config))
    if setup is None:
        return EXIT_CONFIG
    server = setup.config.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    url = args.url or f"http://{host}:{server.port}"
    authorization = Authenticator(setup.config.failover.auth).header
    try:
        approved, message = asyncio.run(approve(url, args.id, authorization, getpass.getuser()))
    except aiohttp.ClientError as exc:
        print(f"srd approve: cannot reach srd at {url}: {exc}", file=sys.stderr)
        return 1
    print(message, file=sys.stdout if approved else sys.stderr)
    return 0 if approved else 1


def _version(_: argparse.Namespace) -> int:
    print(f"srd {__version__} (Python {platform.python_version()})")
    return 0


def _run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level or "info", args.log_format or "auto")
    if args.sandbox:
        return asyncio.run(_run_sandbox(args))
    if args.listen or args.state_dir:
        print(
            "srd run: --listen and --state-dir apply to --sandbox only; set them in the config",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    setup = _load(resolve_config_path(args.config))
    if setup is None:
        return EXIT_CONFIG
    return asyncio.run(_daemon(setup, args))


async def _daemon(setup: Setup, args: argparse.Namespace) -> int:
    daemon = Daemon(setup, log_level=args.log_level, log_format=args.log_format)
    return await daemon.run()


async def _run_sandbox(args: argparse.Namespace) -> int:
    from srd.simulate.sandbox import running_sandbox

    listen = args.listen or "127.0.0.1:9877"
    try:
        split_host_port(listen)
    except ValueError as exc:
        print(f"srd run: --listen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="srd-sandbox-"))
    async with running_sandbox(state_dir, listen) as sandbox:
        logs.get_logger("srd.cli").info(
            "sandbox running", config=str(sandbox.config_path), **sandbox.urls
        )
        return await _daemon(load_setup(sandbox.config_path), args)


if __name__ == "__main__":
    sys.exit(main())
