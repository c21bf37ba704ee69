"""The sandbox loads the shipped runbooks, on its own AWS (moto): an operator lists them and
starts one by hand against `srd run --sandbox`, and the journal says who started it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_execute_cli import srd_cli
from tests.support.daemon import free_port, running_srd

SERVICES = ("blockchain", "database", "web-creator", "web-viewer")


async def test_the_sandbox_lists_the_shipped_runbooks_and_journals_who_started_one(
    tmp_path: Path,
) -> None:
    port = free_port()
    args = ("run", "--sandbox", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path))
    async with running_srd(*args, port=port):
        config = str(tmp_path / "srd.yaml")
        code, out, err = await srd_cli("runbooks", "--config", config, "--json")
        assert code == 0, err
        listed = json.loads(out)
        names = {runbook["name"] for runbook in listed}
        assert {f"platform_failover_{service}" for service in SERVICES} <= names
        assert "blue_green_deploy" in names
        # The sites' addresses are the sandbox's moto, not the shipped placeholders.
        assert "Z0000000000000000000" not in (tmp_path / "runbooks").joinpath(
            "platform_failover.yaml"
        ).read_text(encoding="utf-8")

        url = f"http://127.0.0.1:{port}"
        code, out, err = await srd_cli("execute", "platform_failover_web-viewer", "--url", url)
        assert code == 0, err
        execution = out.split()[0]
        code, out, err = await srd_cli("journal", execution, "--journal", str(tmp_path))
    assert code == 0, err
    # The sandbox has no failover.auth: who started it is anonymous, whatever the client says.
    assert "started by   anonymous" in out
    # The sandbox observes: the mode guard refuses the steps, and says so.
    assert "blocked (mode observe)" in out
