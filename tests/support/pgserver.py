"""A real, throwaway PostgreSQL server for tests: initdb into a temporary directory, started
on a free loopback port with its unix socket beside its data, stopped and removed at the end.

Debian's ``postgresql`` package (``make test`` installs it) keeps ``initdb`` and ``pg_ctl`` in
``/usr/lib/postgresql/<version>/bin``; PATH is tried first. PostgreSQL refuses to run as root,
so as root (CI) the server runs as ``nobody`` through ``runuser``. No PostgreSQL is an error,
never a skip: these tests must run.

Use ``PgServer.running()`` for a server of one's own, or the ``pg_server`` / ``pg_database``
fixtures (tests/conftest.py): one server per session, a fresh database per test.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.support.daemon import free_port

SUPERUSER = "postgres"
USER = "srd"
PASSWORD = "srd-test-secret-5f1c"
"""The password of ``USER``: tests check that it never shows in an error or a log."""
START_TIMEOUT = 60


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl; an error saying how to get them if none."""
    on_path = shutil.which("initdb")
    if on_path is not None and shutil.which("pg_ctl") is not None:
        return Path(on_path).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    raise RuntimeError(
        "PostgreSQL not found (initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
        "install the Debian package `postgresql` (`make system-deps` does)"
    )


@dataclass
class PgDatabase:
    """A fresh database owned by ``USER``, who logs in over TCP with ``PASSWORD``."""

    url: str
    """``postgresql://srd@127.0.0.1:PORT/NAME``: no password in it, as srd wants it."""
    password: str
    name: str


class PgServer:
    def __init__(self, bin_dir: Path, root: Path, run_as: list[str]) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root
        self.port = free_port()
        self._run_as = run_as
        self._names = itertools.count(1)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[PgServer]:
        """initdb, start, yield the server; stop it and delete everything at the end."""
        bin_dir = find_bin_dir()
        root = Path(tempfile.mkdtemp(prefix="srd-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(root, nobody.pw_uid, nobody.pw_gid)
            run_as = ["runuser", "-u", "nobody", "--"]
        server = cls(bin_dir, root, run_as)
        try:
            server._initdb()
            server.start()
            try:
                server._admin(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
                yield server
            finally:
                server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _run(self, *args: str) -> None:
        command = [*self._run_as, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False, cwd="/"
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{tail}")

    def _initdb(self) -> None:
        pwfile = self.root / "superuser-password"
        pwfile.write_text("unused-superuser-password\n")
        if self._run_as:
            shutil.chown(pwfile, "nobody")
        self._run(
            "initdb", "-D", str(self.data), "--username", SUPERUSER, "--pwfile", str(pwfile),
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.socket_dir} -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", str(START_TIMEOUT), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown: open connections are closed, as a server restart does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _admin(self, sql: str) -> None:
        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname="postgres",
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(sql)

    def create_database(self) -> PgDatabase:
        """A new empty database owned by ``USER``."""
        name = f"srd_test_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} OWNER {USER}")
        return PgDatabase(f"postgresql://{USER}@127.0.0.1:{self.port}/{name}", PASSWORD, name)

    def connect(self, database: PgDatabase) -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser connection to ``database`` over the socket, for looking behind srd."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=database.name,
            autocommit=True,
        )  # fmt: skip
