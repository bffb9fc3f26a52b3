"""Reads through the cache: ``get`` by key and the declared unique lookups.

A read is answered from the session first (an object it holds), then from Redis, else from
the database, whose row then fills the cache under the lease taken before the database was
asked (``flowstore.cache.client``). A row from the cache becomes an ordinary persistent object
of the session (updates, version checks and in-place JSON edits work as on a loaded one).

The cache is not asked, and the database answers as without it, when:

* the session already changed rows of that model in this transaction (it must read its own
  writes, which the cache learns of only at commit), or holds unflushed changes;
* the unit of work is tenant-scoped and the model is platform-level (the database refuses);
* Redis is unreachable or still owes invalidations (``Cache.usable``).

A scoped unit of work gets a cached row only if it belongs to its organization; another
organization's row is "not found", exactly as the scoped query says. A row is filled into
the cache only if it was read in this call (not an object the session held from earlier) and
from a snapshot taken after the lease: under READ COMMITTED (PostgreSQL, MySQL/MariaDB as
flowstore configures them) every statement is; on SQLite, and under stricter isolation, only
the first read of a transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, event, inspect
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from flowstore.cache.client import Cache
from flowstore.cache.codec import Codec, codec_for, encode_key
from flowstore.errors import InvalidInputError
from flowstore.events.capture import (
    RECORDING,
    bulk_aware,
    pending,
    register_lookup,
)
from flowstore.models.base import Base, tenant_column
from flowstore.models.mutable_json import tracked
from flowstore.sessions import FlowstoreSession
from flowstore.validation import coerce_value, column_for

__all__ = ["cache_of", "cached_get", "cached_lookup", "entity_key", "lookup_key"]

F = TypeVar("F", bound=Callable[..., Any])

_BEGAN = "flowstore.cache.began"
_LOADED = "flowstore.cache.loaded"


def cache_of(session: Session) -> Cache | None:
    """The cache of ``session``'s store, or ``None``."""
    found = session.info.get(RECORDING)
    cache = getattr(found, "cache", None)
    return cache if isinstance(cache, Cache) else None


def entity_key(cache: Cache, model: type[Any], key: Any) -> str:
    table = inspect(model).local_table.name
    return cache.key("e", table, encode_key(key))


def lookup_key(cache: Cache, model: type[Any], fields: Sequence[str], values: Sequence[Any]) -> str:
    table = inspect(model).local_table.name
    digest = hashlib.sha256(json.dumps([encode_key(v) for v in values]).encode()).hexdigest()
    return cache.key("l", table, ",".join(fields), digest[:32])


# -- when the cache may be used ------------------------------------------------------------


def _scope(session: Session) -> Any:
    from flowstore.tenancy import session_org_id  # tenancy imports the repositories

    return session_org_id(session)


def _usable(session: Session, cache: Cache, model: type[Any], *, lookup: bool) -> Codec | None:
    mapper = inspect(model, raiseerr=False)
    if not isinstance(mapper, Mapper) or mapper.registry is not Base.registry:
        return None
    codec = codec_for(model)
    if codec is None:
        return None
    if _scope(session) is not None and tenant_column(mapper) is None:
        return None  # platform data in a scoped unit of work: the database refuses it
    if any(change.model is model for change in pending(session).changes):
        return None  # read your own writes
    if lookup and any(
        isinstance(obj, model)
        for objs in (session.new, session.dirty, session.deleted)
        for obj in objs
    ):
        return None  # the query would flush them first
    if not cache.usable():
        return None
    return codec


_FRESH: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _statement_snapshots(engine: Engine) -> bool:
    """Whether every statement sees every commit made before it (READ COMMITTED)."""
    known = _FRESH.get(engine)
    if known is None:
        level = engine.get_execution_options().get("isolation_level") or getattr(
            engine.dialect, "isolation_level", None
        )
        name = engine.dialect.name
        if name == "postgresql":
            level = level or "READ COMMITTED"
        known = name in {"postgresql", "mysql", "mariadb"} and str(level).upper() in {
            "READ COMMITTED",
            "AUTOCOMMIT",
        }
        _FRESH[engine] = known
    return known


