"""The fast path of ``Repository.add_many``: one driver call writes the whole batch.

An ORM flush spends most of its time on per-object bookkeeping (and, without client-side
primary keys, on RETURNING round trips). For a batch of new objects of one plain model, this
module does what the flush would, in bulk: in one pass over the objects it checks their values
(``flowstore.validation.column_checks``, the checks every write makes) and fills the column defaults
in Python (ids, timestamps, ``lock_version``); then it hands the rows to the driver in one call
(``flowstore.driver``: ``COPY`` on PostgreSQL with psycopg, an executemany of a positional
``INSERT`` elsewhere, Core's ``insert()`` for drivers with named parameters only) and
registers the objects as persistent exactly as a flush does, so they sit in the identity map,
update and delete with their version checks, and go back to transient if the transaction is
rolled back.

Models or batches it cannot handle faithfully (relationships, inheritance, server-side
defaults, flush or insert event listeners, objects that are not new) are left to the ordinary
flush: :func:`insert_many` returns ``False`` before doing anything. Generated columns
(``Computed``) are left out of the INSERT and expired on the objects, so they are loaded when
first read, as after a flush.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Connection, Dialect, Table, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state

from flowstore.driver import (
    Processors,
    bind_processors,
    copy_rows,
    copy_statement,
    copy_takes,
    positional_insert,
    process_columns,
    quiet,
    sent_as_values,
)
from flowstore.errors import InvalidInputError
from flowstore.models.mutable_json import tracked
from flowstore.models.types import CopyOf
from flowstore.read_only import READ_ONLY
from flowstore.repositories.changes import record_inserted
from flowstore.sa_compat import CAN_REGISTER_INSERTED, register_inserted
from flowstore.validation import column_checks

__all__ = ["column_default", "insert_many"]

_MISSING: Any = object()

# (attribute, default (None: NULL), the attribute whose value it repeats instead (a CopyOf
#  default), whether None means "not set", bit in the masks, the value check, whether None is
#  accepted)
_Column = tuple[str, Callable[[], Any] | None, str | None, bool, int, Callable[[Any], Any], bool]


@dataclass(frozen=True)
class _BulkPlan:
    """How the mapped columns of one model get their INSERT values."""

    name: str  # the model's
    table: Table
    columns: tuple[_Column, ...]  # every mapped column but the version counter
    version_attribute: str | None
    version_generator: Callable[[Any], Any] | None
    identity_class: type[Any]  # the first member of the objects' identity keys
    primary_key: tuple[str, ...]  # the attributes of the other
    json_attributes: tuple[str, ...]  # whose values must be tracked (flowstore.models.mutable_json)
    given_keys: tuple[str, ...]  # key attributes without a default: every object must set them
    computed: tuple[str, ...]  # attributes of generated columns: the database computes them


def column_default(column: Any) -> tuple[bool, Callable[[], Any] | None, str | None]:
    """``(usable, default, copied)``: whether the column's default can be computed here, and
    how: by calling ``default``, or by repeating the value of the attribute ``copied``."""
    if column.server_default is not None or column.computed is not None:
        return False, None, None
    if column.identity is not None:
        return False, None, None
    default = column.default
    if default is None:
        return True, None, None
    if getattr(default, "is_scalar", False):
        value = default.arg
        return True, lambda: value, None
    if getattr(default, "is_callable", False):
        if isinstance(default.arg, CopyOf):
            return True, default.arg.otherwise, default.arg.key
        # SQLAlchemy wraps a default that takes no execution context (and marks the wrapper
        # with __wrapped__); one that reads the context cannot be computed outside a statement.
        function = getattr(default.arg, "__wrapped__", None)
        return (True, function, None) if callable(function) else (False, None, None)
    return False, None, None  # a SQL expression or a sequence: only the database knows it


@functools.cache
def _plan(model: type[Any]) -> _BulkPlan | None:
    """The bulk plan for ``model``, or ``None`` when its mapping needs the ordinary flush."""
    mapper: Mapper[Any] = sa_inspect(model)
    table = mapper.local_table
    if (
        not isinstance(table, Table)
        or mapper.inherits is not None
        or mapper.polymorphic_on is not None
        or mapper.relationships
        or mapper.persist_selectable is not table
    ):
        return None
    if len(mapper.column_attrs) != len(table.columns):
        return None  # a column no attribute maps: only the flush knows what it gets
    version_col = mapper.version_id_col
    checks = {key: (check, none_ok) for key, check, none_ok, _existing in column_checks(model)}
    found: dict[str, tuple[Any, Callable[[], Any] | None, str | None, bool]] = {}
    computed: list[str] = []
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1 or prop.columns[0].table is not table:
            return None
        column = prop.columns[0]
        if column.key != prop.key:
            return None  # the objects' own dicts are the INSERT parameters: names must agree
        if column is version_col:
            continue
        if column.computed is not None:  # not in the INSERT; loaded when first read, as after
            computed.append(prop.key)  # a flush without eager defaults
            continue
        usable, default, copied = column_default(column)
        if not usable:
            return None
        none_is_unset = default is not None and not column.type.should_evaluate_none
        found[prop.key] = (column, default, copied, none_is_unset)
    # A copy of a column not there, of a copy, or of another type is left to the flush, which
    # fills it in table order and checks the value as this column's.
    for column, _default, copied, _unset in found.values():
        if copied is None:
            continue
        if copied not in found:
            return None
        source, _source_default, source_copied, _source_unset = found[copied]
        if source_copied is not None or not _same_type(column.type, source.type):
            return None
    columns: list[_Column] = []
    # a column that repeats another's value is filled after it
    for key, (_column, default, copied, none_is_unset) in sorted(
        found.items(), key=lambda item: item[1][2] is not None
    ):
        check, none_ok = checks[key]
        bit = 1 << len(columns)
        columns.append((key, default, copied, none_is_unset, bit, check, none_ok))
    identity_class = mapper.identity_key_from_primary_key((None,) * len(mapper.primary_key))[0]
    primary_key = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    json_attributes = tuple(
        key for key, (column, *_rest) in found.items() if isinstance(column.type, JSON)
    )
    given_keys = tuple(
        key for key in primary_key if found[key][1] is None and found[key][2] is None
    )
    if any(key in computed for key in primary_key):
        return None
    identity = (identity_class, primary_key, json_attributes, given_keys, tuple(computed))
    if version_col is None:
        return _BulkPlan(model.__name__, table, tuple(columns), None, None, *identity)
    generator = mapper.version_id_generator
    if not callable(generator):
        return None  # a server-side version counter needs RETURNING
    return _BulkPlan(model.__name__, table, tuple(columns), version_col.key, generator, *identity)


def _same_type(one: Any, other: Any) -> bool:
    """Whether two column types take and convert values alike: one class, made alike."""
    return type(one) is type(other) and repr(one) == repr(other)


def _events_in_the_way(session: Session, mapper: Mapper[Any]) -> bool:
    """Whether listeners expect a flush, or the steps of one (they would not run here).
    flowstore's own change recording is not in the way: ``Repository.add_many`` records the
    batch itself (its listeners carry ``flowstore_bulk_aware``)."""
    events = session.dispatch
    mapper_events = mapper.dispatch
    return any(
        not getattr(listener, "flowstore_bulk_aware", False)
        for listeners in (
            events.before_flush,
            events.after_flush,
            events.after_flush_postexec,
            events.before_attach,
            events.after_attach,
            events.transient_to_pending,
            events.pending_to_persistent,
            mapper_events.before_insert,
            mapper_events.after_insert,
        )
        for listener in listeners
    )


def _fill(plan: _BulkPlan, dicts: list[dict[str, Any]], version: Any) -> list[int]:
    """Make each object's own dict its INSERT parameters: every value checked
    (``InvalidInputError``, and the objects as they were given), the missing ones filled in (as
    a flush does), the version counter set.

    What was filled is kept as one bit per column (the bit after the last column's is the
    version counter's), so that it can be taken out again (:func:`_take_back`) without a
    container per object for the collector to scan.
    """
    columns = plan.columns
    version_attribute = plan.version_attribute
    version_bit = 1 << len(columns)
    filled: list[int] = []
    mask = 0
    try:
        for values in dicts:
            mask = 0
            for attribute, default, copied, none_is_unset, bit, check, none_ok in columns:
                value = values.get(attribute, _MISSING)
                if value is _MISSING or (value is None and none_is_unset):
                    if copied is not None and values[copied] is not None:
                        values[attribute] = values[copied]  # as a CopyOf does
                    else:
                        values[attribute] = default() if default is not None else None
                    mask |= bit
                elif value is None:
                    if not none_ok:
                        raise InvalidInputError(f"{plan.name}.{attribute} is required")
                else:
                    checked = check(value)
                    if checked is not value:  # converted (a UUID string, an enum value)
                        values[attribute] = checked
            if version_attribute is not None:
                if version_attribute not in values:
                    mask |= version_bit
                values[version_attribute] = version
            filled.append(mask)
    except BaseException:
        filled.append(mask)
        _take_back(plan, dicts, filled)
        raise
    return filled


def _take_back(plan: _BulkPlan, dicts: list[dict[str, Any]], filled: list[int]) -> None:
    """Remove the values :func:`_fill` put on the objects: they are as they were given."""
    version_bit = 1 << len(plan.columns)
    for values, mask in zip(dicts, filled, strict=False):
        if mask:
            for attribute, _default, _copied, _unset, bit, _check, _none_ok in plan.columns:
                if mask & bit:
                    values.pop(attribute, None)
            if mask & version_bit and plan.version_attribute is not None:
                values.pop(plan.version_attribute, None)


@dataclass(frozen=True)
class _DriverInsert:
    """The batch as the driver takes it: ``statement`` (a positional ``INSERT``, or ``COPY``),
    the attributes whose values make a row, in order, and their columns' bind processors."""

    statement: str
    copy: bool
    row: Callable[[dict[str, Any]], tuple[Any, ...]]
    processors: Processors
    twins: tuple[tuple[int, int], ...]  # (position, source): see process_columns


#: Per dialect (an engine's), per model: how its batches reach the driver (``None``: Core).
_DRIVER_INSERTS: weakref.WeakKeyDictionary[Dialect, dict[type[Any], _DriverInsert | None]] = (
    weakref.WeakKeyDictionary()
)


def _driver_insert(dialect: Dialect, model: type[Any], plan: _BulkPlan) -> _DriverInsert | None:
    """How ``model``'s batches reach the driver on ``dialect``, worked out once; ``None`` when
    Core's ``insert()`` must write them (see ``flowstore.driver`` for the reasons)."""
    known = _DRIVER_INSERTS.get(dialect)
    if known is None:
        known = _DRIVER_INSERTS[dialect] = {}
    elif model in known:
        return known[model]
    columns = [c for c in plan.table.columns if c.computed is None]
    names = [c.name for c in columns]
    keys = [c.key for c in columns]  # the attributes: _plan made sure they are the same
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
        row: Any = operator.itemgetter(*keys) if len(keys) > 1 else lambda v: (v[keys[0]],)
        # a column whose default repeats another's (of the same type: _plan) is converted with it
        twins = tuple(
            (keys.index(key), keys.index(copied))
            for key, _default, copied, *_ in plan.columns
            if copied is not None
        )
        driver = _DriverInsert(statement, copy, row, bind_processors(dialect, types), twins)
    known[model] = driver
    return driver


def _send(connection: Connection, plan: _BulkPlan, model: type[Any], dicts: list[Any]) -> None:
    """One INSERT of the filled dicts: the driver's own where it has one, else Core's."""
    driver = _driver_insert(connection.dialect, model, plan)
    if (
        driver is None
        or (driver.copy and (len(dicts) == 1 or not quiet(connection)))  # one row: an INSERT
        or connection.get_execution_options().get("schema_translate_map")  # Core renders it
    ):
        # Core takes from each dict the values of the table's columns and no other key
        connection.execute(insert(plan.table), dicts)
        return
    columns: list[Sequence[Any]] = list(zip(*map(driver.row, dicts), strict=True))
    process_columns(columns, driver.processors, driver.twins)
    if driver.copy:
        copy_rows(connection, driver.statement, zip(*columns, strict=True))
    else:
        connection.exec_driver_sql(driver.statement, list(zip(*columns, strict=True)))


def insert_many(
    session: Session, model: type[Any], entities: Sequence[Any], *, guard: str = "savepoint"
) -> bool:
    """Check ``entities`` (new ``model`` objects), write them in one driver call inside a
    SAVEPOINT, make them persistent in ``session`` and record their change events; ``False``
    (nothing done, nothing checked) when the ordinary flush must do it. A bad value
    (``InvalidInputError``) or a database error leaves the objects as they were given and
    writes nothing.

    ``guard="none"`` sends no SAVEPOINT, for a backend that rolls back a failed statement
    alone (``flowstore.repositories.savepoints``)."""
    plan = _plan(model)  # type: ignore[arg-type]
    if plan is None or not CAN_REGISTER_INSERTED or session.info.get(READ_ONLY):
        return False  # (read-only: the flush refuses the objects, flowstore.read_only)
    mapper: Mapper[Any] = sa_inspect(model)
    if _events_in_the_way(session, mapper):
        return False
    states = list({id(entity): instance_state(entity) for entity in entities}.values())
    if any(state.key is not None or state.session_id is not None for state in states):
        return False  # not new: the flush knows what to do with it
    for key in plan.given_keys:  # an autoincrement key: only the database knows it
        if any(state.dict.get(key) is None for state in states):
            return False
    for key in plan.computed:  # a value given for a generated column: the flush says no
        if any(key in state.dict for state in states):
            return False
    version = plan.version_generator(None) if plan.version_generator is not None else None
    dicts = [state.dict for state in states]  # the objects' own: also the INSERT parameters
    filled = _fill(plan, dicts, version)
    try:
        session.flush()  # earlier pending work goes first, as before any SAVEPOINT
        connection = session.connection(bind_arguments={"mapper": mapper})  # the model's bind
        if guard == "none":
            _send(connection, plan, model, dicts)
        else:
            with connection.begin_nested():  # a bare SAVEPOINT: the ORM keeps no snapshot
                _send(connection, plan, model, dicts)
    except BaseException:
        _take_back(plan, dicts, filled)
        raise
    register_inserted(session, plan.identity_class, plan.primary_key, states, dicts)
    if plan.computed:
        for entity in entities:
            session.expire(entity, plan.computed)
    for key in plan.json_attributes:  # a default filled in above is a plain container
        for state, values in zip(states, dicts, strict=True):
            value = values[key]
            if type(value) is dict or type(value) is list:
                values[key] = tracked(value, state, key)
    record_inserted(session, model, entities)  # their change events: no flush saw them
    return True
