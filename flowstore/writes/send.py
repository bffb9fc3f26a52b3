"""Sending checked, complete rows to the database through the DB-API driver, per dialect:
the last step of the two bulk writers, ``add_many``'s fast path (:func:`send`) and the
``AuditWriter`` (``flowstore.audit_batches``), and of the event log's writer.

Their rows are checked and complete before they are sent, so Core's per-row work (a parameter
dict per row, defaults, the positional tuple made from the dict) buys nothing. Here the values
are converted with the columns' own bind processors, the functions Core applies to them
(``TypeEngine.bind_processor`` for the dialect), so a row stored this way reads back exactly as
one stored through Core: ``add_many``'s rows by a function generated per model that makes each
row's tuple in one go (:func:`row_maker`), the AuditWriter's and the event log's, which are
built column by column, by :func:`process_columns`. Then one driver call takes them all: an
executemany of a positional ``INSERT`` (through ``Connection.exec_driver_sql``, so engine
events, logging and error wrapping are Core's), or ``COPY`` on PostgreSQL with psycopg.
Core's ``insert()`` takes a batch the driver cannot (see :func:`send`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Dialect, TableClause, bindparam, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeDecorator, TypeEngine

from flowstore.sa_compat import await_in_greenlet
from flowstore.writes.plan import Plan

__all__ = [
    "DriverInsert",
    "Processors",
    "bind_processors",
    "copy_rows",
    "copy_statement",
    "copy_takes",
    "core_insert_text",
    "driver_insert",
    "make_rows",
    "positional_insert",
    "process_columns",
    "quiet",
    "row_maker",
    "send",
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


RowMaker = Callable[[dict[str, Any]], tuple[Any, ...]]


def row_maker(
    keys: Sequence[str], processors: Processors, twins: Sequence[tuple[int, int]] = ()
) -> RowMaker:
    """A function from a complete row (a dict keyed by ``keys``) to the tuple the driver
    takes, converted as :func:`process_columns` converts (``None`` sent as it is unless its
    type evaluates it; a twin's value that is its source's very object converted once).

    It is generated once per model as straight-line code, one tuple per row and nothing in
    between: a batch is tens of thousands of rows, and a loop over the columns per row (or
    the rows turned into columns and back) costs more than the conversions themselves. A
    value a processor refuses raises its own error (``TypeError`` and the like): the caller
    turns it into a ``StatementError`` as :func:`process_columns` does."""
    process = {position: (function, none_too) for position, function, none_too in processors}
    twin_of = dict(twins)
    namespace: dict[str, Any] = {}
    body = []
    for position, key in enumerate(keys):
        body.append(f"    x{position} = v[{key!r}]")
        if position not in process:
            body.append(f"    y{position} = x{position}")
            continue
        function, none_too = process[position]
        namespace[f"p{position}"] = function
        converted = f"p{position}(x{position})"
        if not none_too:
            converted = f"None if x{position} is None else {converted}"
        source = twin_of.get(position)
        if source is not None and source < position and source in process:
            converted = f"y{source} if x{position} is x{source} else ({converted})"
        body.append(f"    y{position} = {converted}")
    values = ", ".join(f"y{position}" for position in range(len(keys)))
    source_code = "def make_row(v):\n" + "\n".join(body) + f"\n    return ({values},)\n"
    exec(compile(source_code, "<flowstore.writes.send.row_maker>", "exec"), namespace)  # noqa: S102
    made: RowMaker = namespace["make_row"]
    return made


def make_rows(make: RowMaker, dicts: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``make`` (from :func:`row_maker`) on every one of ``dicts``; a value a processor
    refuses is a ``sqlalchemy.exc.StatementError``, as it is when Core meets it."""
    try:
        return [make(values) for values in dicts]
    except (TypeError, ValueError, OverflowError) as error:
        message = f"({type(error).__name__}) {error}"
        raise sa_exc.StatementError(message, None, None, error) from error


