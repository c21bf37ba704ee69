from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from srd import __version__, runtime
from srd.cli import exitcodes, main
from srd.cli.exitcodes import USAGE
from srd.simulate import verdict

SRD = str(Path(sys.executable).with_name("srd"))


def test_check_accepts_a_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "srd.yaml"
    config.write_text("probes:\n  substrate:\n    - {name: n1, url: 'http://127.0.0.1:9944'}\n")
    assert main(["check", "--config", str(config)]) == 0
    assert "ok (mode observe, 1 probe target(s), 0 rule pack(s), 0 SLO(s), 0 runbook(s)" in (
        capsys.readouterr().out
    )


def test_check_of_a_typo_exits_2_naming_file_and_key_path(tmp_path: Path) -> None:
    config = tmp_path / "srd.yaml"
    config.write_text("server:\n  listn: 127.0.0.1:9877\n")
    result = subprocess.run(
        [SRD, "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{config}:2: server.listn: unknown key (did you mean 'listen'?)" in result.stderr


def test_python_m_srd_cli_is_the_srd_command(tmp_path: Path) -> None:
    # Tests and the benchmark spawn srd as a module; it must answer as the console script does.
    config = tmp_path / "srd.yaml"
    config.write_text("server:\n  listn: 127.0.0.1:9877\n")
    runs = [
        subprocess.run(
            [*command, "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for command in ([sys.executable, "-m", "srd.cli"], [SRD])
    ]
    assert [run.returncode for run in runs] == [USAGE, USAGE]
    assert runs[0].stderr == runs[1].stderr != ""


def test_check_reads_the_path_from_srd_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "from-env.yaml"
    config.write_text("mode: dry-run\n")
    monkeypatch.setenv("SRD_CONFIG", str(config))
    assert main(["check"]) == 0
    assert f"{config}: ok (mode dry-run" in capsys.readouterr().out


def test_check_reports_a_secret_file_that_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "srd.yaml"
    config.write_text(
        "probes:\n  http:\n    - name: web\n      url: http://127.0.0.1/\n"
        f"      bearer_token: {{file: {tmp_path}/missing-token}}\n"
    )
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "probes.http[0].bearer_token: cannot read secret file" in err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith(f"srd {__version__} ")


def test_listen_without_sandbox_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--listen", "127.0.0.1:1"]) == 2
    assert "apply to --sandbox only" in capsys.readouterr().err


def test_the_codes_exitcodes_documents_for_the_daemon_and_drills_are_the_ones_returned() -> None:
    # run and simulate return codes defined below the cli (runtime, simulator): the table in
    # srd.cli.exitcodes re-documents them and must not drift.
    documented = " ".join((exitcodes.__doc__ or "").split())
    for code, meaning in (
        (runtime.EXIT_OK, "stopped by SIGTERM/SIGINT"),
        (runtime.EXIT_FAILED, "an essential task failed"),
        (runtime.EXIT_USAGE, "invalid config or options, a journal file that cannot be used"),
        (verdict.EXIT_MET, "every objective met"),
        (verdict.EXIT_INVALID, "invalid drill or options"),
        (verdict.EXIT_BREACHED, "an objective breached"),
        (verdict.EXIT_NOT_RESTORED, "the steady state not restored"),
        (verdict.EXIT_ABORTED, "aborted"),
        (verdict.EXIT_INTERRUPTED, "interrupted (SIGINT)"),
        (verdict.EXIT_PREFLIGHT, "the preflight of a real target failed"),
    ):
        assert f"{code} {meaning}" in documented
