"""A real PostgreSQL 15 streaming-replication pair (two throwaway Debian clusters) for tests.

Replica routing can only be trusted against a real hot standby: one that refuses writes, lags
when its replay is paused and vanishes when stopped. The main cluster (15/main) is never touched.
Needs root and Debian's postgresql-common; ``ReplicationUnavailable`` says so otherwise.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from sqlalchemy import URL

log = logging.getLogger(__name__)

VERSION = "15"
BIN = Path("/usr/lib/postgresql") / VERSION / "bin"
FIRST_PORT = 5442
DATABASE = "flowstore_repl"
#: A guard against a hung step, not a measure: each wait gives up after this many seconds.
PATIENCE = 60.0
#: Held while ports are picked and both clusters created, so parallel runs pick different ports.
LOCK_FILE = Path("/tmp/flowstore-pg-replication.lock")
SOCKET_DIR = Path("/var/run/postgresql")
#: Our clusters' names; one whose pid is no longer alive is a leftover of a killed run.
NAME_PATTERN = re.compile(r"fs_(?:primary|replica)_(\d+)_[0-9a-f]{6}")

#: Both clusters' settings, in conf.d/flowstore-replication.conf (pg_createcluster -o would
#: write 127.0.0.1 unquoted: it takes it for a number).
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "max_replication_slots": "5",
    "fsync": "off",  # test data: speed over durability (synchronous_commit stays on)
    "shared_buffers": "32MB",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "1s",
}
PG_HBA = """\
# written by tests/pg_replication.py: a throwaway test cluster, local connections only
local   all          all                     trust
local   replication  all                     trust
host    all          all          127.0.0.1/32  trust
host    replication  all          127.0.0.1/32  trust
"""


class ReplicationUnavailable(RuntimeError):
    """This machine cannot build a pair: not root, or PostgreSQL 15 / postgresql-common missing."""


class ReplicationError(RuntimeError):
    """A step of building, driving or removing the pair failed."""


def check_environment() -> None:
    """Raise ``ReplicationUnavailable`` unless a pair can be built here."""
    if os.geteuid() != 0:
        raise ReplicationUnavailable("a PostgreSQL replication pair needs root (pg_createcluster)")
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters"):
        if shutil.which(tool) is None:
            raise ReplicationUnavailable(f"{tool} not found: install postgresql-common")
    for tool in ("initdb", "pg_basebackup"):
        if not (BIN / tool).is_file():
            raise ReplicationUnavailable(f"{BIN / tool} not found: install postgresql-{VERSION}")
    if shutil.which("runuser") is None:
        raise ReplicationUnavailable("runuser not found (util-linux)")


def require_replication() -> None:
    """In a test: skip unless a pair can be built here; under ``CI=true`` fail instead."""
    from tests.backends import require

    require(check_environment, ReplicationUnavailable)


def run(args: Sequence[str], what: str, timeout: float = 120.0) -> str:
    """Run a command (check=True); a failure raises ``ReplicationError`` with its stderr."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.CalledProcessError as exc:
        raise ReplicationError(
            f"{what} failed (exit {exc.returncode}): {shlex.join(args)}\n"
            f"stderr: {exc.stderr.strip()}\nstdout: {exc.stdout.strip()}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ReplicationError(f"{what} timed out after {timeout:g} s: {shlex.join(args)}") from exc
    except FileNotFoundError as exc:
        raise ReplicationUnavailable(f"{what}: {args[0]} not found") from exc
    return done.stdout


def clusters() -> dict[str, dict[str, Any]]:
    """Debian's clusters of every version, keyed ``"<version>/<name>"`` (``pg_lsclusters``)."""
    found = json.loads(run(["pg_lsclusters", "--json"], "pg_lsclusters") or "[]")
    return {f"{c['version']}/{c['cluster']}": c for c in found}


def port_is_free(port: int, taken: set[int]) -> bool:
    """Nothing listens on ``port``, no cluster claims it and we may bind it on 127.0.0.1."""
    if port in taken:
        return False
    if any((SOCKET_DIR / f".s.PGSQL.{port}{end}").exists() for end in ("", ".lock")):
        return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False  # somebody answers
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, first: int = FIRST_PORT) -> list[int]:
    """``count`` free ports from ``first`` up, skipping every port a Debian cluster claims."""
    taken = {int(c["port"]) for c in clusters().values() if str(c.get("port", "")).isdigit()}
    ports: list[int] = []
    for port in range(first, 65536):
        if port_is_free(port, taken):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise ReplicationError(f"no {count} free ports from {first} up")


