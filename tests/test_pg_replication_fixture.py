"""tests/pg_replication.py builds a real streaming pair: rows reach the standby, which refuses
writes, lags while its replay is paused, comes back after a stop, and is gone afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import Engine, NullPool, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.pg_replication import ReplicationPair, clusters, require_replication


def _eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def _notes(engine: Engine) -> list[str]:
    """The rows of ``t`` on ``engine``'s server; none while the table has not arrived."""
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text("SELECT note FROM t ORDER BY id")))
    except DBAPIError:
        return []


def test_replication_pair() -> None:
    require_replication()
    with ReplicationPair() as pair:
        assert {f"15/{pair.primary.name}", f"15/{pair.replica.name}"} <= set(clusters())
        assert pair.build_seconds > 0
        # NullPool: every check opens a new connection, so the replica's restart leaves no
        # dead pooled connection behind
        primary = create_engine(pair.primary_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        replica = create_engine(pair.replica_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with primary.connect() as conn:
                conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY, note text NOT NULL)"))
                conn.execute(text("INSERT INTO t VALUES (1, 'one')"))
            _eventually(lambda: _notes(replica) == ["one"], "row 1 on the replica")

            with replica.connect() as conn:
                assert conn.scalar(text("SELECT pg_is_in_recovery()")) is True
                with pytest.raises(DBAPIError) as refused:
                    conn.execute(text("INSERT INTO t VALUES (9, 'nine')"))
            assert isinstance(refused.value.orig, psycopg.errors.ReadOnlySqlTransaction)

            # paused: row 2's WAL reaches the replica but is not applied
            pair.pause_replay()
            with primary.connect() as conn:
                conn.execute(text("INSERT INTO t VALUES (2, 'two')"))
                written = conn.scalar(text("SELECT pg_current_wal_lsn()::text"))

            def received() -> bool:
                with replica.connect() as conn:
                    lsn = text("SELECT pg_last_wal_receive_lsn() >= CAST(:lsn AS pg_lsn)")
                    return bool(conn.scalar(lsn, {"lsn": written}))

            _eventually(received, "row 2's WAL received by the replica")
            time.sleep(0.5)
            assert _notes(replica) == ["one"]
            pair.resume_replay()
            _eventually(lambda: _notes(replica) == ["one", "two"], "row 2 after resuming")

            # stopped: no connection; row 3, written meanwhile, arrives after the restart
            pair.stop_replica()
            with pytest.raises(OperationalError), replica.connect():
                pass
            with primary.connect() as conn:
                conn.execute(text("INSERT INTO t VALUES (3, 'three')"))
            pair.start_replica()
            assert _notes(replica)[:2] == ["one", "two"]
            _eventually(lambda: _notes(replica) == ["one", "two", "three"], "row 3 after restart")
            pair.wait_for_replay()
        finally:
            primary.dispose()
            replica.dispose()

    left = set(clusters())
    for cluster in (pair.primary, pair.replica):
        assert f"15/{cluster.name}" not in left
        assert not cluster.conf_dir.exists()
        assert not cluster.data_dir.exists()
    pair.close()  # again: a no-op
