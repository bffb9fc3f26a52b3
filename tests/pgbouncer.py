"""A PgBouncer of the test run's own, in transaction pooling mode, in front of the main
PostgreSQL server: Debian's ``pgbouncer`` on a free port, its files in a temporary folder,
stopped and removed afterwards (the main server's configuration is never touched).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import URL, make_url

from tests.faults.servers import free_port

__all__ = [
    "DROP_HIDDEN",
    "PgBouncer",
    "PgBouncerUnavailable",
    "behind_pgbouncer",
    "check_pgbouncer",
    "direct",
    "require_pgbouncer",
    "skip_behind_pgbouncer",
]

BINARY = "/usr/sbin/pgbouncer"
#: Set by ``main`` for the command it runs: the PostgreSQL server the PgBouncer is in front of.
UPSTREAM_ENV = "FLOWSTORE_TEST_PGBOUNCER_UPSTREAM"
#: Why a test of a connection the server drops cannot run behind a transaction pooler.
DROP_HIDDEN = (
    "the server drops its connection to PgBouncer, which gives the next transaction another "
    "one: the client's connection never drops"
)


class PgBouncerUnavailable(RuntimeError):
    """PgBouncer cannot run here (not installed, or not root to run it as ``postgres``)."""


def check_pgbouncer() -> None:
    """Raise ``PgBouncerUnavailable`` unless a PgBouncer can be started here."""
    if not Path(BINARY).is_file():
        raise PgBouncerUnavailable("pgbouncer not installed (apt-get install -y pgbouncer)")
    if os.geteuid() != 0:
        raise PgBouncerUnavailable("starting pgbouncer as the postgres user needs root")


def require_pgbouncer() -> None:
    """In a test: skip unless PgBouncer can run here; under ``CI=true`` fail instead."""
    from tests.backends import require

    require(check_pgbouncer, PgBouncerUnavailable)


def behind_pgbouncer() -> bool:
    """Whether the suite's PostgreSQL is reached through ``python -m tests.pgbouncer``'s."""
    return bool(os.environ.get(UPSTREAM_ENV))


def direct(url: URL) -> URL:
    """``url``'s database on the PostgreSQL server itself, past the suite's PgBouncer (when
    there is one): for what a transaction pooler cannot carry, such as a LISTEN."""
    upstream = os.environ.get(UPSTREAM_ENV)
    if not upstream:
        return url
    server = make_url(upstream)
    return url.set(host=server.host, port=server.port)


def skip_behind_pgbouncer(backend: str, why: str) -> None:
    """In a test on ``backend``: skip it, for ``why``, when that is PostgreSQL through the
    suite's PgBouncer (what it checks does not exist behind a transaction pooler)."""
    import pytest

    __tracebackhide__ = True  # the skip is reported at the test's line, not this one
    if backend == "postgresql" and behind_pgbouncer():
        pytest.skip(f"behind PgBouncer in transaction pooling: {why}")


class PgBouncer:
    """``with PgBouncer(upstream) as bouncer:`` runs one in front of ``upstream`` (a
    PostgreSQL URL: its host and port); ``bouncer.url(database)`` is the way through it."""

    def __init__(self, upstream: str | URL, *, pool_size: int = 4, pool_mode: str = "transaction"):
        self.upstream = make_url(upstream)
        self.pool_size = pool_size
        self.pool_mode = pool_mode
        self.port = 0
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        check_pgbouncer()
        self.folder = Path(tempfile.mkdtemp(prefix="flowstore-pgbouncer-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.port = free_port()
        (self.folder / "userlist.txt").write_text('"postgres" ""\n')
        config = self.folder / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={self.upstream.host or '127.0.0.1'} port={self.upstream.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.folder / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 1000\n"
        )
        for path in self.folder.iterdir():
            shutil.chown(path, "postgres", "postgres")
        # PgBouncer logs every connection to stderr: a pipe nobody reads fills up after a few
        # hundred tests and stops it mid-run, so its stderr is the log file
        log = self.folder / "pgbouncer.log"
        with log.open("wb") as sink:
            self._process = subprocess.Popen(
                [BINARY, str(config)],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                user="postgres",  # it refuses to run as root
                group="postgres",
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    error = log.read_text(errors="replace")
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"pgbouncer did not start: {error}") from None
                time.sleep(0.05)

    def url(self, database: str) -> URL:
        """``database`` of the upstream server, through this PgBouncer."""
        return self.upstream.set(host="127.0.0.1", port=self.port, database=database)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def main(argv: list[str]) -> int:
    """``python -m tests.pgbouncer COMMAND...``: run COMMAND with the suite's PostgreSQL behind
    a PgBouncer in transaction pooling (``FLOWSTORE_TEST_POSTGRES_URL`` through it, and
    ``FLOWSTORE_PREPARED_STATEMENTS=false``, and the server itself in ``UPSTREAM_ENV``); its
    exit code."""
    from tests.backends import ADMIN_URLS

    admin = make_url(ADMIN_URLS["postgresql"])
    with PgBouncer(admin, pool_size=8) as bouncer:
        env = dict(os.environ)
        through = bouncer.url(str(admin.database)).render_as_string(hide_password=False)
        env["FLOWSTORE_TEST_POSTGRES_URL"] = through
        env["FLOWSTORE_PREPARED_STATEMENTS"] = "false"
        env[UPSTREAM_ENV] = admin.render_as_string(hide_password=False)
        print(f"PostgreSQL through PgBouncer (transaction pooling) at {through}", flush=True)
        return subprocess.run(argv, env=env, check=False).returncode


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