@contextmanager
def port_lock() -> Iterator[None]:
    """Serialize picking ports and creating clusters between concurrent runs."""
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def drop_leftovers() -> list[str]:
    """Drop our clusters whose creating process is gone (a run killed before its cleanup)."""
    names = {str(c["cluster"]) for key, c in clusters().items() if key.startswith(f"{VERSION}/")}
    for root in (Path("/etc/postgresql") / VERSION, Path("/var/lib/postgresql") / VERSION):
        if root.is_dir():
            names.update(entry.name for entry in root.iterdir())
    dropped = []
    for name in sorted(names):
        match = NAME_PATTERN.fullmatch(name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # alive (or its pid reused): not ours to judge
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        Cluster(name, 0).drop()
        dropped.append(f"{VERSION}/{name}")
    if dropped:
        log.warning("dropped leftover replication clusters: %s", ", ".join(dropped))
    return dropped


def wait_until(ready: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll ``ready`` until it is true; give up with ``ReplicationError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            if ready():
                return
        except psycopg.Error as exc:
            last_error = f" (last error: {type(exc).__name__}: {str(exc).strip()})"
        if time.monotonic() > deadline:
            raise ReplicationError(f"gave up after {timeout:g} s waiting for {what}{last_error}")
        time.sleep(0.05)


class Cluster:
    """One Debian cluster ``15/<name>`` of the pair, on 127.0.0.1:``port``."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.data_dir = Path("/var/lib/postgresql") / VERSION / name
        self.conf_dir = Path("/etc/postgresql") / VERSION / name
        self.log_file = Path("/var/log/postgresql") / f"postgresql-{VERSION}-{name}.log"

    def __repr__(self) -> str:
        return f"<Cluster {VERSION}/{self.name} on port {self.port}>"

    def create(self) -> None:
        run(
            [
                "pg_createcluster", VERSION, self.name,
                "--port", str(self.port),
                "--datadir", str(self.data_dir),
                "--start-conf", "manual",
                "--locale", "C.UTF-8",
                "--", "--auth=trust", "--no-sync",
            ],
            f"creating cluster {VERSION}/{self.name}",
        )  # fmt: skip
        (self.conf_dir / "pg_hba.conf").write_text(PG_HBA)  # keeps Debian's owner and mode
        settings = "".join(f"{key} = '{value}'\n" for key, value in SETTINGS.items())
        conf = self.conf_dir / "conf.d" / "flowstore-replication.conf"
        conf.write_text(f"# written by tests/pg_replication.py\n{settings}")
        shutil.chown(conf, "postgres", "postgres")

    def ctl(self, *args: str) -> None:
        run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, self.name, *args],
            f"pg_ctlcluster {args[0]} {VERSION}/{self.name}",
        )

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            connect_timeout=5,
            autocommit=True,
        )

    def query(self, sql: str, dbname: str = "postgres") -> Any:
        """Run ``sql`` in autocommit; the first column of its first row (None if no rows)."""
        with self.connect(dbname) as conn:
            cursor = conn.execute(sql.encode())  # bytes: our own literal SQL, no parameters
            row = cursor.fetchone() if cursor.description is not None else None
        return None if row is None else row[0]

    def accepts(self) -> bool:
        try:
            self.query("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def drop(self) -> None:
        """Stop and drop, and remove what pg_dropcluster leaves; a cluster not there is fine."""
        if f"{VERSION}/{self.name}" in clusters():
            drop = ["pg_dropcluster", VERSION, self.name, "--stop"]
            try:
                run(drop, f"dropping {VERSION}/{self.name}")
            except ReplicationError:
                # a stop that hangs or fails: kill it hard and drop again
                subprocess.run(
                    ["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, self.name, "stop",
                     "-m", "immediate"],
                    capture_output=True, timeout=60, check=False,
                )  # fmt: skip
                run(drop, f"dropping {VERSION}/{self.name}")
        # our conf.d file (so its directories), or a cluster made halfway; named for this run only
        for path in (self.conf_dir, self.data_dir):
            if path.exists():
                shutil.rmtree(path)
        self.log_file.unlink(missing_ok=True)


class ReplicationPair:
    """A primary and its streaming hot standby, two Debian clusters of this run's own.

    ``with ReplicationPair() as pair:`` builds both (8-10 s), ``primary_url`` / ``replica_url``
    name the same database on each, and leaving the block stops and drops both clusters.
    """

    def __init__(self, database: str = DATABASE, first_port: int = FIRST_PORT) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
            raise ValueError(f"database name {database!r}: lowercase letters, digits, _ only")
        suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.database = database
        self.first_port = first_port
        self.slot = f"fs_replica_{suffix}"
        self.primary = Cluster(f"fs_primary_{suffix}", 0)
        self.replica = Cluster(f"fs_replica_{suffix}", 0)
        self.build_seconds = 0.0
        self._built = False

    # -- building -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.build()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def build(self) -> None:
        """Create, start and connect both clusters; on any failure, drop what was made."""
        if self._built:
            raise ReplicationError("this pair is already built")
        check_environment()
        self._built = True
        atexit.register(self.close)
        started = time.monotonic()
        try:
            self._build()
        except BaseException as exc:
            try:
                self.close()
            except Exception as cleanup:
                exc.add_note(f"and cleaning up failed too: {cleanup}")
            raise
        self.build_seconds = time.monotonic() - started
        log.info("replication pair %s built in %.1f s", self, self.build_seconds)

    def _build(self) -> None:
        with port_lock():
            drop_leftovers()
            self.primary.port, self.replica.port = free_ports(2, self.first_port)
            self.primary.create()
            self.replica.create()  # Debian now knows its port and config; never started empty
        primary, replica = self.primary, self.replica
        primary.ctl("start")
        self._wait_accepts(primary)
        primary.query(f'CREATE DATABASE "{self.database}"')

        # the replica's data directory: emptied, then a base backup of the primary
        for entry in replica.data_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        run(
            [
                "runuser", "-u", "postgres", "--",
                str(BIN / "pg_basebackup"),
                "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-w",
                "-D", str(replica.data_dir),
                "-R",  # standby.signal and primary_conninfo
                "-X", "stream",
                "-C", "-S", self.slot,  # a slot: the primary keeps WAL while the replica is down
                "-c", "fast",  # checkpoint now instead of spread over minutes
                "--no-sync",
            ],
            "pg_basebackup of the primary into the replica",
        )  # fmt: skip
        shutil.chown(replica.data_dir, "postgres", "postgres")
        replica.data_dir.chmod(0o700)
        self.start_replica()

    def _wait_accepts(self, cluster: Cluster) -> None:
        try:
            wait_until(cluster.accepts, f"{cluster!r} to accept connections")
        except ReplicationError as exc:
            exc.add_note(f"{cluster.log_file}:\n{cluster.log_tail()}")
            raise

    def _wait_streaming(self) -> None:
        def streaming() -> bool:
            in_recovery = self.replica.query("SELECT pg_is_in_recovery()", self.database)
            senders = self.primary.query(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            return bool(in_recovery) and int(senders) >= 1

        try:
            wait_until(streaming, f"{self.replica!r} to stream from {self.primary!r}")
        except ReplicationError as exc:
            exc.add_note(f"{self.replica.log_file}:\n{self.replica.log_tail()}")
            raise

    # -- what tests use -------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<ReplicationPair {self.primary!r} -> {self.replica!r}>"

    def _url(self, cluster: Cluster) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            host="127.0.0.1",
            port=cluster.port,
            database=self.database,
        )

    @property
    def primary_url(self) -> URL:
        """``postgresql+psycopg://postgres@127.0.0.1:<port>/<database>`` on the primary."""
        return self._url(self.primary)

    @property
    def replica_url(self) -> URL:
        """The same database on the hot standby (read-only)."""
        return self._url(self.replica)

    def stop_replica(self) -> None:
        """Stop the replica (fast: connections are cut); the primary keeps its WAL (a slot)."""
        self.replica.ctl("stop", "-m", "fast")

    def start_replica(self) -> None:
        """Start the replica; return once it accepts connections and streams again."""
        self.replica.ctl("start")
        self._wait_accepts(self.replica)
        self._wait_streaming()

    def pause_replay(self) -> None:
        """Stop applying WAL on the replica (it still receives it), so it lags on purpose."""
        self.replica.query("SELECT pg_wal_replay_pause()", self.database)
        # 'pause requested' already holds the next record back; wait for the confirmation
        wait_until(
            lambda: self.replica.query("SELECT pg_get_wal_replay_pause_state()") == "paused",
            "the replica to pause its replay",
            timeout=10,
        )

    def resume_replay(self) -> None:
        """Apply WAL on the replica again (it then catches up)."""
        self.replica.query("SELECT pg_wal_replay_resume()", self.database)

    def wait_for_replay(self, timeout: float = 10.0) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        target = self.primary.query("SELECT pg_current_wal_lsn()::text")
        wait_until(
            lambda: bool(
                self.replica.query(
                    f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", self.database
                )
            ),
            f"the replica to replay up to {target}",
            timeout=timeout,
        )

    def close(self) -> None:
        """Stop and drop both clusters (replica first); safe to call again."""
        if not self._built:
            return
        errors: list[str] = []
        for cluster in (self.replica, self.primary):
            try:
                cluster.drop()
            except Exception as exc:
                errors.append(str(exc))
        if errors:
            raise ReplicationError("could not drop the pair's clusters:\n" + "\n".join(errors))
        self._built = False
        atexit.unregister(self.close)
