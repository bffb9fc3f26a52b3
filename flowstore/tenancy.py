"""Tenant scope: a session that reads and changes only one organization's rows.

``scope_session(session, org_id)`` installs listeners on one ``Session`` (the sync session of
an ``AsyncSession`` too), so that everything run through it stays inside the organization:

* SELECT, UPDATE and DELETE statements on org-owned models get ``org_id = :scope`` added to
  every occurrence of the model (``with_loader_criteria``: joins, subqueries, lazy loads and
  ``session.get`` included); a foreign row is simply not there;
* a flush refuses new, changed or deleted objects of another organization, and checks with a
  scoped query any object that entered the session without being loaded through the scope;
* statements the scope cannot rewrite are refused: raw SQL text, Core statements on
  ``Model.__table__``, bulk INSERT and bulk UPDATE by primary key, UPDATEs that set the
  tenant column, and anything touching platform-level tables (those without ``org_id``).

Refusals raise ``TenantScopeError`` (an ``InvalidInputError``). Org-owned models are the ones
with an ``org_id`` column, plus ``Organization`` itself (its ``id``); see docs/security.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Table, TextClause, event, inspect, select
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    UOWTransaction,
    with_loader_criteria,
)
from sqlalchemy.orm.util import LoaderCriteriaOption
from sqlalchemy.sql import visitors

from flowstore.errors import InvalidInputError, TenantScopeError
from flowstore.models import Base, Organization
from flowstore.repositories.base import require_id

__all__ = [
    "TenantScopeError",
    "coerce_org_id",
    "scope_session",
    "session_org_id",
    "tenant_column",
]

_INFO_KEY = "flowstore.tenant_scope"


def coerce_org_id(value: Any) -> uuid.UUID:
    """``value`` as an organization id (a UUID or its string form); else ``InvalidInputError``."""
    return require_id(value, "org_id")


def tenant_column(table: Table | str) -> str | None:
    """The column that names a row's organization: ``id`` for organizations, ``org_id`` for
    org-owned tables, ``None`` for platform-level tables (deployments, templates, jobs...)."""
    name = table if isinstance(table, str) else table.name
    if name == Organization.__tablename__:
        return "id"
    known = Base.metadata.tables.get(name)
    if known is not None and "org_id" in known.c:
        return "org_id"
    return None


def session_org_id(session: Session) -> uuid.UUID | None:
    """The organization ``session`` is scoped to, or ``None`` when it is unscoped."""
    scope = session.info.get(_INFO_KEY)
    return scope.org_id if isinstance(scope, _Scope) else None


def scope_session(session: Session, org_id: Any) -> uuid.UUID:
    """Confine ``session`` to the organization ``org_id`` for the rest of its life.

    Use a fresh session: objects it already holds were not loaded through the scope. Scoping
    a session twice to the same organization is a no-op; to another one, an error.
    """
    org = coerce_org_id(org_id)
    current = session_org_id(session)
    if current is not None:
        if current != org:
            raise TenantScopeError("this session is already scoped to another organization")
        return org
    if session.identity_map or session.new or session.deleted:
        raise InvalidInputError("scope a fresh session: this one already holds objects")
    scope = _Scope(org, _criteria(org))
    session.info[_INFO_KEY] = scope
    event.listen(session, "do_orm_execute", scope.on_execute)
    event.listen(session, "before_attach", scope.on_attach)
    event.listen(session, "before_flush", scope.on_flush)
    event.listen(session, "loaded_as_persistent", scope.trust)
    event.listen(session, "pending_to_persistent", scope.trust)
    return org


def _criteria(org: uuid.UUID) -> dict[str, LoaderCriteriaOption]:
    """``org_id = :org`` (``id`` for organizations) for every org-owned table's mapped class."""
    options: dict[str, LoaderCriteriaOption] = {}
    for mapper in Base.registry.mappers:
        table = _table_name(mapper)
        column = tenant_column(table)
        if column == "id":
            options[table] = with_loader_criteria(
                mapper.class_, lambda cls: cls.id == org, include_aliases=True
            )
        elif column == "org_id":
            options[table] = with_loader_criteria(
                mapper.class_, lambda cls: cls.org_id == org, include_aliases=True
            )
    return options


