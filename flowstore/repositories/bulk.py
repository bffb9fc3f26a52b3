"""The fast path of ``Repository.add_many``: one executemany INSERT for the whole batch.

An ORM flush spends most of its time on per-object bookkeeping (and, without client-side
primary keys, on RETURNING round trips). For a batch of new objects of one plain model, this
module does what the flush would, in bulk: it fills the column defaults in Python (ids,
timestamps, ``lock_version``), sends one Core ``INSERT`` executemany (which the driver batches:
insertmanyvalues on PostgreSQL, multi-row INSERT on MySQL), and then registers the objects as
persistent exactly as a flush does, so they sit in the identity map, update and delete with
their version checks, and go back to transient if the transaction is rolled back.

Models or batches it cannot handle faithfully (relationships, inheritance, server-side
defaults, SQL expressions as values, flush or insert event listeners, objects that are not
new) are left to the ordinary flush: :func:`insert_many` returns ``False`` before doing
anything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql import ClauseElement

__all__ = ["insert_many"]

_MISSING: Any = object()

# (attribute, bind key, default (None: NULL), whether None means "not set", bit in the masks)
_Column = tuple[str, str, Callable[[], Any] | None, bool, int]


@dataclass(frozen=True)
class _BulkPlan:
    """How the mapped columns of one model get their INSERT values."""

    table: Table
    columns: tuple[_Column, ...]  # every mapped column but the version counter
    version_attribute: str | None
    version_bind_key: str | None
    version_generator: Callable[[Any], Any] | None


def _column_default(column: Any) -> tuple[bool, Callable[[], Any] | None]:
    """``(usable, default)``: whether the column's default can be computed here, and how."""
    if column.server_default is not None or column.computed is not None:
        return False, None
    if column.identity is not None:
        return False, None
    default = column.default
    if default is None:
        return True, None
    if getattr(default, "is_scalar", False):
        value = default.arg
        return True, lambda: value
    if getattr(default, "is_callable", False):
        # SQLAlchemy wraps a default that takes no execution context (and marks the wrapper
        # with __wrapped__); one that reads the context cannot be computed outside a statement.
        function = getattr(default.arg, "__wrapped__", None)
        return (True, function) if callable(function) else (False, None)
    return False, None  # a SQL expression or a sequence: only the database knows the value


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
    version_col = mapper.version_id_col
    columns: list[_Column] = []
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1 or prop.columns[0].table is not table:
            return None
        column = prop.columns[0]
        if column is version_col:
            continue
        usable, default = _column_default(column)
        if not usable:
            return None
        none_is_unset = default is not None and not column.type.should_evaluate_none
        columns.append((prop.key, column.key, default, none_is_unset, 1 << len(columns)))
    if version_col is None:
        return _BulkPlan(table, tuple(columns), None, None, None)
    generator = mapper.version_id_generator
    if not callable(generator):
        return None  # a server-side version counter needs RETURNING
    version_attribute = mapper.get_property_by_column(version_col).key
    return _BulkPlan(table, tuple(columns), version_attribute, version_col.key, generator)


def _events_in_the_way(session: Session, mapper: Mapper[Any]) -> bool:
    """Whether listeners expect a flush (they would not run on the bulk path)."""
    events = session.dispatch
    mapper_events = mapper.dispatch
    return bool(
        events.before_flush
        or events.after_flush
        or events.after_flush_postexec
        or mapper_events.before_insert
        or mapper_events.after_insert
    )


#: Value types known not to be SQL expressions (grows as values are seen).
_PLAIN_TYPES: set[type[Any]] = {str, int, float, bool, type(None), dict, list}


def _is_expression(value: Any) -> bool:
    """Whether ``value`` (of a type not yet in ``_PLAIN_TYPES``) is an SQL expression (the
    database would compute it); a type that is not is added to ``_PLAIN_TYPES``."""
    kind = type(value)
    if issubclass(kind, ClauseElement) or hasattr(kind, "__clause_element__"):
        return True
    _PLAIN_TYPES.add(kind)
    return False


def _fill(plan: _BulkPlan, states: list[Any]) -> tuple[list[dict[str, Any]], list[int]] | None:
    """The INSERT parameters of ``states``, with the missing values filled in on the objects
    too (as a flush does); ``None`` (and the objects untouched) when one needs the flush.

    Which values were filled is kept as one bit per column, so that they can be taken out
    again (:func:`_take_back`) without a container per object for the collector to scan.
    """
    columns = plan.columns
    version_key = plan.version_bind_key
    version = plan.version_generator(None) if plan.version_generator is not None else None
    plain = _PLAIN_TYPES
    rows: list[dict[str, Any]] = []
    filled: list[int] = []
    for state in states:
        values = state.dict
        row: dict[str, Any] = {}
        mask = 0
        for attribute, bind_key, default, none_is_unset, bit in columns:
            value = values.get(attribute, _MISSING)
            if value is _MISSING or (value is None and none_is_unset):
                value = values[attribute] = default() if default is not None else None
                mask |= bit
            elif type(value) not in plain and _is_expression(value):
                filled.append(mask)
                _take_back(plan, states, filled)  # a SQL expression: the database computes it
                return None
            row[bind_key] = value
        if version_key is not None:
            row[version_key] = version
        rows.append(row)
        filled.append(mask)
    return rows, filled


def _take_back(plan: _BulkPlan, states: list[Any], filled: list[int]) -> None:
    """Remove the values :func:`_fill` put on the objects: they are as they were given."""
    for state, mask in zip(states, filled, strict=False):
        if mask:
            for attribute, _key, _default, _unset, bit in plan.columns:
                if mask & bit:
                    state.dict.pop(attribute, None)


def insert_many(session: Session, model: type[Any], entities: Sequence[Any]) -> bool:
    """Insert ``entities`` (new ``model`` objects) in one executemany inside a SAVEPOINT and
    make them persistent in ``session``; ``False`` (nothing done) when the ordinary flush must
    do it. A database error rolls the SAVEPOINT back and leaves the objects untouched."""
    plan = _plan(model)  # type: ignore[arg-type]
    save = getattr(session, "_save_impl", None)
    register = getattr(session, "_register_persistent", None)
    if plan is None or save is None or register is None:
        return False
    if _events_in_the_way(session, sa_inspect(model)):
        return False
    states = list({id(entity): instance_state(entity) for entity in entities}.values())
    if any(state.key is not None or state.session_id is not None for state in states):
        return False  # not new: the flush knows what to do with it
    prepared = _fill(plan, states)
    if prepared is None:
        return False
    rows, filled = prepared
    try:
        session.flush()  # earlier pending work goes first, as before any SAVEPOINT
        connection = session.connection()
        with connection.begin_nested():  # a bare SAVEPOINT: the ORM keeps no snapshot here
            connection.execute(insert(plan.table), rows)
    except BaseException:
        _take_back(plan, states, filled)
        raise
    if plan.version_attribute is not None and plan.version_bind_key is not None:
        for state, row in zip(states, rows, strict=True):
            state.dict[plan.version_attribute] = row[plan.version_bind_key]
    for state in states:
        save(state)
    register(set(states))  # as a flush does: identity map, and expunged again on rollback
    return True
