"""Writing a transaction's events at its commit, so that event ids follow commit order.

Ids from a sequence are not commit order: a transaction can take id 10, another id 11 and
commit first, and a reader that saw 11 would never go back for 10. Here a transaction takes
its ids at the last moment before ``COMMIT``, under a lock that it keeps until the commit is
over (and visible: both servers publish a commit before they release its locks):

* PostgreSQL: ``pg_advisory_xact_lock`` on one key, then the INSERT (ids from the column's
  sequence), in one statement (one round trip): a materialized CTE takes the lock, and the
  rows come out of a join with it, so no row (and no id) is made before the lock is held;
* MySQL/MariaDB: a row lock on ``event_writer_lock`` (``INSERT ... ON DUPLICATE KEY UPDATE``
  takes it, creating the row if need be), then the INSERT (``AUTO_INCREMENT`` ids);
* SQLite: nothing to add; it has one writer at a time, from its first write to its commit.

So a transaction that takes ids after another commits after it, and every id a reader has not
seen yet is larger than the last one it saw. Event-writing commits queue up behind each other
for the length of a commit; other work runs side by side as before.
"""

from __future__ import annotations

import base64
import enum
import functools
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, event, insert, inspect, text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Session

from flowstore.errors import InvalidInputError
from flowstore.events.capture import (
    Change,
    Pending,
    bulk_aware,
    model_options,
    pending,
    recording,
)
from flowstore.models.event import EVENT_WRITER_LOCK, EVENTS
from flowstore.models.types import utcnow
from flowstore.sessions import FlowstoreSession
from flowstore.writes.send import (
    RowMaker,
    bind_processors,
    copy_rows,
    copy_statement,
    copy_takes,
    make_rows,
    process_columns,
    quiet,
    row_maker,
)

__all__ = [
    "LOCK_KEY",
    "event_rows",
    "json_safe",
    "lock_event_log",
    "locked_insert",
    "write_events",
]

#: The PostgreSQL advisory lock key of the event log (``"flowstore"`` in ASCII).
LOCK_KEY = 0x666C6F7773746F72


def json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it: ids and amounts as text, times in ISO 8601."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def _visible(values: dict[str, Any] | None, secret: frozenset[str]) -> dict[str, Any]:
    return {k: json_safe(v) for k, v in (values or {}).items() if k not in secret}


def _event(change: Change) -> tuple[str, dict[str, Any]] | None:
    options = model_options(change.model)
    if not options.events:
        return None
    if change.kind == "created":
        data: dict[str, Any] = {"new": _visible(change.new, options.secret)}
    elif change.kind == "deleted":
        data = {"old": _visible(change.old, options.secret)} if change.old else {}
    else:
        data = {"changed": list(change.changed)}
        if change.old is not None:
            data["old"] = _visible(change.old, options.secret)
        data["new"] = _visible(change.new, options.secret)
    return f"{options.name}.{change.kind}", data


