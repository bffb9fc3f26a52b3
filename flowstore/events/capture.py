"""Row changes captured in a session as they are written, kept until its transaction ends.

A store that records events or keeps a cache puts a :class:`Recording` in its sessions'
``info``; then every flush of models on ``flowstore.models.Base`` adds a :class:`Change` per
inserted, updated or deleted object (with the changed fields' old and new values), and the
repositories' statement paths (``add_many``'s bulk insert, ``upsert``, ``update_many``,
``delete_many``) add theirs through :func:`record`. Deleting a row also records the rows the
database deletes with it (foreign keys ``ON DELETE CASCADE``), read just before.

Changes belong to the transaction they were made in: those of a savepoint that is rolled back
are dropped, and a rollback of the whole transaction drops them all. At commit
(``flowstore.events.writer``) they become event rows and cache invalidations.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import event, inspect
from sqlalchemy.orm import Mapper, Session, SessionTransaction, UOWTransaction
from sqlalchemy.orm.base import NO_VALUE

from flowstore.events.cascades import cascaded_rows
from flowstore.models.base import Base, tenant_column
from flowstore.sessions import FlowstoreSession

__all__ = [
    "RECORDING",
    "Change",
    "ModelOptions",
    "Pending",
    "Recording",
    "bulk_aware",
    "lookup_columns",
    "lookups_of",
    "model_options",
    "pending",
    "record",
    "recording",
    "register_lookup",
    "row_change",
]

#: The ``Session.info`` key of a store's :class:`Recording`.
RECORDING = "flowstore.recording"
_PENDING = "flowstore.pending_changes"
_CASCADED = "flowstore.cascaded_changes"

Kind = Literal["created", "updated", "deleted"]


@dataclass(frozen=True)
class Recording:
    """What a store does with its sessions' changes: write events, invalidate a cache."""

    events: bool = True
    cache: Any = None  # a flowstore.cache.client.Cache, or None


@dataclass(frozen=True)
class ModelOptions:
    """A model's event settings, declared on the class.

    ``__events__ = False`` opts a model out of change events (flowstore's ``Job`` does);
    ``__secret_fields__`` names fields whose values never leave the database in an event
    (``Application.api_key_hash``); ``__event_name__`` overrides the snake-case name.
    """

    name: str
    events: bool
    secret: frozenset[str]
    key: str  # the primary-key attribute
    columns: tuple[str, ...]  # every column attribute
    tenant: str | None
    version: str | None


@dataclass
class Change:
    """One row inserted, updated or deleted: ``old``/``new`` hold the fields known (for an
    update, those that changed; ``old`` is ``None`` when the statement could not know it)."""

    model: type[Any]
    key: Any
    kind: Kind
    org_id: uuid.UUID | None
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    changed: tuple[str, ...] = ()
    row: dict[str, Any] = field(default_factory=dict)  # every field known, after the change


@dataclass
class Pending:
    """The changes and published domain events of one session's current transaction."""

    changes: list[Change] = field(default_factory=list)
    published: list[tuple[str, dict[str, Any], str | None, uuid.UUID | None]] = field(
        default_factory=list
    )
    marks: dict[SessionTransaction, tuple[int, int]] = field(default_factory=dict)
    # the savepoint that ended last, and its mark: a rollback reports after the end
    ended: tuple[SessionTransaction, tuple[int, int]] | None = None

    def __bool__(self) -> bool:
        return bool(self.changes or self.published)

    def clear(self) -> None:
        self.changes.clear()
        self.published.clear()
        self.marks.clear()
        self.ended = None


_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


_OPTIONS: dict[type[Any], ModelOptions] = {}


def model_options(model: type[Any]) -> ModelOptions:
    """The event settings of ``model`` (see :class:`ModelOptions`)."""
    known = _OPTIONS.get(model)
    if known is None:
        known = _OPTIONS[model] = _options(model)
    return known


def _options(model: type[Any]) -> ModelOptions:
    mapper: Mapper[Any] = inspect(model)
    name = getattr(model, "__event_name__", None) or _SNAKE.sub("_", model.__name__).lower()
    secret = frozenset(getattr(model, "__secret_fields__", ()))
    columns = tuple(prop.key for prop in mapper.column_attrs)
    unknown = secret - set(columns)
    if unknown:
        raise TypeError(f"{model.__name__}.__secret_fields__ names no column: {sorted(unknown)}")
    version = mapper.version_id_col
    return ModelOptions(
        name=str(name),
        events=bool(getattr(model, "__events__", True)),
        secret=secret,
        key=mapper.get_property_by_column(mapper.primary_key[0]).key,
        columns=columns,
        tenant=tenant_column(mapper),
        version=mapper.get_property_by_column(version).key if version is not None else None,
    )


_LOOKUPS: dict[type[Any], set[tuple[str, ...]]] = {}


def register_lookup(model: type[Any], fields: Sequence[str]) -> None:
    """Note that a cache keeps ``model`` rows by these fields too (``flowstore.cache``): its
    invalidations cover them, and a statement that changes one reads the old values first."""
    _LOOKUPS.setdefault(model, set()).add(tuple(fields))


def lookups_of(model: type[Any]) -> set[tuple[str, ...]]:
    """The field tuples cached lookups of ``model`` are keyed by."""
    return _LOOKUPS.get(model, set())


def lookup_columns(model: type[Any]) -> set[str]:
    """The fields of ``model`` that cached lookups are keyed by."""
    return {name for fields in _LOOKUPS.get(model, ()) for name in fields}


def recording(session: Session) -> Recording | None:
    """The store's recording for ``session``, or ``None`` when it records nothing."""
    found = session.info.get(RECORDING)
    return found if isinstance(found, Recording) else None