def _fresh(session: Session) -> bool:
    """Whether a read now sees every commit made before it (see the module)."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    return _statement_snapshots(engine) or not session.info.get(_BEGAN)


@bulk_aware
def _after_begin(session: Session, _transaction: Any, _connection: Any) -> None:
    session.info[_BEGAN] = True


def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_BEGAN, None)


def _loaded(session: Session, instance: object) -> None:
    found = session.info.get(_LOADED)
    if found is not None:
        found.add(id(instance))


event.listen(FlowstoreSession, "after_begin", _after_begin)
event.listen(FlowstoreSession, "after_transaction_end", _after_transaction_end)
event.listen(FlowstoreSession, "loaded_as_persistent", _loaded)


def _load(session: Session, call: Callable[[], Any]) -> tuple[Any, set[int]]:
    """``call()``, and the ids of the objects it loaded from the database."""
    loaded: set[int] = set()
    session.info[_LOADED] = loaded
    try:
        return call(), loaded
    finally:
        session.info.pop(_LOADED, None)


# -- rows from the cache -------------------------------------------------------------------


def _attach(session: Session, model: type[Any], codec: Codec, values: dict[str, Any]) -> Any:
    """The session's object for this row: the one it holds, or a new persistent one."""
    mapper: Mapper[Any] = inspect(model)
    key = mapper.get_property_by_column(mapper.primary_key[0]).key
    identity = mapper.identity_key_from_primary_key((values[key],))
    held = session.identity_map.get(identity)
    if held is not None:
        return held
    obj = mapper.class_manager.new_instance()
    for name, value in values.items():
        set_committed_value(obj, name, value)
    state = instance_state(obj)
    for name in codec.json_attributes:
        if state.dict.get(name) is not None:
            state.dict[name] = tracked(state.dict[name], state, name)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def _visible(session: Session, model: type[Any], values: dict[str, Any]) -> bool:
    """A scoped unit of work sees only its organization's rows."""
    scope = _scope(session)
    if scope is None:
        return True
    column = tenant_column(model)
    return column is not None and values.get(column) == scope


def _from_cache(
    session: Session, cache: Cache, model: type[Any], codec: Codec, key: str
) -> tuple[bool, Any, bytes | None]:
    """``(answered, object, token)``: a hit (its object, or ``None`` when not visible), or
    the lease token to fill with (``None``: do not fill)."""
    fresh = _fresh(session)
    lease = cache.read(key)
    if lease is None:
        cache.bypass()
        return False, None, None
    if lease.value is not None:
        values = codec.decode(lease.value)
        if values is not None:
            if not _visible(session, model, values):
                return True, None, None
            return True, _attach(session, model, codec, values), None
        return False, None, None
    return False, None, lease.token if fresh else None


def _fill(cache: Cache, codec: Codec, key: str, token: bytes, obj: Any) -> None:
    cache.fill(key, token, codec.encode(inspect(obj).dict))


def cached_get(session: Session, model: type[Any], key: Any) -> Any:
    """``session.get(model, key)`` through the cache of the session's store."""
    cache = cache_of(session)
    mapper: Mapper[Any] = inspect(model)
    if cache is None or mapper.identity_key_from_primary_key((key,)) in session.identity_map:
        return session.get(model, key)
    codec = _usable(session, cache, model, lookup=False)
    if codec is None:
        cache.bypass()
        return session.get(model, key)
    item = entity_key(cache, model, key)
    answered, obj, token = _from_cache(session, cache, model, codec, item)
    if answered:
        return obj
    obj, loaded = _load(session, lambda: session.get(model, key))
    if obj is not None and token is not None and id(obj) in loaded:
        _fill(cache, codec, item, token, obj)
    return obj


# -- declared lookups ----------------------------------------------------------------------


