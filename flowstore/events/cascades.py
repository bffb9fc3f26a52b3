"""Rows the database deletes along with others: ``ON DELETE CASCADE`` foreign keys.

Deleting an organization deletes its applications, users and policies in the database, where
no flush sees them. Their changes (events, cache invalidations) need them read first: these
helpers find, for rows about to be deleted, every row the cascades reach (recursively).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, Table, inspect, select
from sqlalchemy.orm import Mapper, Session

from flowstore.models.base import Base

__all__ = ["cascaded_rows", "cascading_models"]


def _key(model: type[Any]) -> str:
    mapper: Mapper[Any] = inspect(model)
    return mapper.get_property_by_column(mapper.primary_key[0]).key


def cascaded_rows(
    session: Session, keys: dict[type[Any], list[Any]]
) -> Iterator[tuple[type[Any], dict[str, Any]]]:
    """The rows (as column values) that ``ON DELETE CASCADE`` foreign keys would delete with
    the rows of these keys, children before their own children."""
    seen: set[tuple[type[Any], Any]] = set()
    queue = list(keys.items())
    while queue:
        parent, ids = queue.pop(0)
        for child, column, referred in cascading_models(parent):
            table = inspect(child).local_table
            if not _exists(session, table):
                continue  # a model whose table this database has not got: nothing to delete
            parent_table = inspect(parent).local_table
            referred_key = parent_table.c[referred]
            values = ids
            if referred_key is not inspect(parent).primary_key[0]:
                continue  # a cascade on another referred column: rare, not followed
            attributes = [getattr(child, prop.key) for prop in inspect(child).column_attrs]
            link = getattr(child, inspect(child).get_property_by_column(table.c[column]).key)
            for start in range(0, len(values), 500):
                rows = session.execute(
                    select(*attributes).where(link.in_(values[start : start + 500]))
                ).mappings()
                found: list[Any] = []
                for row in rows:
                    record_values = dict(row)
                    ident = record_values[_key(child)]
                    if (child, ident) in seen:
                        continue
                    seen.add((child, ident))
                    found.append(ident)
                    yield child, record_values
                if found:
                    queue.append((child, found))


_EXISTING: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def _exists(session: Session, table: Any) -> bool:
    """Whether the database has ``table`` (models of a service may outrun its migrations);
    known tables are remembered per engine, missing ones asked again."""
    connection = session.connection()
    known = _EXISTING.setdefault(connection.engine, set())
    if table.name in known:
        return True
    if inspect(connection).has_table(table.name, schema=table.schema):
        known.add(table.name)
        return True
    return False


_CASCADES: dict[type[Any], tuple[tuple[type[Any], str, str], ...]] = {}


def cascading_models(parent: type[Any]) -> tuple[tuple[type[Any], str, str], ...]:
    """(child model, its column, the parent's referred column) per ``ON DELETE CASCADE``
    foreign key from a model on ``Base`` to ``parent``'s table."""
    known = _CASCADES.get(parent)
    if known is None:
        known = _CASCADES[parent] = _cascades(parent)
    return known


def _cascades(parent: type[Any]) -> tuple[tuple[type[Any], str, str], ...]:
    parent_table = inspect(parent).local_table
    found = []
    for mapper in Base.registry.mappers:
        table = mapper.local_table
        if not isinstance(table, Table):
            continue
        for fk in table.foreign_keys:
            if fk.column.table is parent_table and (fk.ondelete or "").upper() == "CASCADE":
                found.append((mapper.class_, fk.parent.name, fk.column.name))
    return tuple(found)
