"""Compare the models with the database: what ``flowstore db check`` gates a deployment on.

Alembic's autogenerate comparison, over flowstore's models and, given a service's migrations,
the service's models too (its env.py names the module, imported for the comparison), with
one readable line per difference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Dialect, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.types import TypeEngine

from flowstore.errors import mask_secrets
from flowstore.models import FLOWSTORE_TABLES, Base
from flowstore.schema import include_object_for
from flowstore.service_migrations import MigrationsDir, ServiceTree

__all__ = ["SchemaComparison", "compare_schema", "compare_schema_on", "describe_difference"]

_FLOWSTORE_VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class SchemaComparison:
    """The differences between the models and the database (none: they match), and what
    autogenerate said it could not compare (expression indexes, for instance)."""

    differences: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def matches(self) -> bool:
        """The database's schema is what the models describe."""
        return not self.differences


def _include(dialect_name: str, left_out: frozenset[str]) -> Callable[..., bool]:
    """Leave out the tables ``left_out`` (version tables, a service's without its migrations)
    and objects made only on other databases."""
    by_dialect = include_object_for(dialect_name)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in left_out:
            return False
        return by_dialect(obj, name, type_, reflected, compare_to)

    return include_object


def compare_schema_on(
    connection: Connection, *, migrations: MigrationsDir | None = None
) -> SchemaComparison:
    """``compare_schema`` through ``connection``."""
    left_out = {_FLOWSTORE_VERSION_TABLE}
    if migrations is not None:
        declared, _ = ServiceTree(migrations).read_on(connection)  # imports its models
        left_out.add(declared.version_table)
    else:  # a service's models imported in this process are not checked without its tree
        left_out |= set(Base.metadata.tables) - FLOWSTORE_TABLES
    dialect = connection.dialect
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": _include(dialect.name, frozenset(left_out)),
            },
        )
        diffs = _flatten(compare_metadata(context, Base.metadata))
    return SchemaComparison(
        differences=tuple(describe_difference(d, dialect) for d in diffs),
        notes=tuple(" ".join(str(w.message).split()) for w in caught),
    )


def compare_schema(engine: Engine, *, migrations: MigrationsDir | None = None) -> SchemaComparison:
    """Compare flowstore's models (and, with ``migrations``, the service's) with the database."""
    with engine.connect() as conn:
        return compare_schema_on(conn, migrations=migrations)


def _flatten(diffs: Sequence[Any]) -> list[tuple[Any, ...]]:
    """compare_metadata nests column modifications in lists; give one tuple per difference."""
    flat: list[tuple[Any, ...]] = []
    for diff in diffs:
        if isinstance(diff, list):
            flat.extend(diff)
        else:
            flat.append(diff)
    return flat


def _type_name(value: Any, dialect: Dialect) -> str:
    """A column type (or default) as the database would spell it."""
    if isinstance(value, TypeEngine):
        try:
            return str(value.compile(dialect=dialect))
        except sa_exc.SQLAlchemyError:
            return repr(value)
    return repr(value)


def describe_difference(diff: tuple[Any, ...], dialect: Dialect) -> str:
    """One readable line for one Alembic autogenerate difference."""
    kind = diff[0]
    if kind == "add_table":
        return f"table {diff[1].name}: in the models, missing from the database"
    if kind == "remove_table":
        return f"table {diff[1].name}: in the database, not in the models"
    if kind == "add_column":
        return f"column {diff[2]}.{diff[3].name}: in the models, missing from the database"
    if kind == "remove_column":
        return f"column {diff[2]}.{diff[3].name}: in the database, not in the models"
    if kind in {"add_index", "remove_index", "add_constraint", "remove_constraint"}:
        item = diff[1]
        where = "in the models, missing from the database"
        if kind.startswith("remove"):
            where = "in the database, not in the models"
        noun = "index" if kind.endswith("index") else "constraint"
        return f"{noun} {item.name} on {item.table.name}: {where}"
    if kind in {"add_fk", "remove_fk"}:
        fk = diff[1]
        where = "missing from the database" if kind == "add_fk" else "not in the models"
        columns = ", ".join(c.name for c in fk.columns)
        return f"foreign key {fk.name} on {fk.parent.name}({columns}): {where}"
    if kind.startswith("modify_"):
        _, _schema, table_name, column, _existing, old, new = diff
        what = kind.removeprefix("modify_").replace("_", " ")
        return (
            f"column {table_name}.{column} {what}: database has {_type_name(old, dialect)}, "
            f"the models say {_type_name(new, dialect)}"
        )
    return mask_secrets(repr(diff))
