"""Monthly range partitions of the history tables on PostgreSQL (``audit_logs`` and
``inference_requests``): turning a table into a partitioned one with its rows kept, creating
months ahead, and dropping whole months for retention.

A partitioned table is PostgreSQL's own declarative partitioning, ``PARTITION BY RANGE
(created_at)``, one partition per calendar month in UTC named ``<table>_pYYYYMM``. Its primary
key is ``(id, created_at)`` (PostgreSQL requires the partition key in it); the models keep
``id`` as their identity, and ids stay unique because they are UUIDv7s. The indexes and, for the
audit log, the append-only trigger are declared on the parent, so every partition has them,
also the ones created later. There is no default partition: a row whose month has no partition
is refused (``InvalidInputError``, naming ``flowstore db maintain``), never put where retention
or partition pruning would not find it.

Everything here runs in the caller's transaction (PostgreSQL's DDL is transactional), so a
conversion that fails leaves the table as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Connection, Table, inspect, text
from sqlalchemy.schema import CreateIndex

from flowstore.errors import InvalidInputError
from flowstore.models import AuditLog, InferenceRequest
from flowstore.models.audit_log import POSTGRESQL_APPEND_ONLY_TRIGGER

__all__ = [
    "HISTORY_TABLES",
    "Conversion",
    "Partition",
    "drop_partitions_before",
    "ensure_partitions",
    "is_partition_name",
    "is_partitioned",
    "month_start",
    "partition_table",
    "partitioned_tables",
    "partitions_of",
]

#: The tables that can be partitioned by month, and their models' tables.
HISTORY_TABLES: Final[dict[str, Table]] = {
    "audit_logs": AuditLog.__table__,  # type: ignore[dict-item]
    "inference_requests": InferenceRequest.__table__,  # type: ignore[dict-item]
}
_NAME = re.compile(r"^(?P<table>audit_logs|inference_requests)_p(?P<year>\d{4})(?P<month>\d{2})$")
#: ``pg_advisory_xact_lock`` key serialising partition DDL ("fspart" in ASCII).
_LOCK_KEY: Final = 0x667370617274
#: The most months one conversion creates: a row dated centuries away is a mistake to fix
#: first, not a reason to create thousands of tables.
MAX_MONTHS: Final = 1200


@dataclass(frozen=True)
class Partition:
    """One month of a partitioned table: rows with ``start <= created_at < end``."""

    table: str
    name: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Conversion:
    """What :func:`partition_table` did: the rows moved and the partitions made."""

    table: str
    rows: int
    partitions: tuple[str, ...]


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of ``moment``'s month."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    year, month = divmod(start.year * 12 + start.month, 12)  # month 0..11 of the next one
    return datetime(year, month + 1, 1, tzinfo=UTC)


def _months(first: datetime, count: int) -> list[datetime]:
    months = [month_start(first)]
    while len(months) < count:
        months.append(_next_month(months[-1]))
    return months


def _partition(table: str, start: datetime) -> Partition:
    return Partition(table, f"{table}_p{start:%Y%m}", start, _next_month(start))


def is_partition_name(name: str | None) -> bool:
    """Whether ``name`` is one of flowstore's monthly partitions (left out of schema checks:
    the models describe the parent table, not its months)."""
    return name is not None and _NAME.match(name) is not None


def _check_table(table: str) -> Table:
    if table not in HISTORY_TABLES:
        raise InvalidInputError(
            f"only {', '.join(HISTORY_TABLES)} can be partitioned by month, not {table!r}"
        )
    return HISTORY_TABLES[table]


def _require_postgresql(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise InvalidInputError(
            f"partitioned history is PostgreSQL's; this database is {conn.dialect.name}"
        )


def is_partitioned(conn: Connection, table: str) -> bool:
    """Whether ``table`` is a partitioned table in the connection's current schema."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"name": table},
    ).first()
    return found is not None


def partitioned_tables(conn: Connection) -> list[str]:
    """Which of the history tables are partitioned here (none off PostgreSQL)."""
    return [table for table in HISTORY_TABLES if is_partitioned(conn, table)]


def partitions_of(conn: Connection, table: str) -> list[Partition]:
    """The monthly partitions of ``table``, oldest first (partitions not named by flowstore,
    attached by hand, are not listed: their bounds are not flowstore's to assume)."""
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :table AND p.relnamespace = current_schema()::regnamespace"
        ),
        {"table": table},
    ).scalars()
    found = []
    for name in names:
        match = _NAME.match(name)
        if match is not None and match["table"] == table:
            start = datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)
            found.append(_partition(table, start))
    return sorted(found, key=lambda partition: partition.start)


