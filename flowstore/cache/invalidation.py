"""Invalidating the cache around a commit: hold the changed items before ``COMMIT``, release
them after it, before ``commit()`` returns (``flowstore.cache.client`` says why both).

The items a transaction changed are the entity keys of every row it updated or deleted
(inserted rows were never cached: the cache keeps no "not found") and the lookup keys of their
unique values as they were and as they are (a rotated API key's old hash, an organization's
old slug), for the lookups declared on the model.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from flowstore.cache.reads import cache_of, entity_key, lookup_key
from flowstore.events import writer
from flowstore.events.capture import Change, Pending, lookups_of
from flowstore.sessions import FlowstoreSession

__all__ = ["changed_keys"]

_HELD = "flowstore.cache.held"


def _lookup_values(change: Change, fields: tuple[str, ...], old: bool) -> list[Any] | None:
    values = []
    for name in fields:
        if old and change.old is not None and name in change.old:
            value = change.old[name]
        else:
            value = change.row.get(name)
        if value is None:
            return None
        values.append(value)
    return values


def changed_keys(cache: Any, changes: list[Change]) -> list[str]:
    """The cache items that ``changes`` make stale."""
    keys: set[str] = set()
    for change in changes:
        if change.kind == "created" or change.key is None:
            continue
        keys.add(entity_key(cache, change.model, change.key))
        for fields in lookups_of(change.model):
            for old in (True, False):
                values = _lookup_values(change, fields, old)
                if values is not None:
                    keys.add(lookup_key(cache, change.model, fields, values))
    return sorted(keys)


def _hold(session: Session, changes: Pending) -> None:
    """Before COMMIT: hold every item the transaction changed."""
    cache = cache_of(session)
    if cache is None:
        return
    keys = changed_keys(cache, changes.changes)
    if keys:
        session.info[_HELD] = keys
        cache.hold(keys)


def _release(session: Session) -> None:
    """After COMMIT (or a failed one): release the held items; the last release deletes them."""
    keys = session.info.pop(_HELD, None)
    cache = cache_of(session)
    if keys and cache is not None:
        cache.release(keys)


def _after_soft_rollback(session: Session, previous: Any) -> None:
    if previous.parent is None:
        _release(session)


writer.BEFORE_COMMIT.append(_hold)
event.listen(FlowstoreSession, "after_commit", _release)
event.listen(FlowstoreSession, "after_soft_rollback", _after_soft_rollback)
