"""``Repository[T]``: the contract's generic methods over one model, on one session.

A repository never commits: the unit of work that owns the session does. ``add`` and
``add_many`` flush inside a SAVEPOINT, so a duplicate key raises ``AlreadyExistsError`` and
leaves the rest of the unit of work intact and usable.
"""

from __future__ import annotations

import builtins
import functools
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.util import identity_key

from flowstore.config import Settings
from flowstore.errors import (
    TRANSLATED_ERRORS,
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    describe,
    translated_error,
)
from flowstore.models.base import Entity, as_uuid
from flowstore.repositories.bulk import insert_many
from flowstore.repositories.pagination import (
    Page,
    after_clause,
    check_page,
    encode_cursor,
    fetch_page,
)
from flowstore.spec import Spec, check_entity, coerce_value, column_for

__all__ = [
    "OrderBy",
    "Repository",
    "RepositoryContext",
    "check_page",
    "coerce_id",
    "require_id",
    "translated",
]

T = TypeVar("T", bound=Entity)
F = TypeVar("F", bound=Callable[..., Any])

OrderBy = str | Sequence[str] | None


@dataclass(frozen=True)
class RepositoryContext:
    """What repositories need beside the session: settings (API-key secret), tenant scope."""

    settings: Settings = field(default_factory=Settings)
    org_id: uuid.UUID | None = None

    def for_org(self, org_id: Any) -> RepositoryContext:
        """This context confined to one organization (``InvalidInputError`` for a bad id)."""
        return replace(self, org_id=require_id(org_id, "org_id"))


