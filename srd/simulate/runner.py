"""``srd simulate``: run a drill on the built-in sandbox with the real daemon pipeline, or on
a real environment (``--target real``) after a read-only preflight.

The daemon (``srd.runtime.Daemon``) runs in-process against the sandbox with the sandbox's
config plus the drill's alert rules and runbooks — probes, evaluation, failover, actuators and
the journal are the real ones. The runner only sequences the drill's parts: it sets up
(``setup``), injects faults and plays the operator at approval steps (``actions``), watches
the registry and the journal (``observer``), measures from the journal's timestamps
(``measurement``), judges (``verdict``, where the exit codes are) and writes the reports
(``report``).

On a real environment srd injects nothing: only ``manual`` faults are allowed, which the
operator injects when told (and undoes at rollback) while srd watches for the symptom. The
daemon runs with the given config's probes, actuators and rule packs, the drill's alerts and
runbooks, its own journal in the report directory, and no leader election; in ``dry-run``
(the default) the runbook journals its plan and changes nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from srd import clock
from srd.config import ConfigError
from srd.config.durations import format_duration
from srd.evaluation.recovery import RpoStatus
from srd.journal import open_journal
from srd.runtime import Daemon, Setup
from srd.simulate.actions import FaultSchedule, SimulatedOperator
from srd.simulate.clock import VirtualLoop
from srd.simulate.drill import Drill, Targets, load_drill, targets
from srd.simulate.invariants import Invariants
from srd.simulate.measurement import check_rpo, collect, measure, record_drill
from srd.simulate.observer import TICK, JournalFollower, Observer
from srd.simulate.preflight import preflight
from srd.simulate.progress import Progress
from srd.simulate.report import summary_line, write_reports
from srd.simulate.result import DrillResult, FaultRun, Recorder
from srd.simulate.setup import (
    Environment,
    check_faults,
    failover_stage,
    real_environment,
    running_daemon,
    sandbox_environment,
)
from srd.simulate.verdict import EXIT_INVALID, judge


@dataclass(frozen=True)
class DrillOptions:
    """How a drill runs: ``srd simulate``'s flags."""

    real_config: Path | None = None
    """The config of the real environment to drill on; None: the sandbox."""
    time_scale: float | None = None
    """On a real environment, drill seconds per wall second (the sandbox runs on virtual time,
    unscaled: ``srd.simulate.clock``)."""
    mode: str | None = None
    """armed or dry-run; None: armed on the sandbox, dry-run on a real environment."""
    rollback: bool = True
    log_level: str = "error"
    hold: bool = False
    """On the sandbox: after the drill and its reports, keep the sandbox up until SIGINT."""

    @property
    def scale(self) -> float:
        return 1.0 if self.real_config is None else self.time_scale or 1.0

    @property
    def run_mode(self) -> str:
        return self.mode or ("armed" if self.real_config is None else "dry-run")


