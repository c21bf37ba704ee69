"""``srd run``: the daemon, on a config or on the built-in sandbox."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from srd import logs
from srd.cli.exitcodes import FAILED, USAGE
from srd.cli.loading import load_or_report
from srd.config.root import resolve_config_path
from srd.config.server import split_host_port
from srd.http.app import listen as http_listen
from srd.runtime import Daemon, Setup, load_setup


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level or "info", args.log_format or "auto")
    if args.sandbox:
        return asyncio.run(_run_sandbox(args))
    if args.listen or args.state_dir:
        print(
            "srd run: --listen and --state-dir apply to --sandbox only; set them in the config",
            file=sys.stderr,
        )
        return USAGE
    setup = load_or_report(resolve_config_path(args.config))
    if setup is None:
        return USAGE
    return asyncio.run(_daemon(setup, args))


async def _daemon(
    setup: Setup, args: argparse.Namespace, sockets: Sequence[socket.socket] = ()
) -> int:
    daemon = Daemon(setup, log_level=args.log_level, log_format=args.log_format, sockets=sockets)
    try:
        return await daemon.run()
    except Exception:
        # A bug, not bad input: still one log line (JSON in JSON mode), never a bare traceback.
        logs.get_logger("srd.cli").exception("srd stopped on an unexpected error")
        return FAILED


async def _run_sandbox(args: argparse.Namespace) -> int:
    from srd.simulate.sandbox import running_sandbox

    listen = args.listen or "127.0.0.1:9877"
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        print(f"srd run: --listen: {exc}", file=sys.stderr)
        return USAGE
    log = logs.get_logger("srd.cli")
    try:
        # Before the sandbox starts: a busy address stops everything, with nothing to undo.
        sockets = http_listen(host, port)
    except OSError as exc:
        log.error("cannot listen; srd did not start", address=listen, error=str(exc))
        return FAILED
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="srd-sandbox-"))
    try:
        async with running_sandbox(state_dir, listen) as sandbox:
            log.info("sandbox running", config=str(sandbox.config_path), **sandbox.urls)
            return await _daemon(load_setup(sandbox.config_path), args, sockets)
    finally:
        for sock in sockets:
            sock.close()