def translated(method: F) -> F:
    """Decorate a repository method so that only flowstore errors leave it."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:  # what translating() does, without a context manager per call
            return method(*args, **kwargs)
        except TRANSLATED_ERRORS as exc:
            raise translated_error(exc) from exc

    return cast(F, wrapper)


def coerce_id(value: Any) -> uuid.UUID | None:
    """``value`` as a UUID, or ``None`` when it cannot be an id (so: not found)."""
    try:
        return as_uuid(value)
    except ValueError:
        return None


def require_id(value: Any, name: str) -> uuid.UUID:
    """``value`` as a UUID; ``InvalidInputError`` naming ``name`` when it cannot be one."""
    key = coerce_id(value)
    if key is None:
        raise InvalidInputError(f"{name} must be a UUID")
    return key


class Repository(Generic[T]):
    """Generic data access for one model; subclasses add the domain queries."""

    model: ClassVar[type[Any]]

    def __init__(self, session: Session, context: RepositoryContext | None = None) -> None:
        self.session = session
        self.context = context or RepositoryContext()

    # -- reading ---------------------------------------------------------------------------

    @translated
    def get(self, id: Any) -> T:
        """The entity with this id; ``NotFoundError`` if there is none."""
        entity = self.get_or_none(id)
        if entity is None:
            raise NotFoundError(f"{self.model.__name__} {describe(id)} not found")
        return entity

    @translated
    def get_or_none(self, id: Any) -> T | None:
        """The entity with this id, or ``None``."""
        key = coerce_id(id)
        if key is None:
            return None
        entity: T | None = self.session.get(self.model, key)
        return entity

    @translated
    def exists(self, id: Any) -> bool:
        """Whether an entity with this id exists."""
        key = coerce_id(id)
        if key is None:
            return False
        stmt = select(self.model.id).where(self.model.id == key).limit(1)
        return self.session.execute(stmt).first() is not None

    @translated
    def list(
        self,
        *specs: Spec,
        limit: int | None = None,
        offset: int | None = None,
        order_by: OrderBy = None,
        after: str | None = None,
        **filters: Any,
    ) -> builtins.list[T]:
        """Entities matching every spec and ``field=value`` filter, in a stable order.

        ``after`` (a cursor from ``page()`` or ``cursor_for()``) starts just after that entity
        in the default order: keyset pagination, as fast deep down as at the start.
        """
        stmt = self._select(specs, filters)
        if after is not None:
            if order_by is not None or offset:
                raise InvalidInputError("after pages in the default order, without offset")
            stmt = stmt.where(after_clause(self.model, after))
        stmt = stmt.order_by(*self._ordering(order_by))
        limit, offset = check_page("limit", limit), check_page("offset", offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        return builtins.list(self.session.scalars(stmt).all())

    @translated
    def page(
        self, *specs: Spec, limit: int = 50, after: str | None = None, **filters: Any
    ) -> Page[T]:
        """Up to ``limit`` entities after the cursor ``after`` (from the start without one), in
        the default order, and the next page's cursor (``None`` on the last page); one query.
        """
        return fetch_page(limit, lambda n: self.list(*specs, limit=n, after=after, **filters))

    def cursor_for(self, entity: T) -> str:
        """The cursor just after ``entity``, for ``list(after=...)`` and ``page(after=...)``."""
        if not isinstance(entity, self.model):
            raise InvalidInputError(f"a cursor of {self.model.__name__} needs one of them")
        return encode_cursor(entity)

    @translated
    def count(self, *specs: Spec, **filters: Any) -> int:
        """How many entities match every spec and filter."""
        stmt = select(func.count()).select_from(self.model)
        stmt = stmt.where(*self._criteria(specs, filters))
        return int(self.session.execute(stmt).scalar_one())

    # -- writing ---------------------------------------------------------------------------

    @translated
    def add(self, entity: T) -> T:
        """Insert ``entity`` and flush; ``AlreadyExistsError`` on a duplicate key."""
        self._check_new(entity)
        with self.session.begin_nested():
            self.session.add(entity)
        return entity

    @translated
    def add_many(self, entities: Iterable[T]) -> builtins.list[T]:
        """Insert every entity in one batched INSERT (see ``bulk.insert_many``; models it cannot
        handle take an ordinary flush); all or none of them."""
        items = builtins.list(entities)
        for entity in items:
            self._check_unknown(entity)
        if items and not insert_many(self.session, self.model, items):  # it checks the values
            for entity in items:
                check_entity(entity)
            with self.session.begin_nested():
                self.session.add_all(items)
        return items

    @translated
    def update(self, entity: T) -> T:
        """Write ``entity``'s changes; it must exist, and a stale version is ``ConcurrencyError``.

        A detached entity (from an earlier unit of work) is merged: its ``lock_version`` is
        checked against the row's, so an update based on an old read is refused.
        """
        self._check_entity(entity)
        if entity not in self.session:
            current = self.get_or_none(entity.id)
            if current is None:
                raise NotFoundError(f"{self.model.__name__} {describe(entity.id)} not found")
            if entity.lock_version is None:
                entity.lock_version = current.lock_version
            entity = self.session.merge(entity)
        self.session.flush()
        return entity

    @translated
    def delete(self, id: Any) -> None:
        """Delete the entity with this id (or the entity given); ``NotFoundError`` if absent."""
        entity = self.get(id.id if isinstance(id, self.model) else id)
        self.session.delete(entity)
        self.session.flush()

    # -- building blocks for subclasses ----------------------------------------------------

    def _set_required(self, id: Any, field: str, value: Any) -> bool:
        """Set one non-null field of the entity with this id and flush; ``False`` when there
        is no such entity. The value is checked first (``InvalidInputError``)."""
        new_value = coerce_value(column_for(self.model, field), field, value)
        if new_value is None:
            raise InvalidInputError(f"{field} is required")
        entity = self.get_or_none(id)
        if entity is None:
            return False
        setattr(entity, field, new_value)
        self.session.flush()
        return True

    def _check_type(self, entity: Any) -> None:
        if not isinstance(entity, self.model):
            raise InvalidInputError(
                f"{type(self).__name__} stores {self.model.__name__}, not {type(entity).__name__}"
            )

    def _check_entity(self, entity: Any) -> None:
        self._check_type(entity)
        check_entity(entity)  # bad values: the same InvalidInputError on every backend

    def _check_new(self, entity: Any) -> None:
        self._check_unknown(entity)
        check_entity(entity)

    def _check_unknown(self, entity: Any) -> None:
        """Refuse a new entity whose id this session already holds (no round trip needed)."""
        self._check_type(entity)
        if instance_state(entity).dict.get("id") is not None and entity not in self.session:
            key = identity_key(self.model, coerce_id(entity.id) or entity.id)
            if key in self.session.identity_map:
                raise AlreadyExistsError(f"{self.model.__name__} {entity.id} already exists")

    def _criteria(
        self, specs: Sequence[Spec], filters: dict[str, Any]
    ) -> builtins.list[ColumnElement[bool]]:
        clauses: builtins.list[ColumnElement[bool]] = []
        for spec in specs:
            if not isinstance(spec, Spec):
                raise InvalidInputError(f"expected a Spec, got {type(spec).__name__}")
            clauses.append(spec.to_clause(self.model))
        for name, value in filters.items():
            column = column_for(self.model, name)
            coerced = coerce_value(column, name, value)
            clauses.append(column.is_(None) if coerced is None else column == coerced)
        return clauses

    def _select(self, specs: Sequence[Spec], filters: dict[str, Any]) -> Select[Any]:
        return select(self.model).where(*self._criteria(specs, filters))

    def _ordering(self, order_by: OrderBy) -> builtins.list[Any]:
        if order_by is None:
            return [self.model.created_at, self.model.id]
        if not isinstance(order_by, str | builtins.list | tuple):
            raise InvalidInputError("order_by takes a field name or a list of them")
        names = [order_by] if isinstance(order_by, str) else builtins.list(order_by)
        clauses: builtins.list[Any] = []
        for name in names:
            if not isinstance(name, str) or not name.lstrip("-"):
                raise InvalidInputError(f"order_by takes field names, got {describe(name)}")
            column = column_for(self.model, name.lstrip("-"))
            clauses.append(column.desc() if name.startswith("-") else column.asc())
        if "id" not in {n.lstrip("-") for n in names}:
            clauses.append(self.model.id)  # a unique tie-breaker keeps pages from overlapping
        return clauses