class DrillRun:
    def __init__(
        self,
        drill: Drill,
        path: Path,
        report_dir: Path,
        options: DrillOptions,
        progress: Progress,
        invariants: Invariants | None = None,
    ) -> None:
        self.drill = drill
        self.invariants = invariants
        """Exploration's invariants, checked while the drill runs; None: a plain drill."""
        self.options = options
        self.scale = scale = options.scale
        self.mode = mode = options.run_mode
        self.rollback_enabled = options.rollback and drill.rollback == "always"
        self.progress = progress
        self.interrupted = asyncio.Event()
        self.tick = TICK if options.real_config is not None else drill.probe_interval
        """Seconds between the drill's looks at the registry and the journal: on the sandbox
        the probe interval (nothing changes in between), on a real environment a fraction."""
        self.result = DrillResult(
            drill,
            path,
            report_dir,
            scale,
            mode,
            "always" if self.rollback_enabled else "never",
            Targets(0.0, 0.0),
            clock.now(),
            target="real" if options.real_config is not None else "sandbox",
        )
        self.result.precision = self.tick * scale
        self.recorder = Recorder(self.result, progress)

    async def run(self) -> DrillResult:
        result = self.result
        state_dir = result.report_dir / "state"
        if state_dir.exists():
            shutil.rmtree(state_dir)
        state_dir.mkdir(parents=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._sigint)
        try:
            async with AsyncExitStack() as stack:
                if self.options.real_config is not None:
                    environment = real_environment(
                        self.drill, self.options.real_config, state_dir, self.scale, self.mode
                    )
                else:
                    environment = await stack.enter_async_context(
                        sandbox_environment(self.drill, state_dir, self.scale, self.mode)
                    )
                pack = environment.pack
                recovery = pack.disaster_recovery if pack else None
                result.targets = targets(self.drill, recovery, str(result.path))
                if self.options.real_config is None or await self._preflight(environment.setup):
                    await self._with_daemon(environment)
                result.verdict = judge(
                    result.halted,
                    result.objectives,
                    result.rollback.get("steady_state_restored"),
                    expect_breach=self.drill.expect_breach,
                )
                if (
                    self.options.hold
                    and self.options.real_config is None
                    and not self.interrupted.is_set()
                ):
                    await self._hold(environment)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            result.ended_at = clock.now()
        return result

    def _sigint(self) -> None:
        self.interrupted.set()

    async def _hold(self, environment: Environment) -> None:
        """Keep the sandbox as the drill left it (with ``--no-rollback``: broken) for study,
        the reports written first; until SIGINT. The daemon has stopped; its journal stays."""
        self.result.ended_at = clock.now()
        write_reports(self.result)
        self.progress.done()
        lines = [f"  {name}: {url}" for name, url in environment.endpoints.items()]
        lines.append(f"  journal: srd journal --journal {environment.journal_dir}")
        print(summary_line(self.result))
        print("sandbox held for study; Ctrl-C ends it:\n" + "\n".join(lines), flush=True)
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualLoop):
            # Studied by a person: from here the sandbox lives in wall time.
            loop.realtime()
        # The daemon's stop gave SIGINT back to the default; here it ends the hold.
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._sigint)
        await self.interrupted.wait()

    async def _preflight(self, setup: Setup) -> bool:
        """Read-only checks of a real environment; whether all passed (else the drill halts)."""
        result = self.result
        self.progress.event("preflight: read-only checks of every probe, read and permission")
        try:
            result.preflight = await preflight(setup, self.drill, list(setup.runbooks))
        finally:
            for actuator in setup.actuators.values():
                await actuator.close()
        failed = [c for c in result.preflight if not c.ok]
        for check in failed:
            self.recorder.note("preflight_failed", f"preflight: {check.name}: {check.detail}")
        if failed:
            result.halted = "preflight_failed"
            return False
        self.recorder.note("preflight_passed", f"preflight: {len(result.preflight)} checks passed")
        return True

    async def _with_daemon(self, environment: Environment) -> None:
        setup = environment.setup
        async with running_daemon(
            setup, self.drill, self.scale, self.options.log_level, self._sigint
        ) as daemon:
            await self._drill(daemon, environment)
        journal = await open_journal(setup.config.state_dir, create=False)
        try:
            await collect(journal, self.result)
            measure(self.result)
            if self.invariants is not None:
                self.invariants.judge(self.result, setup.runbooks)
            await record_drill(journal, daemon.metrics, self.result)
        finally:
            await journal.close()
        if environment.home_journal is not None and self.result.mode == "armed":
            # Where the environment's own srd reads it: its dashboards show the drill.
            home = await open_journal(environment.home_journal, password=environment.home_password)
            try:
                await record_drill(home, daemon.metrics, self.result)
            finally:
                await home.close()

    async def _drill(self, daemon: Daemon, environment: Environment) -> None:
        result, drill, recorder = self.result, self.drill, self.recorder
        failover = failover_stage(daemon)
        observer = Observer(drill, daemon.metrics.samples, recorder, self.scale, self.tick)
        if not await observer.wait_steady("before", self.interrupted):
            result.halted = "interrupted" if self.interrupted.is_set() else "aborted"
            return
        recorder.note("steady_state", "steady state holds: " + "; ".join(drill.steady_state.probes))
        start = clock.now()
        result.faults = [
            FaultRun(i, f.kind, dict(f.params), f.at, f.repaired_by)
            for i, f in zip(drill.fault_ids(), drill.faults, strict=True)
        ]
        faults = FaultSchedule(result.faults, environment.target, recorder, self.scale)
        follower = JournalFollower(drill.expect.runbook, self.progress)
        operator = SimulatedOperator(drill, recorder, self.scale, faults.repaired)
        deadline = drill.deadline or 2 * result.targets.rto
        if self.invariants is not None:
            self.invariants.attach(environment.target.kubernetes)
        rpo: asyncio.Task[RpoStatus | None] | None = None
        try:
            while True:
                now = clock.now()
                self.progress.status(observer.status(now, faults.injected_at))
                if self.interrupted.is_set():
                    recorder.note("interrupted", "interrupted (SIGINT): rolling back")
                    result.halted = "interrupted"
                    break
                await faults.inject_due(start, now)
                injected_at = faults.injected_at
                if injected_at is None:
                    await asyncio.sleep(self.tick)
                    continue
                if rpo is None:
                    # Listing S3 takes a moment of wall time: it must not delay anything else.
                    rpo = asyncio.create_task(check_rpo(environment.pack, result), name="drill-rpo")
                observer.refresh()
                if trip := observer.tripped(now):
                    result.stop = {"condition": trip, "at": now}
                    recorder.note("stop_condition", f"stop condition tripped: {trip}")
                    result.halted = "aborted"
                    break
                observer.look(now, injected_at)
                if self.invariants is not None:
                    self.invariants.look(now, injected_at, observer.drill_alert_firing())
                if follower.due(now):
                    executions = await failover.journal.executions(20)
                    await follower.follow(failover.journal, executions, faults.repaired)
                    await operator.approve(
                        failover.guards.approvals, daemon.setup.runbooks, follower.runbook_of, now
                    )
                    if self.mode == "dry-run" and follower.planned(executions):
                        # Nothing acted: no recovery will come. The plan is the result.
                        recorder.note("plan_journaled", "dry run: the runbook's plan is journaled")
                        break
                if follower.settled and observer.sustained(now):
                    recorder.note(
                        "recovery_sustained",
                        f"recovery sustained for {format_duration(drill.sustain)}",
                    )
                    break
                if now - injected_at > deadline / self.scale:
                    recorder.note(
                        "deadline", f"deadline {format_duration(deadline)} passed, not recovered"
                    )
                    break
                await asyncio.sleep(self.tick)
        finally:
            # Rollback runs however the drill ended: met, failed, aborted, interrupted, crashed.
            if rpo is not None:
                result.rpo = await rpo
            await self._rollback(observer, faults)

    async def _rollback(self, observer: Observer, faults: FaultSchedule) -> None:
        result = self.result
        if not self.rollback_enabled:
            result.rollback = {
                "policy": "never",
                "ran": False,
                "reverted": [],
                "steady_state_restored": None,
            }
            self.recorder.note(
                "rollback_skipped", "rollback skipped (--no-rollback): faults left in place"
            )
            return
        reverted = await faults.rollback()
        restored = await observer.wait_steady("after", self.interrupted)
        if restored:
            self.recorder.note("steady_state_restored", "steady state holds after rollback")
        result.rollback = {
            "policy": "always",
            "ran": True,
            "reverted": reverted,
            "steady_state_restored": restored,
        }