def event_rows(found: Pending) -> list[dict[str, Any]]:
    """The event rows of a transaction's changes and published events, in order."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for change in found.changes:
        made = _event(change)
        if made is not None:
            entity_id = None if change.key is None else str(change.key)
            rows.append(
                {
                    "type": made[0],
                    "entity_id": entity_id,
                    "org_id": change.org_id,
                    "data": made[1],
                    "created_at": now,
                }
            )
    for type_, data, entity_id, org_id in found.published:
        rows.append(
            {
                "type": type_,
                "entity_id": entity_id,
                "org_id": org_id,
                "data": data,
                "created_at": now,
            }
        )
    return rows


def lock_event_log(connection: Connection) -> None:
    """Take the event log's commit-order lock for the rest of ``connection``'s transaction."""
    name = connection.dialect.name
    if name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    elif name in {"mysql", "mariadb"}:
        stmt = mysql.insert(EVENT_WRITER_LOCK).values(id=1)
        connection.execute(stmt.on_duplicate_key_update(id=stmt.inserted.id))


_CHECKED: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _check_table(connection: Connection) -> None:
    """Once per engine: a database without the events table is refused with the remedy."""
    engine = connection.engine
    if _CHECKED.get(engine):
        return
    if not inspect(connection).has_table(EVENTS.name):
        raise InvalidInputError(
            "change events are on but the database has no events table: run `flowstore db "
            "upgrade`, or turn events off (Store(..., events=False), FLOWSTORE_EVENTS=false)"
        )
    _CHECKED[engine] = True


_COLUMNS = ("type", "entity_id", "org_id", "data", "created_at")
_TYPES = tuple(EVENTS.c[name].type for name in _COLUMNS)
_COPY_FROM = 100  # rows from which a COPY beats an executemany (PostgreSQL, psycopg)


@functools.lru_cache(maxsize=256)
def locked_insert(dialect: Dialect, count: int, *, lock: bool = True) -> str:
    """PostgreSQL: the commit-order lock and the INSERT of ``count`` event rows as one
    statement, with positional parameters (the rows' values in ``_COLUMNS`` order). The lock
    is a materialized CTE that the rows are joined with, so it is taken before the first row
    (and its id) is made. ``lock=False`` leaves it out (the test that shows the lock is
    needed)."""
    preparer = dialect.identifier_preparer
    columns = ", ".join(preparer.quote(name) for name in _COLUMNS)
    casts = ", ".join(
        f"CAST(%s AS {EVENTS.c[name].type.compile(dialect=dialect)})" for name in _COLUMNS
    )
    values = ", ".join([f"({casts})"] * count)
    table = preparer.format_table(EVENTS)
    if not lock:
        return f"INSERT INTO {table} ({columns}) SELECT v.* FROM (VALUES {values}) AS v"
    return (
        f"WITH flowstore_event_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({LOCK_KEY})) "
        f"INSERT INTO {table} ({columns}) "
        f"SELECT v.* FROM flowstore_event_lock, (VALUES {values}) AS v"
    )


#: Per dialect: a row of the events table as the driver takes it (``writes.send.row_maker``).
_ROW_MAKERS: weakref.WeakKeyDictionary[Dialect, RowMaker] = weakref.WeakKeyDictionary()


def _one_statement(connection: Connection, rows: list[dict[str, Any]]) -> bool:
    """PostgreSQL with psycopg: the lock and the rows in one statement (:func:`locked_insert`);
    ``False`` (nothing sent) elsewhere, or where Core must render the table (a
    ``schema_translate_map``)."""
    dialect = connection.dialect
    if (
        dialect.name != "postgresql"
        or dialect.driver != "psycopg"
        or connection.get_execution_options().get("schema_translate_map")
    ):
        return False
    make = _ROW_MAKERS.get(dialect)
    if make is None:
        make = _ROW_MAKERS[dialect] = row_maker(_COLUMNS, bind_processors(dialect, _TYPES))
    parameters: list[Any] = []
    for values in make_rows(make, rows):
        parameters.extend(values)
    connection.exec_driver_sql(locked_insert(dialect, len(rows)), tuple(parameters))
    return True


def write_events(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (from :func:`event_rows`) in commit order: see the module's text.
    Many rows on PostgreSQL (``add_many``'s events) go in with one ``COPY``."""
    if not rows:
        return
    _check_table(connection)
    dialect = connection.dialect
    if len(rows) < _COPY_FROM and _one_statement(connection, rows):
        return
    lock_event_log(connection)
    if (
        len(rows) >= _COPY_FROM
        and dialect.name == "postgresql"
        and dialect.driver == "psycopg"
        and copy_takes(dialect, _TYPES)
        and quiet(connection)
    ):
        statement = copy_statement(dialect, EVENTS, _COLUMNS)
        if statement is not None:
            columns: list[Sequence[Any]] = [[row[name] for row in rows] for name in _COLUMNS]
            process_columns(columns, bind_processors(dialect, _TYPES))
            copy_rows(connection, statement, zip(*columns, strict=True))
            return
    connection.execute(insert(EVENTS), rows)


#: Run after the events are written and before ``COMMIT`` (the cache's first phase).
BEFORE_COMMIT: list[Callable[[Session, Pending], None]] = []


@bulk_aware
def _before_commit(session: Session) -> None:
    """Write the transaction's events just before its commit (not a savepoint's)."""
    found = recording(session)
    if found is None or session.get_nested_transaction() is not None:
        return
    if session.new or session.dirty or session.deleted:
        session.flush()  # commit flushes after this listener: record the last changes first
    changes = pending(session)
    if not changes:
        return
    if found.events:
        rows = event_rows(changes)
        if rows:
            write_events(session.connection(), rows)
    for step in BEFORE_COMMIT:
        step(session, changes)


event.listen(FlowstoreSession, "before_commit", _before_commit)
