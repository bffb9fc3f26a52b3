"""How the ``AuditWriter`` stores one batch of audit rows, finds rows already stored, and how
long it keeps trying across an outage.

A batch goes in one transaction: ``COPY`` on PostgreSQL with psycopg; elsewhere one
executemany of ready driver tuples (the columns' own bind processors applied by position, see
``flowstore.writes.send``), or Core's INSERT for a driver that takes only named parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect, Engine, insert, select

from flowstore.audit_entries import COLUMNS, CORE_TABLE, INDEX, TABLE, TWINS, Row
from flowstore.errors import FlowstoreError
from flowstore.writes.send import (
    Processors,
    bind_processors,
    copy_rows,
    copy_statement,
    positional_insert,
    process_columns,
)

__all__ = ["AuditBatches", "OutageBudget"]

_LOOKUP_CHUNK = 500  # ids per query when looking for rows already stored
#: The longest pause between two tries of a failing batch.
MAX_RETRY_PAUSE = 2.0
#: Past the budget of an outage, how often a batch is still tried (the others are given up on
#: without a try, so that ``write()`` is not held back by one attempt per batch).
PROBE_INTERVAL = 1.0


class AuditBatches:
    """Stores batches of audit rows (``entry_row``'s) on ``engine``.

    The driver statement and its bind processors are made once connected: before its first
    connection a MySQL dialect does not know it talks to MariaDB, and the column types it
    resolved then (a ``Uuid`` as text rather than MariaDB's native ``uuid``) would stay so for
    the engine's every statement.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect
        # COPY where psycopg is the driver; elsewhere the driver's executemany, or Core's
        copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        self.copy_sql = copy_statement(dialect, TABLE, COLUMNS) if copy else None
        self._statement: tuple[str, Processors] | None = None
        self._made = copy  # COPY needs no driver statement

    @property
    def statement(self) -> tuple[str, Processors] | None:
        """The driver's INSERT and the columns' bind processors; ``None`` where COPY is used
        or the driver takes named parameters only (Core's INSERT then)."""
        if not self._made:
            with self.engine.connect() as conn:
                self._make(conn.dialect)
        return self._statement

    def _make(self, dialect: Dialect) -> None:
        self._statement = _driver_statement(dialect)
        self._made = True

    def insert(self, rows: Sequence[Row]) -> None:
        """Insert ``rows`` in one transaction (SQLAlchemy's errors, as Core raises them)."""
        with self.engine.begin() as conn:
            if self.copy_sql is not None:
                copy_rows(conn, self.copy_sql, rows)
                return
            if not self._made:
                self._make(conn.dialect)
            statement = self._statement
            if statement is None:  # a dialect with named parameters: Core makes the rows
                conn.execute(
                    insert(CORE_TABLE), [dict(zip(COLUMNS, row, strict=True)) for row in rows]
                )
                return
            sql, processors = statement
            values: list[Sequence[Any]] = list(zip(*rows, strict=True))
            process_columns(values, processors, TWINS)  # entry_row makes them one value
            conn.exec_driver_sql(sql, list(zip(*values, strict=True)))  # one executemany

    def not_stored(self, rows: Sequence[Row]) -> list[Row]:
        """The rows not in the table yet. A row whose id is there with the same creation time
        is this very entry, stored by an earlier attempt (the ids are UUIDv7s the writer made,
        or an entry given back to ``write()`` as it failed); an id there with another time is
        another entry's, which the INSERT refuses."""
        created, key = INDEX["created_at"], INDEX["id"]
        ids = [row[key] for row in rows]
        there: dict[Any, Any] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[start : start + _LOOKUP_CHUNK]
                query = select(TABLE.c.id, TABLE.c.created_at).where(TABLE.c.id.in_(chunk))
                there.update((found, when) for found, when in conn.execute(query))
        return [row for row in rows if there.get(row[key]) != row[created]]


class OutageBudget:
    """How long batches are retried: while the database has been failing for less than
    ``retry_for`` seconds, counted from its first failure since the last batch stored (and at
    most ``retries`` times a batch, when given), ``retry_delay`` apart at first, doubling up
    to ``MAX_RETRY_PAUSE``. Past it, one batch a second is tried, until one is stored. Used
    by the writer's thread alone."""

    def __init__(self, retry_for: float, retries: int | None, retry_delay: float) -> None:
        self.retry_for = retry_for
        self.retries = retries
        self.retry_delay = retry_delay
        self.failing_since: float | None = None
        self.last_try = 0.0
        self.last_error: FlowstoreError | None = None

    def worth_a_try(self, attempt: int) -> bool:
        """Whether to try a batch (its ``attempt``-th retry) now; mark it tried."""
        now = time.monotonic()
        if attempt == 0 and self.over() and now - self.last_try < PROBE_INTERVAL:
            return False
        self.last_try = now
        return True

    def over(self) -> bool:
        since = self.failing_since
        return since is not None and time.monotonic() - since >= self.retry_for

    def stored(self) -> None:
        self.failing_since = None

    def failed(self, error: FlowstoreError, attempt: int) -> float | None:
        """A try failed for a passing reason: how long to pause before the next, or ``None``
        when the batch is to be given up on."""
        self.last_error = error
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        if (self.retries is not None and attempt >= self.retries) or self.over():
            return None
        left = self.retry_for - (time.monotonic() - self.failing_since)
        return max(0.0, min(self.retry_delay * 2.0**attempt, MAX_RETRY_PAUSE, left))

    def not_tried(self) -> FlowstoreError:
        """The error of a batch given up on without a try."""
        since = self.failing_since or time.monotonic()
        return FlowstoreError(
            f"not tried: the database has been failing for {time.monotonic() - since:.0f}s, "
            f"longer than retry_for ({self.retry_for:g}s); last error: {self.last_error}"
        )


def _driver_statement(dialect: Dialect) -> tuple[str, Processors] | None:
    """The INSERT as the driver takes it, with positional parameters in table order, and the
    columns' bind processors; ``None`` for a driver without positional parameters. Handing
    the driver ready tuples spares Core's per-row parameter dicts: the rows are already
    checked and in table order."""
    sql = positional_insert(dialect, TABLE, COLUMNS)
    if sql is None:
        return None
    types = [col.type for col in CORE_TABLE.columns]
    return sql, bind_processors(dialect, types)
