"""``Repository[T]``: the contract's generic methods over one model, on one session.

It serves flowstore's models and a service's own: any model on ``flowstore.models.Base`` with
a single-column primary key (``Entity``'s UUIDv7 ``id``, an integer, a string). Lists come in
a stable order: creation time then key where the model has ``created_at``, else key order.

A repository never commits: the unit of work that owns the session does. ``add`` and
``add_many`` flush inside a nested transaction, so a duplicate key raises ``AlreadyExistsError``
and leaves the rest of the unit of work intact and usable (a real SAVEPOINT only where the
database needs one: ``flowstore.repositories.savepoints``).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, Select, delete, func, inspect, select, update
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.util import identity_key

import flowstore.cache  # noqa: F401 (its commit hooks)
from flowstore.cache.reads import cache_of, cached_get
from flowstore.errors import (
    TRANSLATED_ERRORS,
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    describe,
    translated_error,
)
from flowstore.models.base import Base
from flowstore.repositories.bulk import insert_many
from flowstore.repositories.changes import (
    delete_recorded,
    read_row,
    record_upsert,
    update_recorded,
)
from flowstore.repositories.context import RepositoryContext
from flowstore.repositories.keys import coerce_id, key_attribute, key_for, key_of, require_id
from flowstore.repositories.pagination import (
    Page,
    check_page,
    encode_cursor,
    fetch_page,
)
from flowstore.repositories.queries import OrderBy, criteria, list_statement, ordering, paged
from flowstore.repositories.savepoints import guarded_insert, insert_one
from flowstore.repositories.upsert import changes_for, upsert_statement
from flowstore.spec import Spec
from flowstore.validation import check_entity, coerce_value, column_for

__all__ = [
    "OrderBy",
    "Repository",
    "RepositoryContext",
    "check_page",
    "coerce_id",
    "require_id",
    "translated",
]

T = TypeVar("T", bound=Base)
F = TypeVar("F", bound=Callable[..., Any])


def translated(method: F) -> F:
    """Decorate a repository method so that only flowstore errors leave it."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:  # what translating() does, without a context manager per call
            return method(*args, **kwargs)
        except TRANSLATED_ERRORS as exc:
            raise translated_error(exc) from exc

    return cast(F, wrapper)


