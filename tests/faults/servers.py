"""Database servers of the fault suite's own, which its tests may crash, stop and cut off.

* ``PostgresCluster``: a Debian cluster (``pg_createcluster VERSION NAME --port P``), started
  and stopped with ``pg_ctlcluster`` (``stop -m immediate`` is the crash), removed with
  ``pg_dropcluster --stop``.
* ``MariaDBServer``: a ``mariadbd`` on a data directory of its own (``mariadb-install-db``
  into a temporary directory) and a port of its own; ``kill -9`` is the crash.

Both listen on 127.0.0.1 only, on a port nobody else uses, so an iptables rule on that port
touches nothing else; the main servers (5432, 3306) are never touched. Both run with their
durability flushes relaxed (``fsync=off``, ``innodb_flush_log_at_trx_commit=2``): a process
crash still loses nothing committed (the data is in the kernel's page cache), only a machine
crash would, and the suite crashes processes, not machines.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
from sqlalchemy import URL

#: How long a server may take to come up (a guard against a hung start, not a measure).
START_PATIENCE = 90.0


def free_port() -> int:
    """A local TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def _wait_until(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_PATIENCE
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class PostgresCluster:
    """A PostgreSQL cluster of the test's own; ``url`` names its ``flowstore`` database."""

    backend = "postgresql"
    database = "flowstore"

    def __init__(self) -> None:
        self.version = max(os.listdir("/usr/lib/postgresql"), key=int)
        self.name = f"flowstore_faults_{os.getpid()}_{secrets.token_hex(3)}"
        self.port = free_port()
        self.created = False

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database=self.database,
        )

    def create(self) -> None:
        _run(
            "pg_createcluster", self.version, self.name, "--port", str(self.port),
            "--start-conf", "manual",
            "-o", "fsync=off",
            "-o", "max_connections=200",
            "-o", "log_min_messages=fatal",
            "--", "--auth=trust",
        )  # fmt: skip
        self.created = True
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        _run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-qc",
             f'CREATE DATABASE "{self.database}"')  # fmt: skip

    def _ctl(self, *args: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args)

    def start(self) -> None:
        self._ctl("start")
        _wait_until(self.answers, f"PostgreSQL on port {self.port}")

    def crash(self) -> None:
        """Stop at once, as a crash would: no checkpoint, clients cut off mid-call."""
        self._ctl("stop", "-m", "immediate")

    def answers(self) -> bool:
        done = subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0

    def remove(self) -> None:
        if self.created:
            subprocess.run(
                ["pg_dropcluster", self.version, self.name, "--stop"],
                capture_output=True,
                timeout=120,
                check=False,
            )
            self.created = False


class MariaDBServer:
    """A ``mariadbd`` of the test's own; ``url`` names its ``flowstore`` database."""

    backend = "mysql"
    database = "flowstore"

    def __init__(self) -> None:
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="flowstore-faults-mariadb-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> URL:
        return URL.create(
            "mysql+pymysql",
            username="root",
            host="127.0.0.1",
            port=self.port,
            database=self.database,
        )

    def create(self) -> None:
        shutil.chown(self.home, "mysql", "mysql")
        _run(
            "mariadb-install-db", "--no-defaults", f"--datadir={self.home / 'data'}",
            "--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db",
        )  # fmt: skip
        self.start()
        with self._connect(None) as conn, conn.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
            )

    def _connect(self, database: str | None) -> pymysql.Connection[pymysql.cursors.Cursor]:
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database, connect_timeout=2
        )

    def start(self) -> None:
        home = self.home
        log = (home / "mariadbd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "mariadbd", "--no-defaults", f"--datadir={home / 'data'}", "--user=mysql",
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--socket={home / 'mariadbd.sock'}", f"--pid-file={home / 'mariadbd.pid'}",
                "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2",
                "--innodb-buffer-pool-size=64M", "--max-connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        _wait_until(self.answers, f"MariaDB on port {self.port}")

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited: {(self.home / 'mariadbd.log').read_text()}")
        if not _accepts(self.port):
            return False
        try:
            with self._connect(None) as conn:
                conn.ping()
            return True
        except pymysql.MySQLError:
            return False

    def crash(self) -> None:
        """``kill -9``: clients cut off mid-call, InnoDB recovers at the next start."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)
        self.process = None

    def remove(self) -> None:
        self.crash()
        shutil.rmtree(self.home, ignore_errors=True)


Server = PostgresCluster | MariaDBServer
