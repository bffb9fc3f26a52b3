"""The few SQLAlchemy details flowstore reads that have no public name, fenced in one place
(the ORM internals the fast write path sets are fenced in ``flowstore.writes.attach``).

Each has a safe answer when a SQLAlchemy release changes it: callers fail closed (a tenant
check refuses what it cannot read) or take a public route. ``tests/test_sa_contract.py``
checks every one against the installed release, so a change is noticed at once, not when a
check quietly stops working. The supported range is pyproject's (2.0.36 up to 2.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import sqlalchemy

__all__ = [
    "SA_VERSION",
    "await_in_greenlet",
    "is_orm_annotated",
    "update_set_keys",
]

R = TypeVar("R")

SA_VERSION = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2])

try:  # SQLAlchemy 2.1
    from sqlalchemy.util import await_ as _await
except ImportError:  # 2.0 names it await_only
    from sqlalchemy.util import await_only as _await


def await_in_greenlet(awaitable: Awaitable[R]) -> R:
    """Await ``awaitable`` from sync code that runs in SQLAlchemy's async greenlet (a pool's
    checkout on an async engine, a repository call on the async face)."""
    return _await(awaitable)


def update_set_keys(statement: Any) -> set[str] | None:
    """The names an UPDATE statement's SET clause assigns (column keys or names), or ``None``
    when they cannot be read (the caller must then assume the worst).

    SQLAlchemy keeps them in ``UpdateBase._values`` (``.values()``, ``ordered_values()`` in
    2.1) and ``_ordered_values`` (``ordered_values()`` in 2.0); there is no public accessor.
    """
    values = getattr(statement, "_values", _MISSING)
    ordered = getattr(statement, "_ordered_values", None)
    if values is _MISSING or not (values is None or isinstance(values, Mapping)):
        return None
    keys: list[Any] = list(values or ())
    if ordered is not None:
        try:
            keys += [key for key, _value in ordered]
        except (TypeError, ValueError):
            return None
    if getattr(statement, "_multi_values", ()):
        return None
    names: set[str] = set()
    for key in keys:
        name = key if isinstance(key, str) else getattr(key, "key", getattr(key, "name", None))
        if not isinstance(name, str):
            return None
        names.add(name)
    return names


def is_orm_annotated(element: Any) -> bool:
    """Whether a statement element came from a mapped class (``Model.column``, an aliased
    entity), not from a plain ``Table``. SQLAlchemy marks such elements with a
    ``parententity`` annotation in ``_annotations``; without it, an element counts as plain."""
    annotations = getattr(element, "_annotations", None)
    return isinstance(annotations, Mapping) and "parententity" in annotations


_MISSING: Any = object()
