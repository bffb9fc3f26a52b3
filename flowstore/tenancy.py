"""Tenant scope: a session that reads and changes only one organization's rows, failing closed.

``scope_session(session, org_id)`` installs listeners on one session (the sync session of an
``AsyncSession`` too), so that everything run through it stays inside the organization:

* SELECT, UPDATE and DELETE statements on org-owned models get ``<tenant column> = :scope``
  added to every occurrence of the model (``with_loader_criteria``: joins, subqueries, lazy
  loads and ``session.get`` included); a foreign row is simply not there;
* a flush refuses new, changed or deleted objects of another organization, and checks with a
  scoped query any object that entered the session without being loaded through the scope;
* what the scope cannot inspect or rewrite is refused: SQL text (also inside a statement),
  Core statements on ``Model.__table__``, bulk INSERT and bulk UPDATE by primary key, UPDATEs
  that set the tenant column, tables of platform-level models (those without a tenant
  column), and tables or objects flowstore does not know (another declarative base, a
  ``Table`` of other metadata).

Which models are org-owned is declared on the model (``flowstore.models.base.tenant_column``):
an ``org_id`` column, or ``__tenant_column__``. Refusals raise ``TenantScopeError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, TableClause, TextClause, event, inspect, select
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, UOWTransaction, with_loader_criteria
from sqlalchemy.orm.util import LoaderCriteriaOption
from sqlalchemy.sql import visitors

from flowstore.errors import TenantScopeError
from flowstore.models.base import Base, tenant_column
from flowstore.repositories.keys import require_id
from flowstore.repositories.upsert import TENANT_CHECKED
from flowstore.sa_compat import is_orm_annotated, update_set_keys

__all__ = ["TenantScopeError", "coerce_org_id", "scope_session", "session_org_id"]

_INFO_KEY = "flowstore.tenant_scope"


def coerce_org_id(value: Any) -> uuid.UUID:
    """``value`` as an organization id (a UUID or its string form); else ``InvalidInputError``."""
    return require_id(value, "org_id")


def session_org_id(session: Session) -> uuid.UUID | None:
    """The organization ``session`` is scoped to, or ``None`` when it is unscoped."""
    scope = session.info.get(_INFO_KEY)
    return scope.org_id if isinstance(scope, _Scope) else None


def scope_session(session: Session, org_id: Any) -> uuid.UUID:
    """Confine ``session`` to the organization ``org_id`` for the rest of its life.

    A session that already holds objects is narrowed: pending work is flushed first, objects
    of that organization are kept (trusted), and every other object is removed from the
    session, so nothing read before the scope can leak through it. Scoping a session twice to
    the same organization is a no-op; to another one, a ``TenantScopeError`` (never widened).
    """
    org = coerce_org_id(org_id)
    current = session_org_id(session)
    if current is not None:
        if current != org:
            raise TenantScopeError("this unit of work is already scoped to another organization")
        return org
    if session.new or session.dirty or session.deleted:
        session.flush()
    scope = _Scope(org, _criteria(org))
    for instance in list(session.identity_map.values()):
        mapper = _flowstore_mapper(instance)
        column = tenant_column(mapper) if mapper is not None else None
        if column is not None and inspect(instance).dict.get(column) == org:
            scope.trust(session, instance)
        else:
            session.expunge(instance)
    session.info[_INFO_KEY] = scope
    event.listen(session, "do_orm_execute", scope.on_execute)
    event.listen(session, "before_attach", scope.on_attach)
    event.listen(session, "before_flush", scope.on_flush)
    event.listen(session, "loaded_as_persistent", scope.trust)
    event.listen(session, "pending_to_persistent", scope.trust)
    return org


def _org_owned() -> dict[Table, Mapper[Any]]:
    """Every org-owned model's table on ``Base``, with its mapper."""
    found: dict[Table, Mapper[Any]] = {}
    for mapper in Base.registry.mappers:
        table = mapper.local_table
        if isinstance(table, Table) and tenant_column(mapper) is not None:
            found[table] = mapper
    return found


def _criteria(org: uuid.UUID) -> dict[Table, LoaderCriteriaOption]:
    """``<tenant column> = :org`` for every org-owned model, by its table."""
    options: dict[Table, LoaderCriteriaOption] = {}
    for table, mapper in _org_owned().items():
        attribute = tenant_column(mapper)
        assert attribute is not None
        column = getattr(mapper.class_, attribute)
        options[table] = with_loader_criteria(mapper.class_, column == org, include_aliases=True)
    return options


def _flowstore_mapper(instance: object) -> Mapper[Any] | None:
    """The mapper of ``instance`` when it is a model on ``Base``; ``None`` otherwise."""
    mapper: Mapper[Any] | None = inspect(type(instance), raiseerr=False)
    if mapper is None or mapper.registry is not Base.registry:
        return None
    return mapper