# --- the command ----------------------------------------------------------------------------


async def run_drill(
    path: Path,
    *,
    report_dir: Path,
    options: DrillOptions = DrillOptions(),
    quiet: bool = False,
    progress: Progress | None = None,
) -> DrillResult:
    """Run the drill at ``path`` as ``options`` say (on the sandbox, or on the environment
    ``options.real_config`` watches); write its reports. ConfigError when the drill is invalid,
    or cannot run on that target."""
    drill = load_drill(path)
    check_faults(drill, path, real=options.real_config is not None)
    progress = progress or Progress(drill.name, quiet=quiet)
    run = DrillRun(drill, path, report_dir, options, progress)
    wall = time.perf_counter()  # the wall clock by intent: what the drill cost to run
    result = await run.run()
    result.wall_seconds = time.perf_counter() - wall
    progress.done()
    write_reports(result)
    return result


def simulate_command(
    drills: Sequence[Path],
    *,
    run_all: bool = False,
    drills_dir: Path = Path("drills"),
    report_dir: Path | None = None,
    options: DrillOptions = DrillOptions(),
) -> int:
    """Run one drill (its exit code) or, with ``run_all``, every drill in ``drills_dir``
    (0 when each met its objectives, or breached one as its ``expect_breach`` says; else 1)."""
    paths = (
        sorted([*drills_dir.glob("*.yaml"), *drills_dir.glob("*.yml")]) if run_all else list(drills)
    )
    if not paths:
        print("srd simulate: no drills to run", file=sys.stderr)
        return EXIT_INVALID
    if not run_all and len(paths) != 1:
        print("srd simulate: give one drill file, or --all", file=sys.stderr)
        return EXIT_INVALID
    base = report_dir or Path("drill-reports")
    summary: list[tuple[str, bool, str]] = []
    for path in paths:
        target_dir = base / path.stem if run_all else (report_dir or base / path.stem)
        # The sandbox runs on virtual time; a real environment in wall time.
        factory = VirtualLoop if options.real_config is None else None
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                result = runner.run(run_drill(path, report_dir=target_dir, options=options))
        except ConfigError as exc:
            print(f"srd simulate: invalid drill {path}:", file=sys.stderr)
            for issue in exc.issues:
                print(f"  {issue}", file=sys.stderr)
            if not run_all:
                return EXIT_INVALID
            summary.append((path.name, False, "invalid drill"))
            continue
        line = summary_line(result)
        print(line)
        print(f"  reports: {target_dir}/report.{{json,md,html}}")
        if not run_all:
            return result.exit_code
        if result.judged.outcome == "interrupted":
            summary.append((path.name, False, "interrupted"))
            break
        summary.append((path.name, result.judged.passed, line))
    print("\nsummary:")
    for name, passed, _line in summary:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(passed for _, passed, _ in summary) else 1