def _lock(conn: Connection) -> None:
    """Serialise partition DDL across processes (two workers creating the same month), to the
    end of the transaction: safe behind a transaction-pooling PgBouncer."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _create(conn: Connection, partition: Partition) -> None:
    conn.exec_driver_sql(
        f'CREATE TABLE IF NOT EXISTS "{partition.name}" PARTITION OF "{partition.table}" '
        f"FOR VALUES FROM ('{partition.start.isoformat()}') TO ('{partition.end.isoformat()}')"
    )


def ensure_partitions(conn: Connection, *, now: datetime, months_ahead: int) -> list[str]:
    """Create the partitions of this month and the ``months_ahead`` after it, for every
    partitioned history table; return the names of those created (none exist elsewhere)."""
    if months_ahead < 0:
        raise InvalidInputError(f"months_ahead must be at least 0, got {months_ahead!r}")
    tables = partitioned_tables(conn)
    if not tables:
        return []
    _lock(conn)
    created = []
    for table in tables:
        have = {partition.name for partition in partitions_of(conn, table)}
        for start in _months(now, months_ahead + 1):
            partition = _partition(table, start)
            if partition.name not in have:
                _create(conn, partition)
                created.append(partition.name)
    return created


def drop_partitions_before(conn: Connection, table: str, cutoff: datetime) -> list[Partition]:
    """Drop the partitions of ``table`` whose every row is older than ``cutoff`` (their month
    ends at or before it); rows of the month ``cutoff`` falls in stay. Returns those dropped."""
    _check_table(table)
    _lock(conn)
    dropped = [p for p in partitions_of(conn, table) if p.end <= cutoff]
    for partition in dropped:
        conn.exec_driver_sql(f'DROP TABLE "{partition.name}"')
    return dropped


def _refuse_unknown_indexes(conn: Connection, model: Table) -> None:
    """The conversion recreates the model's indexes; an index made by hand would be lost."""
    known = {index.name for index in model.indexes}
    extra = sorted(
        str(index["name"])
        for index in inspect(conn).get_indexes(model.name)
        if index["name"] not in known
    )
    if extra:
        raise InvalidInputError(
            f"{model.name} has indexes flowstore's models do not declare ({', '.join(extra)}): "
            "drop them before partitioning and create them again on the partitioned table"
        )


def _row_span(conn: Connection, table: str) -> list[datetime]:
    """The oldest and the newest ``created_at`` of ``table`` (none when it is empty): the
    partitions fill every month between them."""
    row = conn.exec_driver_sql(f'SELECT min(created_at), max(created_at) FROM "{table}"').one()
    return [moment for moment in row if moment is not None]


def _partitions_for(table: str, months: Iterable[datetime]) -> list[Partition]:
    """One partition per month from the first of ``months`` to the last, gaps included (a
    late row of a quiet month must find its partition)."""
    starts = [month_start(month) for month in months]
    first, last = min(starts), max(starts)
    span = (last.year - first.year) * 12 + last.month - first.month + 1
    if span > MAX_MONTHS:
        raise InvalidInputError(
            f"{table}'s rows span {span} months (more than {MAX_MONTHS}): check its "
            "created_at values before partitioning"
        )
    return [_partition(table, start) for start in _months(first, span)]


def partition_table(
    conn: Connection, table: str, *, now: datetime, months_ahead: int
) -> Conversion | None:
    """Turn ``table`` into a table partitioned by month, keeping every row; ``None`` when it
    already is one. The table is locked (ACCESS EXCLUSIVE) while its rows are copied: writers
    wait, readers of it too. Partitions are made for each month holding rows and for this
    month and the ``months_ahead`` after it."""
    _require_postgresql(conn)
    model = _check_table(table)
    if is_partitioned(conn, table):
        return None
    _lock(conn)
    conn.exec_driver_sql(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
    _refuse_unknown_indexes(conn, model)
    old = f"{table}_unpartitioned"
    conn.exec_driver_sql(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    for index in model.indexes:
        conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index.name}"')
    primary = f"pk_{table}"  # the naming convention's name (flowstore.models.base)
    conn.exec_driver_sql(f'ALTER TABLE "{old}" DROP CONSTRAINT IF EXISTS "{primary}"')
    conn.exec_driver_sql(
        f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        "INCLUDING GENERATED INCLUDING COMMENTS INCLUDING STORAGE) PARTITION BY RANGE (created_at)"
    )
    months = [*_row_span(conn, old), *_months(now, months_ahead + 1)]
    made = _partitions_for(table, months)
    for partition in made:
        _create(conn, partition)
    moved = conn.exec_driver_sql(f'INSERT INTO "{table}" SELECT * FROM "{old}"').rowcount
    conn.exec_driver_sql(f'DROP TABLE "{old}"')  # its append-only trigger goes with it
    conn.exec_driver_sql(
        f'ALTER TABLE "{table}" ADD CONSTRAINT "{primary}" PRIMARY KEY (id, created_at)'
    )
    for index in model.indexes:
        conn.execute(CreateIndex(index))
    if table == "audit_logs":
        conn.exec_driver_sql(POSTGRESQL_APPEND_ONLY_TRIGGER)
    conn.exec_driver_sql(f'ANALYZE "{table}"')
    return Conversion(table, moved, tuple(partition.name for partition in made))
