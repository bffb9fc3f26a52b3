"""The statements a repository reads with: its filters, its order, its pages.

Lists come in a stable order: creation time then key where the model has ``created_at``, else
key order; an ``order_by`` of the caller's gets the key as the last tie-breaker, so pages never
overlap. Filter values are checked and converted as the column takes them
(``flowstore.validation``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, inspect

from flowstore.errors import InvalidInputError, describe
from flowstore.repositories.keys import key_attribute
from flowstore.repositories.pagination import after_clause, check_page
from flowstore.spec import Spec
from flowstore.validation import coerce_value, column_for

__all__ = ["OrderBy", "criteria", "ordering", "paged"]

#: A field name, or several; ``-name`` orders that field descending.
OrderBy = str | Sequence[str] | None


def criteria(
    model: type[Any], specs: Sequence[Spec], filters: Mapping[str, Any]
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``specs`` and of ``filters`` (``field=value``; ``None`` is NULL)."""
    clauses: list[ColumnElement[bool]] = []
    for spec in specs:
        if not isinstance(spec, Spec):
            raise InvalidInputError(f"expected a Spec, got {type(spec).__name__}")
        clauses.append(spec.to_clause(model))
    for name, value in filters.items():
        column = column_for(model, name)
        coerced = coerce_value(column, name, value)
        clauses.append(column.is_(None) if coerced is None else column == coerced)
    return clauses


def paged(
    model: type[Any],
    stmt: Select[Any],
    limit: int | None,
    offset: int | None,
    order_by: OrderBy,
    after: str | None = None,
) -> Select[Any]:
    """``stmt`` ordered, and cut to the page: ``limit``/``offset``, or the rows ``after`` a
    cursor (in the default order only)."""
    if after is not None:
        if order_by is not None or offset:
            raise InvalidInputError("after pages in the default order, without offset")
        stmt = stmt.where(after_clause(model, after))
    stmt = stmt.order_by(*ordering(model, order_by))
    limit, offset = check_page("limit", limit), check_page("offset", offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


def ordering(model: type[Any], order_by: OrderBy) -> list[Any]:
    """The ORDER BY clauses for ``order_by`` (``None``: the default order)."""
    key = key_attribute(model)
    if order_by is None:
        if "created_at" in inspect(model).column_attrs:
            return [model.created_at, key]
        return [key]
    if not isinstance(order_by, str | list | tuple):
        raise InvalidInputError("order_by takes a field name or a list of them")
    names = [order_by] if isinstance(order_by, str) else list(order_by)
    clauses: list[Any] = []
    for name in names:
        if not isinstance(name, str) or not name.lstrip("-"):
            raise InvalidInputError(f"order_by takes field names, got {describe(name)}")
        column = column_for(model, name.lstrip("-"))
        clauses.append(column.desc() if name.startswith("-") else column.asc())
    if key.key not in {n.lstrip("-") for n in names}:
        clauses.append(key)  # a unique tie-breaker keeps pages from overlapping
    return clauses