class _CachedLookup:
    """A repository method declared as a unique lookup (see :func:`cached_lookup`)."""

    def __init__(
        self,
        method: Callable[..., Any],
        fields: tuple[str, ...],
        values: Callable[..., Sequence[Any] | None] | None,
    ) -> None:
        self.fields = fields
        self.values = values
        self.method = method
        lookup = self

        @functools.wraps(method)
        def through_cache(repository: Any, *args: Any, **kwargs: Any) -> Any:
            return lookup.call(repository, args, kwargs)

        through_cache.flowstore_cached_lookup = fields  # type: ignore[attr-defined]
        self.function = through_cache

    def __set_name__(self, owner: type[Any], name: str) -> None:
        model = getattr(owner, "model", None)
        if not isinstance(model, type):
            raise TypeError(f"{owner.__name__}.{name}: a cached lookup needs `model` set first")
        for field in self.fields:
            column_for(model, field)  # an unknown field fails at import, not at run time
        register_lookup(model, self.fields)

    def __get__(self, repository: Any, owner: type[Any]) -> Any:
        if repository is None:
            return self.function
        return types.MethodType(self.function, repository)

    def _lookup_values(self, repository: Any, args: Any, kwargs: Any) -> list[Any] | None:
        model = repository.model
        if self.values is not None:
            given = self.values(repository, *args, **kwargs)
            raw = None if given is None else list(given)
        else:
            raw = list(args[: len(self.fields)])
            for name in self.fields[len(raw) :]:
                if name not in kwargs:
                    return None
                raw.append(kwargs[name])
        if raw is None or len(raw) != len(self.fields):
            return None
        coerced = []
        for name, value in zip(self.fields, raw, strict=True):
            try:
                value = coerce_value(column_for(model, name), name, value)
            except InvalidInputError:
                return None  # the method itself says what is wrong with it
            if value is None:
                return None
            coerced.append(value)
        return coerced

    def _matches(self, values: dict[str, Any], wanted: list[Any]) -> bool:
        return all(
            encode_key(values.get(name)) == encode_key(value)
            for name, value in zip(self.fields, wanted, strict=True)
        )

    def call(self, repository: Any, args: Any, kwargs: Any) -> Any:
        session: Session = repository.session
        cache = cache_of(session)
        if cache is None:
            return self.method(repository, *args, **kwargs)
        model = repository.model
        codec = _usable(session, cache, model, lookup=True)
        wanted = self._lookup_values(repository, args, kwargs) if codec is not None else None
        item = lookup_key(cache, model, self.fields, wanted) if wanted is not None else None
        if codec is None or wanted is None or item is None:
            cache.bypass()
            return self.method(repository, *args, **kwargs)
        answered, obj, token = _from_cache(session, cache, model, codec, item)
        if answered and (obj is None or self._matches(inspect(obj).dict, wanted)):
            return obj
        result, loaded = _load(session, lambda: self.method(repository, *args, **kwargs))
        if (
            token is not None
            and isinstance(result, model)
            and id(result) in loaded
            and self._matches(inspect(result).dict, wanted)
        ):
            _fill(cache, codec, item, token, result)
        return result


def cached_lookup(
    *fields: str, values: Callable[..., Sequence[Any] | None] | None = None
) -> Callable[[F], F]:
    """Declare a repository method a unique lookup the cache may answer.

    ``fields`` are the model's columns (a unique key) that identify the row; the method's
    arguments give their values in order, or ``values(repository, *args, **kwargs)`` computes
    them (``None``: do not use the cache for this call). The method must return the one row
    with those values, or ``None``::

        class ProjectRepository(Repository[Project]):
            model = Project

            @cached_lookup("slug")
            def get_by_slug(self, slug: str) -> Project | None: ...
    """
    if not fields or not all(isinstance(name, str) and name for name in fields):
        raise TypeError("cached_lookup takes the names of the fields a lookup is keyed by")

    def declare(method: F) -> F:
        return cast(F, _CachedLookup(method, tuple(fields), values))

    return declare