@dataclass(frozen=True)
class DriverInsert:
    """A model's batches as the driver takes them: ``statement`` (a positional ``INSERT``, or
    ``COPY``) and ``make``, which turns a complete row (a dict keyed by attribute) into the
    tuple of converted values the statement takes (:func:`row_maker`). Where ``statement`` is
    a ``COPY``, ``one_row`` is Core's own INSERT of one row, as Core compiles it (its
    parameters named by ``keys``): a COPY for one row costs more than it saves."""

    statement: str
    copy: bool
    make: RowMaker
    keys: tuple[str, ...]
    one_row: str | None = None


def core_insert_text(dialect: Dialect, table: TableClause, keys: Sequence[str]) -> str | None:
    """The text Core sends for an INSERT of one row of ``table`` on ``dialect`` (bind casts
    and all), its parameters named by ``keys``; ``None`` when Core renames a parameter (a key
    with characters a parameter name cannot hold)."""
    compiled: Any = insert(table).compile(dialect=dialect, column_keys=list(keys))
    if compiled.escaped_bind_names or set(compiled.binds) != set(keys):
        return None
    return str(compiled)


#: Per dialect (an engine's), per model: how its batches reach the driver (``None``: Core).
_DRIVER_INSERTS: weakref.WeakKeyDictionary[Dialect, dict[type[Any], DriverInsert | None]] = (
    weakref.WeakKeyDictionary()
)


def driver_insert(dialect: Dialect, model: type[Any], plan: Plan) -> DriverInsert | None:
    """How ``model``'s batches reach the driver on ``dialect``, worked out once; ``None`` when
    Core's ``insert()`` must write them (a driver with named parameters only, a type with a
    ``bind_expression``, a PostgreSQL driver other than psycopg, a type COPY may not take)."""
    known = _DRIVER_INSERTS.get(dialect)
    if known is None:
        known = _DRIVER_INSERTS[dialect] = {}
    elif model in known:
        return known[model]
    columns = [c for c in plan.table.columns if c.computed is None]
    names = [c.name for c in columns]
    keys = [c.key for c in columns]  # the attributes: plan_for made sure they are the same
    types = [c.type for c in columns]
    statement: str | None
    if dialect.name == "postgresql":
        # Core's insertmanyvalues beats an executemany there; COPY beats both (psycopg's)
        copy = dialect.driver == "psycopg" and copy_takes(dialect, types)
        statement = copy_statement(dialect, plan.table, names) if copy else None
    else:
        copy = False
        statement = positional_insert(dialect, plan.table, names)
    driver = None
    if statement is not None and sent_as_values(dialect, types):
        # a column whose default repeats another's (of one type: plan_for) is converted with it
        twins = tuple(
            (keys.index(key), keys.index(copied))
            for key, _default, copied, *_ in plan.columns
            if copied is not None
        )
        make = row_maker(keys, bind_processors(dialect, types), twins)
        one_row = core_insert_text(dialect, plan.table, keys) if copy else None
        driver = DriverInsert(statement, copy, make, tuple(keys), one_row)
    known[model] = driver
    return driver


def send(
    connection: Connection,
    plan: Plan,
    model: type[Any],
    dicts: list[Any],
) -> None:
    """One INSERT of ``dicts`` (complete rows of ``model``, keyed by attribute): the driver's
    own where it has one (a COPY through :func:`copy_rows`; for one row on PostgreSQL, Core's
    INSERT text with the values converted here), else Core's ``insert()``, which also takes a
    connection with a ``schema_translate_map`` (Core renders it) and a batch on one whose
    cursor executions are watched (a COPY is not one: :func:`quiet`)."""
    driver = driver_insert(connection.dialect, model, plan)
    one_row = driver is not None and driver.copy and len(dicts) == 1
    if (
        driver is None
        or connection.get_execution_options().get("schema_translate_map")  # Core renders it
        or (one_row and driver.one_row is None)
        or (driver.copy and not one_row and not quiet(connection))
    ):
        # Core takes from each dict the values of the table's columns and no other key
        connection.execute(insert(plan.table), dicts)
        return
    rows = make_rows(driver.make, dicts)
    if one_row and driver.one_row is not None:
        connection.exec_driver_sql(driver.one_row, dict(zip(driver.keys, rows[0], strict=True)))
    elif driver.copy:
        copy_rows(connection, driver.statement, rows)
    else:
        connection.exec_driver_sql(driver.statement, rows)
