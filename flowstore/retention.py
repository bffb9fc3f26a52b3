"""Retention of the history tables (``audit_logs``, ``inference_requests``): delete what is
older than a cutoff, and nothing else.

On PostgreSQL a partitioned table (``flowstore.partitions``) loses its whole months first,
by ``DROP TABLE`` of each partition that ends at or before the cutoff: no row is read, no dead
row is left for VACUUM. What is left older than the cutoff (the rows of the month the cutoff
falls in, and every row of an unpartitioned table, on any backend) is deleted in batches of
``batch_size`` rows, one short transaction each, so writers are never held up for long.

The audit log stays append-only for everything else: its triggers refuse every UPDATE and
every DELETE except retention's, which declares its cutoff for its own transaction
(PostgreSQL), its own connection (MySQL/MariaDB), or drops and recreates the DELETE trigger
inside its own write transaction (SQLite); see ``flowstore.models.audit_log``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import Connection, Engine, bindparam, delete, select, text

from flowstore import arguments
from flowstore.errors import InvalidInputError, translating
from flowstore.models.audit_log import (
    RETENTION_SETTING,
    RETENTION_VARIABLE,
    SQLITE_NO_DELETE_TRIGGER,
)
from flowstore.models.types import utcnow
from flowstore.partitions import HISTORY_TABLES, drop_partitions_before, is_partitioned

__all__ = ["DEFAULT_BATCH", "Pruned", "prune_history", "prune_table"]

DEFAULT_BATCH: Final = 5_000
_MYSQL = frozenset({"mysql", "mariadb"})
_LOWEST_ID: Final = uuid.UUID(int=0)
#: The most rows one DELETE takes (one short transaction each).
MAX_BATCH: Final = 100_000


@dataclass(frozen=True)
class Pruned:
    """What retention removed from one table."""

    table: str
    cutoff: datetime
    partitions: tuple[str, ...]  # whole months dropped (PostgreSQL, partitioned tables)
    rows: int  # rows deleted in batches

    def describe(self) -> str:
        months = f"{len(self.partitions)} partition(s) dropped, " if self.partitions else ""
        before = f"{self.cutoff.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return f"{self.table}: {months}{self.rows:,} row(s) deleted, created before {before}"


def prune_history(
    engine: Engine,
    *,
    audit_older_than: timedelta | datetime | None = None,
    inference_older_than: timedelta | datetime | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> list[Pruned]:
    """Delete audit entries and inference records older than the given ages (or times); a
    table whose age is ``None`` is left alone."""
    now = utcnow()
    done = []
    for table, older_than in (
        ("audit_logs", audit_older_than),
        ("inference_requests", inference_older_than),
    ):
        if older_than is not None:
            before = arguments.cutoff(f"{table} older_than", older_than, now)
            done.append(prune_table(engine, table, before, batch_size=batch_size))
    return done


def prune_table(
    engine: Engine, table: str, cutoff: datetime, *, batch_size: int = DEFAULT_BATCH
) -> Pruned:
    """Remove the rows of ``table`` created before ``cutoff``: whole partitions where it is
    partitioned, then bounded batches."""
    cutoff = arguments.aware("cutoff", cutoff)
    batch = arguments.integer("batch_size", batch_size, minimum=1, maximum=MAX_BATCH)
    if table not in HISTORY_TABLES:
        raise InvalidInputError(f"retention covers {', '.join(HISTORY_TABLES)}, not {table!r}")
    dropped: tuple[str, ...] = ()
    with translating():
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                if is_partitioned(conn, table):
                    dropped = tuple(p.name for p in drop_partitions_before(conn, table, cutoff))
        rows, after = 0, _LOWEST_ID
        while True:
            with engine.begin() as conn, _deleting_allowed(conn, table, cutoff):
                deleted, after = _delete_batch(conn, table, cutoff, batch, after)
            rows += deleted
            if deleted < batch:
                break
    return Pruned(table, cutoff, dropped, rows)


def _delete_batch(
    conn: Connection, table: str, cutoff: datetime, batch: int, after: uuid.UUID
) -> tuple[int, uuid.UUID]:
    """Delete up to ``batch`` rows created before ``cutoff``, lowest ids first (ids are
    UUIDv7s, so the old rows are where the primary key's index starts); return how many and
    the id to continue after."""
    model = HISTORY_TABLES[table]
    dialect = conn.dialect.name
    cutoff_param = bindparam("cutoff", cutoff, type_=model.c.created_at.type)
    if dialect == "postgresql":
        # ``id IN (SELECT ...)`` is planned as a scan of the whole table and a hash join,
        # every batch; ``id = ANY(ARRAY(SELECT ...))`` probes the primary key with what the
        # subquery found, and starting after the last batch's ids skips the index entries it
        # left dead. ``created_at`` beside it keeps a partitioned table's DELETE to the
        # partitions before the cutoff.
        found = conn.execute(
            text(
                f"WITH gone AS (DELETE FROM {table} WHERE created_at < :cutoff AND id = ANY(ARRAY("
                f"SELECT id FROM {table} WHERE created_at < :cutoff AND id > :after "
                "ORDER BY id LIMIT :batch)) RETURNING id) "
                "SELECT count(*), CAST(max(CAST(id AS text)) AS uuid) FROM gone"
            ).bindparams(cutoff_param, bindparam("after", after), bindparam("batch", batch))
        ).one()
        return int(found[0]), found[1] or after
    if dialect in _MYSQL:  # in primary-key order, with a LIMIT
        in_order = text(
            f"DELETE FROM {table} WHERE created_at < :cutoff ORDER BY id LIMIT :batch"
        ).bindparams(cutoff_param, bindparam("batch", batch))
        return conn.execute(in_order).rowcount, after
    # SQLite runs the IN list once, then looks each id up
    oldest = select(model.c.id).where(model.c.created_at < cutoff).order_by(model.c.id)
    statement = delete(model).where(model.c.id.in_(oldest.limit(batch).scalar_subquery()))
    return conn.execute(statement).rowcount, after


@contextmanager
def _deleting_allowed(conn: Connection, table: str, cutoff: datetime) -> Iterator[None]:
    """Let this transaction's DELETEs of audit rows older than ``cutoff`` past the
    append-only triggers (other tables have none)."""
    if table != "audit_logs":
        yield
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(
            text("SELECT set_config(:name, :value, true)"),
            {"name": RETENTION_SETTING, "value": cutoff.isoformat()},
        )
        yield
    elif dialect in _MYSQL:
        naive = cutoff.astimezone(UTC).replace(tzinfo=None)  # DATETIME(6) columns hold UTC
        conn.execute(text(f"SET {RETENTION_VARIABLE} = :value"), {"value": naive.isoformat(" ")})
        try:
            yield
        finally:
            conn.execute(text(f"SET {RETENTION_VARIABLE} = NULL"))
    elif dialect == "sqlite" and _has_sqlite_trigger(conn):
        conn.exec_driver_sql("DROP TRIGGER audit_logs_no_delete")
        yield
        conn.exec_driver_sql(SQLITE_NO_DELETE_TRIGGER)
    else:
        yield


def _has_sqlite_trigger(conn: Connection) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_logs_no_delete'"
    ).first()
    return found is not None