@dataclass
class _Scope:
    """The listeners of one scoped session, and the identities it has seen through the scope."""

    org_id: uuid.UUID
    criteria: dict[Table, LoaderCriteriaOption]
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
        seen = _tables_in(statement)
        if seen.text:
            raise self.refuse("SQL text inside a statement cannot be scoped; use the models")
        if seen.unknown:
            raise self.refuse(
                f"{', '.join(sorted(seen.unknown))}: not a flowstore model's table, so the "
                "scope cannot tell whose rows it holds"
            )
        if not seen.tables:
            return
        platform = sorted(t.name for t in seen.tables if t not in self.criteria)
        if platform:
            raise self.refuse(
                f"{', '.join(platform)} hold platform-level data, which belongs to no "
                "organization; use an unscoped unit of work"
            )
        checked = state.execution_options.get(TENANT_CHECKED) == self.org_id
        if seen.core and not (checked and state.is_insert):
            raise self.refuse(
                "statements on Table objects (Model.__table__) cannot be scoped; "
                "use the mapped classes"
            )
        if state.is_insert and not checked:
            raise self.refuse("bulk INSERT statements are not checked; use add() or add_many()")
        if state.is_update:
            if isinstance(state.parameters, list | tuple):
                raise self.refuse("bulk UPDATE by primary key is not checked; update entities")
            self._check_update_sets(statement)
        if state.is_insert:
            return  # checked by the repository, its conflict update guarded by the scope
        # the criteria of the tables the statement names (a lazy load runs its own statement)
        options = [self.criteria[t] for t in sorted(seen.tables, key=lambda t: t.name)]
        state.statement = statement.options(*options)

    def _check_update_sets(self, statement: Any) -> None:
        table = getattr(statement, "table", None)
        mapper = _org_owned().get(table) if isinstance(table, Table) else None
        if mapper is None:
            return  # an UPDATE of a table checked above
        names = update_set_keys(statement)
        if names is None:
            raise self.refuse("this UPDATE's SET clause cannot be read, so it is not run")
        attribute = tenant_column(mapper)
        column = mapper.attrs[attribute].columns[0].name if attribute else None
        if names & {attribute, column}:
            raise self.refuse("an UPDATE may not move rows to another organization")

    # -- objects ---------------------------------------------------------------------------

    def trust(self, session: Session, instance: object) -> None:
        """Remember an identity loaded through the scope (or inserted after the checks)."""
        key = inspect(instance).identity_key
        if key is not None:
            self.trusted.add(key)

    def on_attach(self, session: Session, instance: object) -> None:
        """Refuse, as it is added, an object the scope cannot place, or of another
        organization."""
        mapper = self._mapper_of(instance)
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
            mapper = self._mapper_of(instance)
            self._check_owner(mapper, instance, fill=True)
            self._collect_references(mapper, instance, unverified)
        for instance in session.dirty:
            if not session.is_modified(instance):
                continue
            mapper = self._mapper_of(instance)
            self._check_owner(mapper, instance)
            self._collect_references(mapper, instance, unverified)
            self._collect_untrusted(mapper, instance, unverified)
        for instance in session.deleted:
            mapper = self._mapper_of(instance)
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

    def _mapper_of(self, instance: object) -> Mapper[Any]:
        mapper = _flowstore_mapper(instance)
        if mapper is None:
            raise self.refuse(
                f"{type(instance).__name__} is not a flowstore model, so the scope cannot "
                "tell whose row it is"
            )
        return mapper

    def _column_of(self, mapper: Mapper[Any]) -> str:
        column = tenant_column(mapper)
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
        primary = {mapper.get_property_by_column(c).key for c in mapper.primary_key}
        if owner is None and fill and column not in primary:
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
        tenant = tenant_column(mapper)
        owned = _org_owned()
        for column in mapper.local_table.columns:
            if column.key == tenant or column.key not in values:
                continue
            for fk in column.foreign_keys:
                target = owned.get(fk.column.table)
                if target is None:
                    continue
                value = values[column.key]
                if value is not None:
                    into.setdefault(target, set()).add(value)


@dataclass
class _Seen:
    """What a statement names: flowstore tables (``tables``), those named only through Core
    objects so criteria would not reach them (``core``), tables unknown to flowstore
    (``unknown``), and whether it holds SQL text."""

    tables: set[Table] = field(default_factory=set)
    core: set[Table] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    text: bool = False


def _tables_in(statement: Any) -> _Seen:
    """Walk ``statement``: SQLAlchemy's own statements (``session.get``, lazy loads) mix
    plain columns of a mapped table into ORM statements; those tables are mapped there, so
    they pass."""
    known = {mapper.local_table for mapper in Base.registry.mappers}
    seen = _Seen()
    mapped: set[Table] = set()
    plain: set[Table] = set()
    for element in visitors.iterate(statement):
        annotated = is_orm_annotated(element)
        table: Any = None
        if isinstance(element, TextClause):
            seen.text = True
            continue
        if isinstance(element, TableClause):
            table = element
        elif hasattr(element, "table") and isinstance(getattr(element, "table", None), TableClause):
            table = element.table
        elif annotated:
            inner = getattr(element, "element", None)  # an aliased entity's selectable
            table = inner if isinstance(inner, TableClause) else None
        if table is None:
            continue
        if not isinstance(table, Table) or table not in known:
            seen.unknown.add(table.name)
            continue
        seen.tables.add(table)
        (mapped if annotated else plain).add(table)
    seen.core = plain - mapped
    return seen