def _flowstore_mapper(instance: object) -> Mapper[Any] | None:
    mapper: Mapper[Any] | None = inspect(type(instance), raiseerr=False)
    if mapper is None or _table_name(mapper) not in Base.metadata.tables:
        return None
    return mapper


def _table_name(mapper: Mapper[Any]) -> str:
    table = mapper.local_table
    return table.name if isinstance(table, Table) else ""


@dataclass
class _Scope:
    """The listeners of one scoped session, and the identities it has seen through the scope."""

    org_id: uuid.UUID
    criteria: dict[str, LoaderCriteriaOption]  # by table name
    trusted: set[Any] = field(default_factory=set)

    def refuse(self, message: str) -> TenantScopeError:
        """The error for a refused statement or object."""
        return TenantScopeError(f"tenant-scoped unit of work: {message}")

    # -- statements ------------------------------------------------------------------------

    def on_execute(self, state: ORMExecuteState) -> None:
        """Add the scope's criteria to a statement, or refuse one that cannot be scoped."""
        statement = state.statement
        if isinstance(statement, TextClause):
            raise self.refuse("raw SQL text cannot be scoped; use the repositories")
        touched, core = _tables_in(statement)
        if not touched:
            return
        platform = sorted(name for name in touched if tenant_column(name) is None)
        if platform:
            raise self.refuse(
                f"{', '.join(platform)} hold platform-level data, which belongs to no "
                "organization; use an unscoped unit of work"
            )
        if core or not state.is_orm_statement:
            raise self.refuse(
                "statements on Table objects (Model.__table__) cannot be scoped; "
                "use the mapped classes"
            )
        if state.is_insert:
            raise self.refuse("bulk INSERT statements are not checked; use add() or add_many()")
        if state.is_update:
            if isinstance(state.parameters, list | tuple):
                raise self.refuse("bulk UPDATE by primary key is not checked; update entities")
            if _sets_tenant_column(statement):
                raise self.refuse("an UPDATE may not move rows to another organization")
        # the criteria of the tables the statement names (a lazy load runs its own statement)
        state.statement = statement.options(*(self.criteria[name] for name in sorted(touched)))

    # -- objects ---------------------------------------------------------------------------

    def trust(self, session: Session, instance: object) -> None:
        """Remember an identity loaded through the scope (or inserted after the checks)."""
        key = inspect(instance).identity_key
        if key is not None:
            self.trusted.add(key)

    def on_attach(self, session: Session, instance: object) -> None:
        """Refuse, as it is added, an object that says it belongs to another organization."""
        mapper = _flowstore_mapper(instance)
        if mapper is None:
            return
        column = self._column_of(mapper)
        owner = inspect(instance).dict.get(column)
        if owner is not None and owner != self.org_id:
            raise self.refuse(f"this {mapper.class_.__name__} belongs to another organization")

    def on_flush(
        self, session: Session, context: UOWTransaction, instances: Iterable[object] | None
    ) -> None:
        """Before a flush: every new, changed and deleted object belongs to the scope, and so
        do the org-owned rows its foreign keys point at (checked with one scoped query per
        model for what was not loaded through the scope)."""
        unverified: dict[Mapper[Any], set[Any]] = {}
        for instance in session.new:
            mapper = _flowstore_mapper(instance)
            if mapper is not None:
                self._check_owner(mapper, instance, fill=True)
                self._collect_references(mapper, instance, unverified)
        for instance in session.dirty:
            mapper = _flowstore_mapper(instance)
            if mapper is None or not session.is_modified(instance):
                continue
            self._check_owner(mapper, instance)
            self._collect_references(mapper, instance, unverified)
            self._collect_untrusted(mapper, instance, unverified)
        for instance in session.deleted:
            mapper = _flowstore_mapper(instance)
            if mapper is not None:
                self._check_owner(mapper, instance)
                self._collect_untrusted(mapper, instance, unverified)
        with session.no_autoflush:
            for mapper, ids in unverified.items():
                primary = mapper.get_property_by_column(mapper.primary_key[0]).class_attribute
                found = set(session.scalars(select(primary).where(primary.in_(ids))))
                if ids - found:
                    raise self.refuse(
                        f"{mapper.class_.__name__} {sorted(map(str, ids - found))[0]} "
                        "is not a row of this organization"
                    )

    def _column_of(self, mapper: Mapper[Any]) -> str:
        column = tenant_column(_table_name(mapper))
        if column is None:
            raise self.refuse(
                f"{mapper.class_.__name__} is platform-level data, which belongs to no "
                "organization; use an unscoped unit of work"
            )
        return column

    def _check_owner(self, mapper: Mapper[Any], instance: object, *, fill: bool = False) -> None:
        column = self._column_of(mapper)
        state = inspect(instance)
        owner = state.dict.get(column)
        if owner is None and fill and column == "org_id":
            setattr(instance, column, self.org_id)  # a new row of the scope's organization
            return
        if owner != self.org_id:
            raise self.refuse(f"this {mapper.class_.__name__} belongs to another organization")
        history = state.attrs[column].history
        if any(old is not None and old != self.org_id for old in history.deleted or ()):
            raise self.refuse(f"this {mapper.class_.__name__} belongs to another organization")

    def _collect_untrusted(
        self, mapper: Mapper[Any], instance: object, into: dict[Mapper[Any], set[Any]]
    ) -> None:
        state = inspect(instance)
        if state.identity_key is not None and state.identity_key not in self.trusted:
            into.setdefault(mapper, set()).add(state.identity_key[1][0])

    def _collect_references(
        self, mapper: Mapper[Any], instance: object, into: dict[Mapper[Any], set[Any]]
    ) -> None:
        """Foreign keys to other org-owned tables (a policy's application or user) must point
        at rows of this organization."""
        values = inspect(instance).dict
        for column in mapper.local_table.columns:
            if column.key == "org_id" or column.key not in values:
                continue
            for fk in column.foreign_keys:
                target = _mapper_for(fk.column.table)
                if target is None or tenant_column(fk.column.table) != "org_id":
                    continue
                value = values[column.key]
                if value is not None:
                    into.setdefault(target, set()).add(value)


