"""The repositories' statement writes, with the changes they make recorded.

A flush records its own changes (``flowstore.events.capture``); ``add_many``'s bulk insert,
``upsert``, ``update_many`` and ``delete_many`` run statements instead, so these helpers record
what they change when the store records anything (events or a cache):

* ``update_many``/``delete_many`` learn the rows they touch: with ``RETURNING`` where the
  dialect has it for that statement and nothing else is needed; otherwise by reading the
  matching rows first (locked ``FOR UPDATE``) and changing exactly those. An update records
  the ids and the fields it set (their old values too when the rows were read first);
* ``upsert`` reads the row that has the key first, so its event says ``created`` or
  ``updated`` with what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, inspect, select, update
from sqlalchemy.orm import Mapper, Session

from flowstore.events.capture import (
    Change,
    lookup_columns,
    model_options,
    record,
    recording,
    row_change,
)
from flowstore.events.cascades import cascaded_rows, cascading_models

__all__ = [
    "delete_recorded",
    "read_row",
    "record_inserted",
    "record_upsert",
    "update_recorded",
]

_CHUNK = 1000


def record_inserted(session: Session, model: type[Any], entities: Iterable[Any]) -> None:
    """Record the objects the bulk path (``bulk.insert_many``) inserted: no flush saw them."""
    if recording(session) is None:
        return
    record(session, [row_change(model, "created", inspect(e).dict) for e in entities])


def read_row(session: Session, model: type[Any], criteria: Sequence[Any]) -> dict[str, Any] | None:
    """The row matching ``criteria`` by attribute (locked for update), or ``None``; ``None``
    also when the store records nothing (then nobody needs it)."""
    if recording(session) is None:
        return None
    rows = _locked_rows(session, model, criteria)
    return rows[0] if rows else None


def record_upsert(
    session: Session, entity: Any, before: dict[str, Any] | None, inserted: bool | None
) -> None:
    """Record an upsert: ``before`` is the row read first (``None``: there was none)."""
    if recording(session) is None:
        return
    model = type(entity)
    options = model_options(model)
    after = dict(inspect(entity).dict)
    version = after.get(options.version) if options.version else None
    created = before is None if inserted is None else inserted
    if options.version is not None and version is not None:
        created = version == 1
    if created or before is None:
        record(session, [row_change(model, "created", after)])
        return
    mapper: Mapper[Any] = inspect(model)
    skip = {options.version} | {
        prop.key for prop in mapper.column_attrs if prop.columns[0].onupdate is not None
    }
    changed = [
        name
        for name in options.columns
        if name not in skip and name in after and before.get(name) != after[name]
    ]
    if changed:
        old = {name: before.get(name) for name in changed}
        record(session, [row_change(model, "updated", after, old=old, changed=changed)])


def _locked_rows(
    session: Session, model: type[Any], criteria: Sequence[ColumnElement[bool]]
) -> list[dict[str, Any]]:
    mapper: Mapper[Any] = inspect(model)
    columns = [getattr(model, prop.key) for prop in mapper.column_attrs]
    stmt = select(*columns).where(*criteria).with_for_update()
    return [dict(row._mapping) for row in session.execute(stmt)]


def _in_chunks(
    session: Session,
    keys: list[Any],
    make: Callable[[list[Any]], Any],
) -> int:
    total = 0
    for start in range(0, len(keys), _CHUNK):
        result: Any = session.execute(make(keys[start : start + _CHUNK]))
        total += int(getattr(result, "rowcount", 0) or 0)
    return total


def update_recorded(
    session: Session,
    model: type[Any],
    criteria: list[ColumnElement[bool]],
    changes: dict[str, Any],
) -> int | None:
    """``UPDATE model SET changes WHERE criteria`` with its changes recorded; ``None`` when
    the store records nothing (the caller runs the plain statement)."""
    if recording(session) is None:
        return None
    options = model_options(model)
    mapper: Mapper[Any] = inspect(model)
    key = getattr(model, options.key)
    fields = [name for name in changes if name != options.version]
    dialect = session.get_bind().dialect
    statement = update(model).where(*criteria).values(changes)
    if dialect.update_returning and not (set(fields) & lookup_columns(model)):
        columns = [getattr(model, prop.key) for prop in mapper.column_attrs]
        rows = [dict(r._mapping) for r in session.execute(statement.returning(*columns))]
        record(session, [row_change(model, "updated", r, changed=fields) for r in rows])
        return len(rows)
    before = _locked_rows(session, model, criteria)
    keys = [row[options.key] for row in before]
    count = _in_chunks(session, keys, lambda chunk: statement.where(key.in_(chunk)))
    found: list[Change] = []
    for row in before:
        old = {name: row.get(name) for name in fields}
        after = {**row, **{name: changes[name] for name in fields}}
        found.append(row_change(model, "updated", after, old=old, changed=fields))
    record(session, found)
    return count


def delete_recorded(
    session: Session, model: type[Any], criteria: list[ColumnElement[bool]]
) -> int | None:
    """``DELETE FROM model WHERE criteria`` with the deleted rows recorded (and the rows the
    database deletes with them); ``None`` when the store records nothing."""
    if recording(session) is None:
        return None
    options = model_options(model)
    mapper: Mapper[Any] = inspect(model)
    key = getattr(model, options.key)
    statement = delete(model).where(*criteria)
    dialect = session.get_bind().dialect
    if dialect.delete_returning and not cascading_models(model):
        columns = [getattr(model, prop.key) for prop in mapper.column_attrs]
        rows = [dict(r._mapping) for r in session.execute(statement.returning(*columns))]
        record(session, [row_change(model, "deleted", r) for r in rows])
        return len(rows)
    before = _locked_rows(session, model, criteria)
    keys = [row[options.key] for row in before]
    children = [row_change(m, "deleted", v) for m, v in cascaded_rows(session, {model: keys})]
    count = _in_chunks(session, keys, lambda chunk: statement.where(key.in_(chunk)))
    record(session, [*(row_change(model, "deleted", r) for r in before), *children])
    return count
