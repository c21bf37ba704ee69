"""Every exit code of every ``srd`` command, in one place.

Three codes mean the same for every command: ``OK`` (0) done; ``FAILED`` (1) the command ran
and what it did or found failed; ``USAGE`` (2) the command line, the config, a rule pack or a
drill is invalid and nothing was started (argparse too exits 2 on a bad command line).

========  ===================================================================================
command   exit codes
========  ===================================================================================
run       0 stopped by SIGTERM/SIGINT; 1 an essential task failed, or the listen address
          cannot be had (busy), nothing started; 2 invalid config or options, a journal
          file that cannot be used, or no ``failover.auth`` on a journal an armed replica
          shares: nothing started (what ``srd.runtime.Daemon.run`` returns: ``EXIT_OK``,
          ``EXIT_FAILED``, ``EXIT_USAGE``)
check     0 the config and every file it references are valid; 2 invalid, every problem
          printed with file and key
rules     0 exported, or promtool passed; 1 promtool failed or is missing; 2 invalid rule
          pack or config
probe     0 the target is up; 1 it is down; 2 an invalid URL or option
journal   0 shown; 1 no such journal or execution, or the journal cannot be reached;
          2 invalid config
runbooks  0 listed; 2 invalid config or runbook
execute   0 started (followed on a terminal: it succeeded, or the dry run ended); 1 refused
          (no such runbook, labels its matchers refuse, wrong credentials, journal down), srd
          unreachable, or (followed) it ended failed, rolled back, escalated, blocked or
          cancelled; 2 invalid config, ``--var`` or token file
approve   0 approved; 1 refused (nothing waits under that id, wrong credentials, journal
          down) or srd unreachable; 2 invalid config or token file
simulate  one drill: 0 every objective met; 2 invalid drill or options, nothing ran; 3 an
          objective breached; 4 the steady state not restored after the rollback; 5 aborted;
          6 interrupted (SIGINT); 7 the preflight of a real target failed, nothing ran.
          ``--all``: 0 every drill passed (met, or breached as its ``expect_breach`` says),
          1 otherwise. (The drill codes are ``srd.simulate.verdict``'s ``EXIT_*``; they are
          not imported here so that only ``srd simulate`` loads the simulator.)
version   0
========  ===================================================================================
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