def _mapper_for(table: Any) -> Mapper[Any] | None:
    for mapper in Base.registry.mappers:
        if mapper.local_table is table:
            return mapper
    return None


def _tables_in(statement: Any) -> tuple[set[str], set[str]]:
    """The flowstore tables a statement names, and those it names only through Core objects
    (``Table`` / ``Column``), never through a mapped class, so criteria would not reach them.

    SQLAlchemy's own statements (``session.get``, lazy loads) mix plain columns of a mapped
    table into ORM statements; those tables are mapped there, so they pass."""
    known = Base.metadata.tables
    touched: set[str] = set()
    mapped: set[str] = set()
    plain_columns: set[str] = set()
    plain_tables: set[str] = set()
    for element in visitors.iterate(statement):
        annotated = "parententity" in getattr(element, "_annotations", {})
        if isinstance(element, Table):
            name = element.name
            if name in known:
                touched.add(name)
                (mapped if annotated else plain_tables).add(name)
        elif isinstance(element, Column):
            table = getattr(element, "table", None)
            if isinstance(table, Table) and table.name in known:
                touched.add(table.name)
                (mapped if annotated else plain_columns).add(table.name)
        elif annotated:
            inner = getattr(element, "element", None)  # an aliased entity's selectable
            if isinstance(inner, Table) and inner.name in known:
                touched.add(inner.name)
                mapped.add(inner.name)
    return touched, (plain_columns | plain_tables) - mapped


def _sets_tenant_column(statement: Any) -> bool:
    """Whether an UPDATE's SET clause names ``org_id`` (or an organization's ``id``)."""
    table = getattr(statement, "table", None)
    column = tenant_column(table.name) if isinstance(table, Table) else None
    if column is None:
        return False
    keys: list[Any] = list(getattr(statement, "_values", None) or ())
    keys += [key for key, _ in getattr(statement, "_ordered_values", None) or ()]
    for key in keys:
        name = key if isinstance(key, str) else getattr(key, "key", getattr(key, "name", None))
        if name == column:
            return True
    return False
