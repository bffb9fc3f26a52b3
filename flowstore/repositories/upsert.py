"""The statements behind ``Repository.upsert`` and ``update_many``.

An upsert is one statement where the dialect has one: ``INSERT ... ON CONFLICT (key) DO
UPDATE`` on PostgreSQL and SQLite, ``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB.
The conflict update sets the fields the entity sets (not those it leaves to their defaults, and
never its key, creation time or version),
bumps the version counter and applies ``onupdate`` defaults (``updated_at``), which
SQLAlchemy does not apply to such an UPDATE by itself. In a tenant-scoped unit of work the
update applies only to a row of the scope's organization: a conflicting row of another one is
left as it is (and the repository reports the key as taken).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, ColumnElement, Index, Table, UniqueConstraint, case, inspect
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Mapper, Session

from flowstore.errors import InvalidInputError, TenantScopeError
from flowstore.models.base import tenant_column
from flowstore.validation import check_json, coerce_value, column_for
from flowstore.writes.plan import column_default

__all__ = ["TENANT_CHECKED", "changes_for", "upsert_statement"]

#: Execution option naming the organization a repository checked a write for; the tenant
#: scope lets an INSERT it cannot inspect through only with its own organization here.
TENANT_CHECKED = "flowstore_tenant_checked"


def changes_for(model: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (field -> value) checked for an UPDATE of ``model`` by statement, plus the
    version bump an update of each entity would make."""
    mapper: Mapper[Any] = inspect(model)
    version = mapper.version_id_col
    keys = {mapper.get_property_by_column(c).key for c in mapper.primary_key}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        attribute = column_for(model, name)
        column = attribute.property.columns[0]
        if name in keys or column is version:
            raise InvalidInputError(f"{model.__name__}.{name} cannot be set by update_many")
        if value is None and not column.nullable:
            raise InvalidInputError(f"{model.__name__}.{name} is required")
        if isinstance(column.type, JSON):
            check_json(name, value)
            changes[name] = value
        else:
            changes[name] = coerce_value(attribute, name, value)
    if version is not None:
        changes[mapper.get_property_by_column(version).key] = version + 1
    return changes


def _key_columns(model: type[Any], on: str | Sequence[str] | None) -> list[Any]:
    """The columns of the unique key ``on`` names (default: the primary key)."""
    mapper: Mapper[Any] = inspect(model)
    if on is None:
        return list(mapper.primary_key)
    names = [on] if isinstance(on, str) else list(on)
    if not names or not all(isinstance(name, str) for name in names):
        raise InvalidInputError("on takes a field name or a list of them")
    columns = [column_for(model, name).property.columns[0] for name in names]
    table = mapper.local_table
    wanted = {column.name for column in columns}
    if not isinstance(table, Table) or not _is_unique_key(table, wanted):
        raise InvalidInputError(
            f"upsert on {sorted(names)} needs a unique key of {model.__name__} of exactly "
            "those fields"
        )
    return columns


def _is_unique_key(table: Table, names: set[str]) -> bool:
    if {c.name for c in table.primary_key.columns} == names:
        return True
    for constraint in table.constraints:
        if (
            isinstance(constraint, UniqueConstraint)
            and {c.name for c in constraint.columns} == names
        ):
            return True
    for index in table.indexes:
        if isinstance(index, Index) and index.unique and {c.name for c in index.columns} == names:
            return True
    return len(names) == 1 and any(c.unique and c.name in names for c in table.columns)


def upsert_statement(
    session: Session, entity: Any, on: str | Sequence[str] | None, org_id: uuid.UUID | None
) -> tuple[Any, list[ColumnElement[bool]]]:
    """The upsert of ``entity`` (values already checked) for ``session``'s dialect, and the
    criteria that find the stored row afterwards."""
    model = type(entity)
    mapper: Mapper[Any] = inspect(model)
    table = mapper.local_table
    if not isinstance(table, Table):
        raise InvalidInputError(f"{model.__name__} cannot be upserted")
    key_columns = _key_columns(model, on)
    state = inspect(entity)
    version = mapper.version_id_col
    values: dict[str, Any] = {}
    given: set[str] = set()  # the columns the entity sets: an update writes only these
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if column is version:
            continue
        value = state.dict.get(prop.key)
        if value is None:
            usable, default, copied = column_default(column)
            if copied is not None:
                value = values.get(copied)
            elif usable and default is not None:
                value = default()
        if prop.key in state.dict:
            given.add(column.name)
        if value is not None or prop.key in state.dict:
            values[column.name] = value
    if version is not None:
        values[version.name] = 1
    tenant = tenant_column(mapper)
    if org_id is not None and tenant is not None:
        tenant_name = mapper.attrs[tenant].columns[0].name
        if values.get(tenant_name) is None:
            values[tenant_name] = org_id
        elif values[tenant_name] != org_id:
            raise TenantScopeError(
                f"tenant-scoped unit of work: this {model.__name__} belongs to another organization"
            )
    for column in key_columns:
        if values.get(column.name) is None:
            raise InvalidInputError(f"upsert needs {model.__name__}.{column.key} to be set")
    lookup = [
        getattr(model, mapper.get_property_by_column(c).key) == values[c.name] for c in key_columns
    ]
    keep = {c.name for c in key_columns} | {c.name for c in table.primary_key.columns}
    keep |= {"created_at"} | ({version.name} if version is not None else set())
    changed = {name: None for name in values if name in given and name not in keep}
    guard = None
    if org_id is not None and tenant is not None:
        guard = table.c[mapper.attrs[tenant].columns[0].name] == org_id
    statement = _dialect_upsert(session, table, values, key_columns, changed, version, guard)
    return statement.execution_options(**{TENANT_CHECKED: org_id}), lookup


def _dialect_upsert(
    session: Session,
    table: Table,
    values: dict[str, Any],
    key_columns: list[Any],
    changed: dict[str, None],
    version: Any,
    guard: ColumnElement[bool] | None,
) -> Any:
    name = session.get_bind().dialect.name
    extra: dict[str, Any] = {}
    if version is not None:
        extra[version.name] = table.c[version.name] + 1
    for column in table.columns:
        update_default: Any = column.onupdate
        if column.name in changed or update_default is None:
            continue
        if getattr(update_default, "is_callable", False):
            function = getattr(update_default.arg, "__wrapped__", None)
            if callable(function):
                extra[column.name] = function()
        elif getattr(update_default, "is_scalar", False):
            extra[column.name] = update_default.arg
    if name in {"mysql", "mariadb"}:
        stmt: Any = mysql.insert(table).values(values)
        sets = {c: stmt.inserted[c] for c in changed} | extra
        if guard is not None:
            sets = {c: case((guard, value), else_=table.c[c]) for c, value in sets.items()}
        return stmt.on_duplicate_key_update(sets or {key_columns[0].name: key_columns[0]})
    module: Any = postgresql if name == "postgresql" else sqlite
    if name not in {"postgresql", "sqlite"}:
        raise InvalidInputError(f"upsert is not available on {name}")
    stmt = module.insert(table).values(values)
    sets = {c: stmt.excluded[c] for c in changed} | extra
    if not sets:
        return stmt.on_conflict_do_nothing(index_elements=key_columns)
    return stmt.on_conflict_do_update(index_elements=key_columns, set_=sets, where=guard)