class Repository(Generic[T]):
    """Generic data access for one model (``model = Project`` in a subclass); subclasses add
    the domain queries."""

    model: ClassVar[type[Any]]
    _plain_reads: ClassVar[bool] = True

    def __init__(self, session: Session, context: RepositoryContext | None = None) -> None:
        self.session = session
        self.context = context or RepositoryContext()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a subclass that builds its reads its own way keeps them: list() takes no shortcut
        cls._plain_reads = all(
            getattr(cls, name) is getattr(Repository, name)
            for name in ("_criteria", "_select", "_paged")
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {getattr(self, 'model', object).__name__}>"

    # -- reading ---------------------------------------------------------------------------

    @translated
    def get(self, id: Any) -> T:
        """The entity with this key; ``NotFoundError`` if there is none."""
        entity = self.get_or_none(id)
        if entity is None:
            raise NotFoundError(f"{self.model.__name__} {describe(id)} not found")
        return entity

    @translated
    def get_or_none(self, id: Any) -> T | None:
        """The entity with this key, or ``None``."""
        key = key_for(self.model, id)
        if key is None:
            return None
        if cache_of(self.session) is not None:  # through the store's cache (flowstore.cache)
            found: T | None = cached_get(self.session, self.model, key)
            return found
        entity: T | None = self.session.get(self.model, key)
        return entity

    @translated
    def exists(self, id: Any) -> bool:
        """Whether an entity with this key exists."""
        key = key_for(self.model, id)
        if key is None:
            return False
        column = key_attribute(self.model)
        stmt = select(column).where(column == key).limit(1)
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
        if specs or not self._plain_reads:
            stmt = self._paged(self._select(specs, filters), limit, offset, order_by, after)
            return builtins.list(self.session.scalars(stmt).all())
        stmt, values = list_statement(self.model, filters, limit, offset, order_by, after)
        return builtins.list(self.session.scalars(stmt, values).all())

    @translated
    def list_and_count(
        self,
        *specs: Spec,
        limit: int | None = None,
        offset: int | None = None,
        order_by: OrderBy = None,
        **filters: Any,
    ) -> tuple[builtins.list[T], int]:
        """One page of ``list(...)`` and how many entities match in all, in one query (a
        second one only when the page is empty past the first row)."""
        criteria = self._criteria(specs, filters)
        total = func.count().over().label("flowstore_total")
        stmt = self._paged(select(self.model, total).where(*criteria), limit, offset, order_by)
        rows = self.session.execute(stmt).all()
        if rows:
            return [row[0] for row in rows], int(rows[0][1])
        if not offset:
            return [], 0
        counted = select(func.count()).select_from(self.model).where(*criteria)
        return [], int(self.session.execute(counted).scalar_one())

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

    # -- writing one entity ----------------------------------------------------------------

    @translated
    def add(self, entity: T) -> T:
        """Insert ``entity`` and flush; ``AlreadyExistsError`` on a duplicate key."""
        self._check_unknown(entity)
        if insert_one(self.session, self.model, entity):  # checks and records it itself
            return entity
        check_entity(entity)
        with guarded_insert(self.session, entity):
            self.session.add(entity)
        return entity

    @translated
    def add_many(self, entities: Iterable[T]) -> builtins.list[T]:
        """Insert every entity in one batched INSERT (see ``bulk.insert_many``; models it cannot
        handle take an ordinary flush); all or none of them."""
        items = builtins.list(entities)
        self._check_unknown_many(items)
        if items and not insert_many(self.session, self.model, items):  # checks and records
            for entity in items:
                check_entity(entity)
            with self.session.begin_nested():
                self.session.add_all(items)
        return items

    @translated
    def update(self, entity: T) -> T:
        """Write ``entity``'s changes; it must exist, and a stale version is ``ConcurrencyError``.

        A detached entity (from an earlier unit of work) is merged: its version counter is
        checked against the row's, so an update based on an old read is refused.
        """
        self._check_entity(entity)
        if entity not in self.session:
            current = self.get_or_none(key_of(entity))
            if current is None:
                raise NotFoundError(f"{self.model.__name__} {describe(key_of(entity))} not found")
            version = self._mapper.version_id_col
            if version is not None:
                attribute = self._mapper.get_property_by_column(version).key
                if getattr(entity, attribute) is None:
                    setattr(entity, attribute, getattr(current, attribute))
            entity = self.session.merge(entity)
        self.session.flush()
        return entity

    @translated
    def delete(self, id: Any) -> None:
        """Delete the entity with this key (or the entity given); ``NotFoundError`` if absent."""
        entity = self.get(key_of(id) if isinstance(id, self.model) else id)
        self.session.delete(entity)
        self.session.flush()

    @translated
    def upsert(self, entity: T, *, on: str | Sequence[str] | None = None) -> T:
        """Insert ``entity``, or update the row that has its value of the unique key ``on``
        (default: the primary key) with the fields it sets; one statement (``ON CONFLICT`` /
        ``ON DUPLICATE KEY``). Returns the stored entity, loaded afresh (an update keeps the
        row's key and creation time and bumps its version)."""
        self._check_type(entity)
        check_entity(entity)
        self.session.flush()
        statement, lookup = upsert_statement(self.session, entity, on, self.context.org_id)
        before = read_row(self.session, self.model, lookup)  # for its change event
        self.session.execute(statement)
        found = self.session.scalars(
            select(self.model).where(*lookup).execution_options(populate_existing=True)
        ).one_or_none()
        if found is None:  # the row with that key is not one this unit of work may change
            raise AlreadyExistsError(f"{self.model.__name__}: that key is taken")
        record_upsert(self.session, found, before, None)
        return cast(T, found)

    # -- writing by specification ----------------------------------------------------------

    @translated
    def update_many(self, *specs: Spec | Mapping[str, Any], **changes: Any) -> int:
        """Set ``changes`` (``field=value``, or a mapping given after the specs) on every entity
        matching the specs; how many rows changed. Versions are bumped and ``updated_at`` set,
        as an update of each would."""
        values: dict[str, Any] = {}
        conditions: builtins.list[Spec] = []
        for item in specs:
            if isinstance(item, Mapping):
                values.update(item)
            else:
                conditions.append(item)
        values.update(changes)
        if not values:
            raise InvalidInputError("update_many needs at least one field to set")
        criteria = self._criteria(conditions, {})
        checked = changes_for(self.model, values)
        counted = update_recorded(self.session, self.model, criteria, checked)
        if counted is not None:
            return counted
        stmt = update(self.model).where(*criteria).values(checked)
        return _rowcount(self.session.execute(stmt))

    @translated
    def delete_many(self, *specs: Spec, **filters: Any) -> int:
        """Delete every entity matching the specs and filters; how many rows went."""
        criteria = self._criteria(specs, filters)
        counted = delete_recorded(self.session, self.model, criteria)
        if counted is not None:
            return counted
        return _rowcount(self.session.execute(delete(self.model).where(*criteria)))

    # -- building blocks for subclasses ----------------------------------------------------

    @property
    def _mapper(self) -> Mapper[Any]:
        return cast("Mapper[Any]", inspect(self.model))

    def _set_required(self, id: Any, field: str, value: Any) -> bool:
        """Set one non-null field of the entity with this key and flush; ``False`` when there
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
        """Refuse a new entity whose key this session already holds (no round trip needed)."""
        self._check_type(entity)
        given = key_of(entity)
        if given is not None and entity not in self.session:
            key = key_for(self.model, given)
            if key is not None and identity_key(self.model, key) in self.session.identity_map:
                raise AlreadyExistsError(f"{self.model.__name__} {describe(given)} already exists")

    def _check_unknown_many(self, entities: Sequence[Any]) -> None:
        """:meth:`_check_unknown` on every one of ``entities``; with nothing in the session's
        identity map no key can be taken, so only their types are checked (a batch is often
        thousands of objects in a new unit of work)."""
        if self.session.identity_map:
            for entity in entities:
                self._check_unknown(entity)
            return
        model = self.model
        for entity in entities:
            if type(entity) is not model:
                self._check_type(entity)

    def _criteria(
        self, specs: Sequence[Spec], filters: Mapping[str, Any]
    ) -> builtins.list[ColumnElement[bool]]:
        return criteria(self.model, specs, filters)

    def _select(self, specs: Sequence[Spec], filters: Mapping[str, Any]) -> Select[Any]:
        return select(self.model).where(*criteria(self.model, specs, filters))

    def _paged(
        self,
        stmt: Select[Any],
        limit: int | None,
        offset: int | None,
        order_by: OrderBy,
        after: str | None = None,
    ) -> Select[Any]:
        return paged(self.model, stmt, limit, offset, order_by, after)

    def _ordering(self, order_by: OrderBy) -> builtins.list[Any]:
        return ordering(self.model, order_by)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
