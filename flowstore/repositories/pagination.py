"""Keyset (cursor) pagination: every page costs what the first one does.

``OFFSET n`` makes the database produce and throw away ``n`` rows, so deep pages get slower
the deeper they are. A cursor instead names the last row seen by its position in the stable
order every list has (creation time, then id), and the next page is "the rows after it":
``created_at > t OR (created_at = t AND id > i)``, which an index on the filtered columns and
``created_at`` answers directly. Rows with equal ``created_at`` are ordered by ``id``, so
pages neither overlap nor skip rows; rows inserted meanwhile are seen if they sort after the
cursor.

A cursor is an opaque, URL-safe string: clients hand it back unchanged. It carries only a
position (the table, ``created_at`` and key of one row), never a filter, so it grants
nothing: the filters of the call still apply. A model without ``created_at`` lists and pages
in key order.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, and_, inspect, or_

from flowstore.errors import InvalidInputError
from flowstore.repositories.keys import key_attribute, key_for

__all__ = [
    "Page",
    "after_clause",
    "check_page",
    "decode_cursor",
    "encode_cursor",
    "fetch_page",
    "position_clause",
]

T = TypeVar("T")

_VERSION = 1


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its ``items`` and the cursor of the next page (``None``: the last)."""

    items: list[T]
    next_cursor: str | None


def check_page(name: str, value: int | None) -> int | None:
    """A ``limit`` or ``offset``: ``None``, or a non-negative 64-bit integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidInputError(f"{name} must be a non-negative 64-bit integer")
    return value


def fetch_page(limit: int, fetch: Callable[[int], list[T]]) -> Page[T]:
    """One page of at most ``limit`` items: ``fetch(n)`` returns up to ``n`` in page order; one
    item more than the page tells whether a next page exists (no count query)."""
    size = check_page("limit", limit)
    if not size:
        raise InvalidInputError("limit must be at least 1")
    items = fetch(size + 1)
    more = len(items) > size
    del items[size:]
    return Page(items, encode_cursor(items[-1]) if more else None)


def _has_created_at(model: type[Any]) -> bool:
    return "created_at" in inspect(model).column_attrs


def _key_json(key: Any) -> Any:
    if isinstance(key, uuid.UUID):
        return key.hex
    if isinstance(key, int | str) and not isinstance(key, bool):
        return key
    raise InvalidInputError(
        "a cursor is made from a stored entity (with a UUID, integer or text key)"
    )


def encode_cursor(entity: Any) -> str:
    """The cursor just after ``entity`` (a stored entity: it has its key, and ``created_at``
    when its model has one) in its model's default order."""
    model = type(entity)
    key = inspect(entity).dict.get(key_attribute(model).key)
    created_at = getattr(entity, "created_at", None) if _has_created_at(model) else None
    if key is None or (_has_created_at(model) and not isinstance(created_at, datetime)):
        raise InvalidInputError("a cursor is made from a stored entity (with its key)")
    stamp = created_at.isoformat() if created_at is not None else None
    payload = [_VERSION, entity.__table__.name, stamp, _key_json(key)]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(model: type[Any], cursor: Any) -> tuple[datetime | None, Any]:
    """The ``(created_at, key)`` position in ``cursor`` (``created_at`` is ``None`` for a model
    without one); ``InvalidInputError`` for anything that is not a cursor of ``model``'s table."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 512:
        raise InvalidInputError("after takes a cursor string from an earlier page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, table, created, ident = json.loads(raw)
        created_at = datetime.fromisoformat(created) if created is not None else None
    except (binascii.Error, ValueError, TypeError, AttributeError):
        raise InvalidInputError("after: not a valid cursor") from None
    if version != _VERSION or (created_at is not None and created_at.tzinfo is None):
        raise InvalidInputError("after: not a valid cursor")
    if table != model.__table__.name:
        raise InvalidInputError(f"after: this cursor belongs to {table!r}, not to this list")
    if (created_at is None) == _has_created_at(model):
        raise InvalidInputError("after: not a valid cursor")
    key = key_for(model, ident)
    if key is None:
        raise InvalidInputError("after: not a valid cursor")
    return created_at, key


def after_clause(model: type[Any], cursor: str, *, descending: bool = False) -> ColumnElement[bool]:
    """Rows after ``cursor`` in ``(created_at, key)`` order (before it when ``descending``);
    in key order for a model without ``created_at``.

    The redundant bound on ``created_at`` alone lets the database use an index range on it;
    the OR then settles rows sharing the cursor's ``created_at``.
    """
    created_at, key = decode_cursor(model, cursor)
    return position_clause(model, created_at, key, descending=descending)


def position_clause(
    model: type[Any], created_at: Any, key: Any, *, descending: bool = False
) -> ColumnElement[bool]:
    """Rows after the position ``(created_at, key)`` (before it when ``descending``), as in
    ``after_clause``; ``created_at`` is ``None`` for a model without one. The position is
    given as values, or as bound parameters (``flowstore.repositories.shapes``)."""
    ident = key_attribute(model)
    if created_at is None:
        return cast("ColumnElement[bool]", ident < key if descending else ident > key)
    column = model.created_at
    if descending:
        return and_(column <= created_at, or_(column < created_at, ident < key))
    return and_(column >= created_at, or_(column > created_at, ident > key))