def pending(session: Session) -> Pending:
    """The changes recorded so far in ``session``'s transaction."""
    found = session.info.get(_PENDING)
    if found is None:
        found = session.info[_PENDING] = Pending()
    return found  # type: ignore[no-any-return,unused-ignore]


def _tracked(model: type[Any]) -> bool:
    mapper = inspect(model, raiseerr=False)
    return isinstance(mapper, Mapper) and mapper.registry is Base.registry


def _org(options: ModelOptions, values: dict[str, Any]) -> uuid.UUID | None:
    if options.tenant is None:
        return None
    value = values.get(options.tenant)
    return value if isinstance(value, uuid.UUID) else None


def row_change(
    model: type[Any],
    kind: Kind,
    values: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    changed: Sequence[str] = (),
) -> Change:
    """A change of one row of ``model`` from its column values (``values``: the row as it is
    after the change, or as it was before a deletion)."""
    options = model_options(model)
    known = {name: values[name] for name in options.columns if name in values}
    key, org = known.get(options.key), _org(options, known)
    if kind == "deleted":
        return Change(model, key, kind, org, known, None, (), known)
    if kind == "created":
        return Change(model, key, kind, org, None, known, (), known)
    new = {name: known[name] for name in changed if name in known}
    return Change(model, key, kind, org, old, new, tuple(changed), known)


def record(session: Session, changes: Iterable[Change]) -> None:
    """Add changes made by statements (not a flush) to ``session``'s transaction."""
    if recording(session) is not None:
        pending(session).changes.extend(changes)


def bulk_aware(listener: Any) -> Any:
    """Mark a session listener that ``add_many``'s bulk path may bypass: it records what the
    bulk path writes itself (``flowstore.repositories.bulk``)."""
    listener.flowstore_bulk_aware = True
    return listener


# -- the flush -----------------------------------------------------------------------------


def _object_change(mapper: Mapper[Any], instance: object, kind: Kind) -> Change | None:
    state = inspect(instance)
    values = state.dict
    if kind != "updated":
        return row_change(mapper.class_, kind, values)
    options = model_options(mapper.class_)
    changed: list[str] = []
    old: dict[str, Any] = {}
    for name in state.committed_state:
        if name not in values or name == options.version or name not in mapper.column_attrs:
            continue
        history = state.attrs[name].history
        if not history.has_changes():
            continue
        before = history.deleted[0] if history.deleted else NO_VALUE
        if before is not NO_VALUE and history.added and before == history.added[0]:
            continue  # set to the value it had
        changed.append(name)
        if before is not NO_VALUE:
            old[name] = before
    if not changed:
        return None
    return row_change(mapper.class_, "updated", values, old=old, changed=changed)


@bulk_aware
def _before_flush(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    """Read the rows the database will delete along with the deleted objects (cascades)."""
    if recording(session) is None:
        return
    session.info.pop(_CASCADED, None)
    deleted = [obj for obj in session.deleted if _tracked(type(obj))]
    if not deleted:
        return
    by_model: dict[type[Any], list[Any]] = {}
    for obj in deleted:
        by_model.setdefault(type(obj), []).append(inspect(obj).identity[0])  # type: ignore[index,unused-ignore]
    with session.no_autoflush:
        cascaded = [row_change(m, "deleted", v) for m, v in cascaded_rows(session, by_model)]
    if cascaded:
        session.info[_CASCADED] = cascaded


@bulk_aware
def _after_flush(session: Session, _context: UOWTransaction) -> None:
    """Record a change per flushed object of a model on ``Base``."""
    if recording(session) is None:
        return
    found: list[Change] = []
    for kind, objects in (
        ("created", session.new),
        ("updated", session.dirty),
        ("deleted", session.deleted),
    ):
        for obj in objects:
            mapper = inspect(type(obj), raiseerr=False)
            if not isinstance(mapper, Mapper) or mapper.registry is not Base.registry:
                continue
            if kind == "updated" and not session.is_modified(obj):
                continue
            change = _object_change(mapper, obj, kind)  # type: ignore[arg-type]
            if change is not None:
                found.append(change)
    found.extend(session.info.pop(_CASCADED, ()))
    if found:
        pending(session).changes.extend(found)


# -- savepoints and the end of the transaction ---------------------------------------------


@bulk_aware
def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if recording(session) is None:
        return
    if transaction.parent is None:
        pending(session).clear()
    elif transaction.nested:
        found = pending(session)
        found.marks[transaction] = (len(found.changes), len(found.published))


@bulk_aware
def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    """Drop what the rolled-back transaction (or savepoint) recorded."""
    found = session.info.get(_PENDING)
    if not found:
        return
    boundary: SessionTransaction | None = previous
    while boundary is not None and not boundary.nested and boundary.parent is not None:
        boundary = boundary.parent
    if boundary is None or boundary.parent is None:
        found.clear()
        return
    mark = found.marks.pop(boundary, None)
    if mark is None and found.ended is not None and found.ended[0] is boundary:
        mark = found.ended[1]
    if mark is not None:
        del found.changes[mark[0] :]
        del found.published[mark[1] :]


@bulk_aware
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    found = session.info.get(_PENDING)
    if found is None:
        return
    if transaction.parent is None:
        found.clear()
        return
    mark = found.marks.pop(transaction, None)
    found.ended = None if mark is None else (transaction, mark)


event.listen(FlowstoreSession, "before_flush", _before_flush)
event.listen(FlowstoreSession, "after_flush", _after_flush)
event.listen(FlowstoreSession, "after_transaction_create", _after_transaction_create)
event.listen(FlowstoreSession, "after_soft_rollback", _after_soft_rollback)
event.listen(FlowstoreSession, "after_transaction_end", _after_transaction_end)
