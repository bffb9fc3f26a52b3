"""Rows handed to the DB-API driver directly, for the two bulk writers: ``add_many``'s fast
path (``flowstore.repositories.bulk``) and the ``AuditWriter``.

Their rows are checked and complete before they are sent, so Core's per-row work (a parameter
dict per row, defaults, the positional tuple made from the dict) buys nothing. Here the values
are converted column by column with the columns' own bind processors, the functions Core
applies to them (``TypeEngine.bind_processor`` for the dialect), so a row stored this way reads
back exactly as one stored through Core. Then one driver call takes them all: an executemany
of a positional ``INSERT`` (through ``Connection.exec_driver_sql``, so engine events, logging
and error wrapping are Core's), or ``COPY`` on PostgreSQL with psycopg.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import BindParameter, Connection, Dialect, TableClause, bindparam
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeDecorator, TypeEngine

from flowstore.sa_compat import await_in_greenlet

__all__ = [
    "Processors",
    "bind_processors",
    "copy_rows",
    "copy_statement",
    "copy_takes",
    "positional_insert",
    "process_columns",
    "quiet",
    "sent_as_values",
]

#: The bind processors of a row's columns that have one: ``(position, processor, whether a
#: None is processed too)``; a JSON column's, for one, makes a None JSON ``null``.
Processors = tuple[tuple[int, Callable[[Any], Any], bool], ...]

#: Paramstyles that take a tuple of values by position (pyformat drivers, psycopg and PyMySQL,
#: take ``%s`` too).
_POSITIONAL_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def bind_processors(dialect: Dialect, types: Sequence[TypeEngine[Any]]) -> Processors:
    """What Core applies to the values of columns of ``types``, in order, on ``dialect``."""
    processors = []
    for position, type_ in enumerate(types):
        process = type_.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((position, process, bool(type_.should_evaluate_none)))
    return tuple(processors)


def sent_as_values(dialect: Dialect, types: Sequence[TypeEngine[Any]]) -> bool:
    """Whether values of ``types`` go to the database as plain parameters. A type with a
    ``bind_expression`` (say, wrapping each value in an SQL function) needs Core's statement."""
    parameter: BindParameter[Any] = bindparam("value")
    return all(t.dialect_impl(dialect).bind_expression(parameter) is None for t in types)


#: Types whose processed values psycopg writes into ``COPY`` as the server reads them back
#: for the column (a TypeDecorator counts as its implementation). Others, an ``ARRAY`` or an
#: extension's type, keep Core's INSERT rather than risk a value COPY cannot take.
_COPY_TYPES = (
    sqltypes.String,  # Text, Unicode and Enum too
    sqltypes.Integer,
    sqltypes.Numeric,  # Float too
    sqltypes.Boolean,
    sqltypes.DateTime,
    sqltypes.Date,
    sqltypes.Time,
    sqltypes.Interval,
    sqltypes.Uuid,
    sqltypes.JSON,
    sqltypes.LargeBinary,
)


def copy_takes(dialect: Dialect, types: Sequence[TypeEngine[Any]]) -> bool:
    """Whether ``COPY`` can take values of every one of ``types`` (see ``_COPY_TYPES``)."""
    for type_ in types:
        impl: TypeEngine[Any] = type_.dialect_impl(dialect)
        while isinstance(impl, TypeDecorator):
            impl = impl.impl_instance.dialect_impl(dialect)
        if not isinstance(impl, _COPY_TYPES):
            return False
    return True


def process_columns(
    columns: list[Sequence[Any]], processors: Processors, twins: Sequence[tuple[int, int]] = ()
) -> None:
    """Convert ``columns`` (the rows' values, one sequence per column) in place as Core would.
    A ``None`` is sent as it is (NULL) unless its type evaluates it; a value a processor
    refuses is a ``sqlalchemy.exc.StatementError``, as it is when Core meets it.

    ``twins`` pairs ``(position, source)`` name columns of one type (so one conversion) whose
    values are often the very objects of another column's in the same row (``updated_at``
    repeats ``created_at`` in a new row): such a value is converted once, for ``source``."""
    twin_of = dict(twins)
    given = {source: columns[source] for source in twin_of.values()}
    later = []
    try:
        for processor in processors:
            position, process, none_too = processor
            if position in twin_of:
                later.append(processor)  # its source is converted first
            elif none_too:
                columns[position] = [process(v) for v in columns[position]]
            else:
                columns[position] = [None if v is None else process(v) for v in columns[position]]
        for position, process, none_too in later:
            source = twin_of[position]
            columns[position] = [
                done if v is was else None if v is None and not none_too else process(v)
                for v, was, done in zip(
                    columns[position], given[source], columns[source], strict=True
                )
            ]
    except (TypeError, ValueError, OverflowError) as error:
        message = f"({type(error).__name__}) {error}"
        raise sa_exc.StatementError(message, None, None, error) from error


def positional_insert(dialect: Dialect, table: TableClause, names: Sequence[str]) -> str | None:
    """``INSERT INTO table (names) VALUES (?, ...)`` in the driver's own marks; ``None`` for a
    driver that takes only named parameters. Identifiers are quoted as Core quotes them
    (schema included, and a ``%`` doubled for drivers that take ``%s``)."""
    mark = _POSITIONAL_MARKS.get(dialect.paramstyle)
    if mark is None:
        return None
    preparer = dialect.identifier_preparer
    return (
        f"INSERT INTO {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(n) for n in names)}) "
        f"VALUES ({', '.join([mark] * len(names))})"
    )


def copy_statement(dialect: Dialect, table: TableClause, names: Sequence[str]) -> str | None:
    """``COPY table (names) FROM STDIN``, quoted as Core quotes; ``None`` when a name holds a
    ``%``, which the quoting doubles for parameters that a COPY never takes."""
    if any("%" in name for name in (table.name, table.schema or "", *names)):
        return None
    preparer = dialect.identifier_preparer
    columns = ", ".join(preparer.quote(n) for n in names)
    return f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN"


def copy_rows(connection: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    """``COPY`` ``rows`` in on ``connection``, inside its transaction (psycopg 3; on an async
    engine, awaited from the greenlet its sync code runs in, as SQLAlchemy's own adapters do).

    The driver's errors come out as SQLAlchemy's (``IntegrityError`` and so on), as they do
    from ``Connection.execute``. COPY is not a cursor execution: engine ``*_cursor_execute``
    listeners and ``echo`` do not see it, so callers use it only when there are none.
    """
    dialect = connection.dialect
    dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
    driver: Any = connection.connection.driver_connection
    try:
        if dialect.is_async:
            await_in_greenlet(_copy_async(driver, statement, rows))
        else:
            with driver.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
    except dbapi_error as error:
        raise sa_exc.DBAPIError.instance(
            statement, None, error, dbapi_error, dialect=dialect
        ) from error


async def _copy_async(driver: Any, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)


def quiet(connection: Connection) -> bool:
    """Whether nothing watches or wraps ``connection``'s cursor executions (engine listeners,
    the dialect's ``do_execute*`` hooks, echo): then a ``COPY``, which is not one, hides
    nothing."""
    events = connection.dispatch
    hooks = connection.dialect.dispatch
    return not (
        connection.engine.echo
        or events.before_cursor_execute
        or events.after_cursor_execute
        or hooks.do_execute
        or hooks.do_executemany
    )
