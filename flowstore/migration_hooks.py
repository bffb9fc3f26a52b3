"""Alembic hooks for a service's migrations on flowstore's shared metadata.

A service's models live on ``flowstore.models.Base.metadata`` next to flowstore's tables, so
its autogenerate sees both. These hooks make its revisions about its own tables only, render
flowstore's column types with their import, and give the tables it creates on MySQL/MariaDB
the table options flowstore's own revisions pass (``schema.table_options``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from alembic.operations.ops import (
    DropIndexOp,
    DropTableOp,
    MigrateOperation,
    MigrationScript,
    ModifyTableOps,
    OpContainer,
)
from sqlalchemy import Connection, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import TypeEngine

from flowstore.models import FLOWSTORE_TABLES, Base
from flowstore.schema import include_object_for, table_options

__all__ = [
    "filled_table_options",
    "flowstore_tables",
    "keep_indexes_with_dropped_tables",
    "render_flowstore_type",
    "service_include_name",
    "service_include_object",
]

FLOWSTORE_VERSION_TABLE = "alembic_version"


def _is_flowstore_module(module: str) -> bool:
    return module.partition(".")[0] == "flowstore"


def flowstore_tables() -> frozenset[str]:
    """The tables flowstore's own revisions manage: its models' tables and its version table."""
    return FLOWSTORE_TABLES | {FLOWSTORE_VERSION_TABLE}


def flowstore_include_object(dialect_name: str) -> Callable[..., bool]:
    """An ``include_object`` filter for flowstore's own tree: a service's models share
    ``Base.metadata``, and their tables are its own migrations' concern, not flowstore's."""
    by_dialect = include_object_for(dialect_name)
    services = frozenset(Base.metadata.tables) - FLOWSTORE_TABLES

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in services:
            return False
        return by_dialect(obj, name, type_, reflected, compare_to)

    return include_object


def service_include_name() -> Callable[[str | None, str, Any], bool]:
    """An ``include_name`` filter: flowstore's tables are not even reflected."""
    owned = flowstore_tables()

    def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
        return not (type_ == "table" and name in owned)

    return include_name


def service_include_object(dialect_name: str) -> Callable[..., bool]:
    """An ``include_object`` filter that leaves flowstore's tables (and so their columns,
    indexes and constraints) to flowstore's revisions, and dialect-only indexes to their
    dialect, so autogenerate and ``alembic check`` see the service's own schema only."""
    owned = flowstore_tables()
    by_dialect = include_object_for(dialect_name)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in owned:
            return False
        return by_dialect(obj, name, type_, reflected, compare_to)

    return include_object


def render_flowstore_type(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """A ``render_item`` hook, so that a generated revision imports and runs: flowstore's
    column types (``GUID``, ``UTCDateTime``, ``Money``) are written with their module
    imported, and the JSONB of flowstore's JSON columns as ``postgresql.JSONB()`` whatever
    database autogenerate compared with (elsewhere Alembic writes an unimported ``Text()``)."""
    if type_ != "type" or not isinstance(obj, TypeEngine):
        return False
    module = type(obj).__module__
    if _is_flowstore_module(module):
        autogen_context.imports.add(f"import {module}")
        return f"{module}.{obj!r}"
    if isinstance(obj, postgresql.JSON) and repr(obj) == repr(type(obj)()):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return f"postgresql.{type(obj).__name__}()"
    return False


def _prune_index_drops(container: OpContainer) -> None:
    dropped = {op.table_name for op in container.ops if isinstance(op, DropTableOp)}
    kept: list[MigrateOperation] = []
    for op in container.ops:
        if isinstance(op, ModifyTableOps) and op.table_name in dropped:
            op.ops = [o for o in op.ops if not isinstance(o, DropIndexOp)]
            if not op.ops:
                continue
        elif isinstance(op, DropIndexOp) and op.table_name in dropped:
            continue
        kept.append(op)
    container.ops = kept


def keep_indexes_with_dropped_tables(_context: Any, _revision: Any, directives: Any) -> None:
    """A ``process_revision_directives`` hook: a table that a revision drops takes its indexes
    with it. Autogenerate drops them first, which MySQL/MariaDB refuse for the index a foreign
    key needs (error 1553), so such a generated downgrade would fail there."""
    for script in directives:
        if isinstance(script, MigrationScript):
            for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
                _prune_index_drops(container)


_OPTION_WORDS = ("charset", "character_set", "collat")


def _names_table_options(kwargs: Any) -> bool:
    """Whether a table's dialect keyword arguments already choose a charset or collation."""
    return any(
        key.partition("_")[0] in {"mysql", "mariadb"} and any(w in key for w in _OPTION_WORDS)
        for key in kwargs
    )


@contextmanager
def filled_table_options(connection: Connection) -> Iterator[None]:
    """While the block runs, every ``CREATE TABLE`` on ``connection`` that names no charset or
    collation gets flowstore's table options (on MySQL/MariaDB: utf8mb4, binary no-pad), so a
    service's autogenerated ``op.create_table`` compares strings as flowstore's tables do."""
    options = table_options(connection.dialect)
    if not options:
        yield
        return

    def fill(_conn: Connection, clause: Any, *_rest: Any) -> None:
        if isinstance(clause, CreateTable):
            table = clause.element
            if not _names_table_options(table.dialect_kwargs):
                for key, value in options.items():
                    table.dialect_kwargs[key] = value

    event.listen(connection, "before_execute", fill)
    try:
        yield
    finally:
        event.remove(connection, "before_execute", fill)
