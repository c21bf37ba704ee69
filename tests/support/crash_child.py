"""A process that runs a runbook until the parent SIGKILLs it (tests/failover/test_executor.py).

Its actuator keeps state and a log of applies in files, so they outlive the kill; it prints
``converging`` once step b's change has landed and srd is polling for convergence."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from srd.actuators.base import Params, State
from srd.testing import FakeActuator
from tests.support.failoverkit import THREE_STEPS, kit


class FileActuator(FakeActuator):
    def __init__(self, directory: Path) -> None:
        self.file = directory / "state.json"
        saved = json.loads(self.file.read_text()) if self.file.exists() else {}
        super().__init__(state=saved)
        self.log = directory / "applies.log"

    async def apply(self, action: str, params: Params) -> State:
        with self.log.open("a") as log:
            log.write(f"{params['key']}\n")
        after = await super().apply(action, params)
        self.file.write_text(json.dumps(self.state))
        return after

    async def converged(self, action: str, params: Params) -> bool:
        if params["key"] == "b":
            print("converging", flush=True)
            await asyncio.Event().wait()  # hangs until the parent's SIGKILL
        return await super().converged(action, params)


async def main(directory: Path) -> None:
    async with kit(directory) as k:
        actuator: Any = FileActuator(directory)
        k.executor._actuators = {"fake": actuator}
        runbook = k.runbook(THREE_STEPS)
        await k.executor.run(runbook, await k.execution(runbook))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
