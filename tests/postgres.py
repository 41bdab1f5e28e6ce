"""A real PostgreSQL server for the tests (not a test module): Debian's ``initdb`` / ``pg_ctl`` start one
on a free loopback port in a temporary folder, trust authentication, one database per test.

``AMLFLOW_TEST_DATABASE_URL`` (``postgresql://user:pass@host:port/postgres``) points the tests at a
server of your own instead. When run as root (CI containers), the server runs as the ``postgres`` user,
since PostgreSQL refuses to run as root. No binaries and no URL: the PostgreSQL tests fail with a line
saying so — they are part of CI, not optional.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PostgresServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The folder holding ``pg_ctl`` (PATH, ``pg_config --bindir``, then /usr/lib/postgresql/*/bin)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.external = os.environ.get("AMLFLOW_TEST_DATABASE_URL")
        self.folder: Path | None = None
        self.port = 0
        self._as: list[str] = []

    def start(self) -> PostgresServer:
        if self.external:
            return self
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL tests need Debian's postgresql package (initdb, pg_ctl) or "
                "AMLFLOW_TEST_DATABASE_URL; `apt-get install postgresql` (.ci/run does)"
            )
        self.folder = Path(tempfile.mkdtemp(prefix="amlflow-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.folder / "data"
        self.port = _free_port()
        self._run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(self.folder / "log"),
                "-w",
                "start",
            ]
        )
        self.bindir = bindir
        return self

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr or result.stdout}")

    @property
    def admin_url(self) -> str:
        return self.external or f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh, empty database on the server; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def stop(self) -> None:
        if self.external or self.folder is None:
            return
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"])
        for _ in range(50):
            try:
                shutil.rmtree(self.folder)
                return
            except OSError:
                time.sleep(0.1)
