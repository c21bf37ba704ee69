"""The daemon end to end: the real ``srd`` process, its signals, its HTTP endpoints."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
from pathlib import Path

from srd.simulate.sandbox import FakeService
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode, producing
from tests.support.daemon import free_port, running_srd
from tests.support.servers import running

# The console script installed beside this Python: the command users type.
SRD = str(Path(sys.executable).with_name("srd"))
NODE = {"chain": "Vilokanam Sandbox", "node": "validator-1"}


async def test_sandbox_shows_build_info_and_a_growing_chain_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with running_srd(
        "run",
        "--sandbox",
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path),
        port=port,
    ) as srd:
        assert await srd.metric("srd_build_info") == 1
        first = await srd.wait_for("srd_chain_best_block", NODE, lambda v: v >= 1)
        await srd.wait_for("srd_chain_best_block", NODE, lambda v: v > first)
        web = {"probe": "http", "target": "web-viewer"}
        await srd.wait_for("srd_probe_up", web, lambda v: v == 1)
        # The sandbox's S3 (moto) holds the platform's backups: the RPO is judged and met.
        database = {"scenario": "database_failure"}
        await srd.wait_for("srd_rpo_met", database, lambda v: v == 1, timeout=40)
        # It keeps 30 database backups, as the policy says: the retention verdict is met.
        await srd.wait_for("srd_backup_retention_met", database, lambda v: v == 1)
        assert (await srd.get("/readyz"))[0] == 200
        assert await srd.metric("process_resident_memory_bytes") is not None

        srd.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(srd.process.wait(), timeout=10) == 0
    assert srd.logged("stopped")


def config_text(node_url: str, port: int, state_dir: Path, interval: str = "0.2s") -> str:
    # A state directory of its own: the host's /var/lib/srd is no test's to share.
    return textwrap.dedent(f"""\
        state_dir: {state_dir}
        server:
          listen: 127.0.0.1:{port}
        probes:
          substrate:
            - name: node-a
              url: {node_url}
              interval: {interval}
              timeout: 0.2s
        """)


async def test_sighup_with_a_broken_config_keeps_the_old_config_running(tmp_path: Path) -> None:
    chain = FakeChain(name="hup-chain")
    port = free_port()
    config = tmp_path / "srd.yaml"
    async with producing(chain, 0.1), FakeSubstrateNode(chain).serve() as url:
        config.write_text(config_text(url, port, tmp_path))
        async with running_srd("run", "--config", str(config), port=port) as srd:
            labels = {"chain": "hup-chain", "node": "node-a"}
            await srd.wait_for("srd_chain_best_block", labels, lambda v: v >= 1)

            config.write_text(config_text(url, port, tmp_path) + "  typo_key: 1\n")
            srd.process.send_signal(signal.SIGHUP)
            await srd.wait_for("srd_config_reloads_total", {"result": "error"}, lambda v: v == 1)

            # Still polling on the old config, and still ready.
            before = await srd.metric("srd_chain_best_block", labels)
            assert before is not None
            await srd.wait_for("srd_chain_best_block", labels, lambda v: v > before)
            assert (await srd.get("/readyz"))[0] == 200
            [failure] = srd.logged("config reload failed; the running config stays in force")
            assert "typo_key: unknown key" in str(failure["errors"])
            assert failure["correlation_id"]

            srd.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(srd.process.wait(), timeout=10) == 0


async def test_sighup_with_a_valid_config_swaps_the_probed_targets(tmp_path: Path) -> None:
    old_chain, new_chain = FakeChain(name="old-chain"), FakeChain(name="new-chain")
    service = FakeService()
    port = free_port()
    config = tmp_path / "srd.yaml"
    async with (
        FakeSubstrateNode(old_chain).serve() as old_url,
        FakeSubstrateNode(new_chain).serve() as new_url,
        running(service.app()) as service_server,
    ):
        config.write_text(config_text(old_url, port, tmp_path))
        async with running_srd("run", "--config", str(config), port=port) as srd:
            await srd.wait_for(
                "srd_probe_up", {"probe": "substrate", "target": "node-a"}, lambda v: v == 1
            )
            web = f"{service_server.url}/health"
            config.write_text(
                config_text(new_url, port, tmp_path)
                + f"  http:\n    - {{name: web, url: '{web}', interval: 0.2s, timeout: 0.2s}}\n"
            )
            srd.process.send_signal(signal.SIGHUP)
            await srd.wait_for("srd_config_reloads_total", {"result": "success"}, lambda v: v == 1)
            await srd.wait_for(
                "srd_chain_best_block", {"chain": "new-chain", "node": "node-a"}, lambda v: v == 0
            )
            await srd.wait_for("srd_probe_up", {"probe": "http", "target": "web"}, lambda v: v == 1)
            timestamp = await srd.metric("srd_config_last_reload_success_timestamp_seconds")
            assert timestamp is not None and timestamp > 0


async def test_a_target_going_down_is_exported_and_logged_once_with_its_reason(
    tmp_path: Path,
) -> None:
    service = FakeService()
    port = free_port()
    config = tmp_path / "srd.yaml"
    async with running(service.app()) as service_server:
        config.write_text(
            textwrap.dedent(f"""\
            state_dir: {tmp_path}
            server: {{listen: "127.0.0.1:{port}"}}
            probes:
              http:
                - {{name: web, url: "{service_server.url}/health",
                    interval: 0.1s, timeout: 0.1s}}
            """)
        )
        async with running_srd("run", "--config", str(config), port=port) as srd:
            labels = {"probe": "http", "target": "web"}
            await srd.wait_for("srd_probe_up", labels, lambda v: v == 1)
            service.healthy = False
            await srd.wait_for("srd_probe_up", labels, lambda v: v == 0)
            await asyncio.sleep(0.5)
            [down] = srd.logged("target down")
            assert down["reason"] == "unexpected status 503"
            assert down["correlation_id"]


async def test_srd_run_with_a_bad_config_exits_2_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "srd.yaml"
    config.write_text("mode: armed\nprobes:\n  substrat: []\n")
    process = await asyncio.create_subprocess_exec(
        SRD, "run", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 2
    assert f"{config}:3: probes.substrat: unknown key (did you mean 'substrate'?)" in (
        stderr.decode()
    )


async def test_srd_tells_systemd_it_is_ready_reloading_and_stopping(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    port = free_port()
    config = tmp_path / "srd.yaml"
    config.write_text(f"state_dir: {tmp_path}\nserver: {{listen: '127.0.0.1:{port}'}}\n")

    async def next_message() -> str:
        return (await asyncio.wait_for(loop.sock_recv(listener, 4096), timeout=10)).decode()

    with listener:
        env = {"NOTIFY_SOCKET": str(notify_path)}
        async with running_srd("run", "--config", str(config), port=port, env=env) as srd:
            assert (await next_message()).startswith("READY=1")
            srd.process.send_signal(signal.SIGHUP)
            assert (await next_message()).startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert (await next_message()).startswith("READY=1\nSTATUS=config reloaded")
            srd.process.send_signal(signal.SIGTERM)
            assert await next_message() == "STOPPING=1"
            assert await asyncio.wait_for(srd.process.wait(), timeout=10) == 0
