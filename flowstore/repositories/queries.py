"""The statements a repository reads with: its filters, its order, its pages.

Lists come in a stable order: creation time then key where the model has ``created_at``, else
key order; an ``order_by`` of the caller's gets the key as the last tie-breaker, so pages never
overlap. Filter values are checked and converted as the column takes them
(``flowstore.validation``). A list with field filters only (no specs) runs the statement kept
for its shape with its values bound (``list_statement``, ``flowstore.repositories.shapes``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, inspect, select
from sqlalchemy.sql import operators

from flowstore.errors import InvalidInputError, describe
from flowstore.repositories.keys import key_attribute
from flowstore.repositories.pagination import (
    after_clause,
    check_page,
    decode_cursor,
    position_clause,
)
from flowstore.repositories.shapes import Binder, planned, value_check
from flowstore.spec import Spec
from flowstore.validation import coerce_value, column_for

__all__ = ["OrderBy", "criteria", "list_statement", "ordering", "paged"]

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
        _check_after(order_by, offset)
        stmt = stmt.where(after_clause(model, after))
    stmt = stmt.order_by(*ordering(model, order_by))
    limit, offset = check_page("limit", limit), check_page("offset", offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


def _check_after(order_by: OrderBy, offset: Any) -> None:
    if order_by is not None or offset:
        raise InvalidInputError("after pages in the default order, without offset")


def list_statement(
    model: type[Any],
    filters: Mapping[str, Any],
    limit: int | None,
    offset: int | None,
    order_by: OrderBy,
    after: str | None,
) -> tuple[Select[Any], dict[str, Any]]:
    """``list()``'s statement of ``model`` without specs, and its parameters: what
    ``paged(model, select(model).where(*criteria(model, (), filters)), ...)`` makes and checks
    (the same errors, in the same order), from the statement kept for its shape
    (``flowstore.repositories.shapes``)."""
    order = _order_key(order_by)
    if order is None or not (_count(limit) and _count(offset) and _text(after)):
        # the unusual (and the wrong) calls: built and checked as ever
        stmt = select(model).where(*criteria(model, (), filters))
        return paged(model, stmt, limit, offset, order_by, after), {}
    values: list[Any] = []
    nulls: list[bool] = []
    for name, value in filters.items():
        check = value_check(model, name)[1]
        nulls.append(value is None)
        if value is not None:
            values.append(check(value))
    if after is not None:
        _check_after(order_by, offset)
        values.extend(value for value in decode_cursor(model, after) if value is not None)
    if limit is not None:
        values.append(limit)
    if offset:
        values.append(offset)
    shape: tuple[Any, ...] = ("list", model, tuple(filters), tuple(nulls), order)
    shape += (after is not None, limit is not None, bool(offset))
    return planned(shape, functools.partial(_list_shape, model, shape)).bind(values)


def _list_shape(model: type[Any], shape: tuple[Any, ...], binder: Binder) -> Select[Any]:
    """The statement of a ``list_statement`` shape."""
    _, _, names, nulls, order, after, limit, offset = shape
    clauses: list[ColumnElement[bool]] = []
    for name, null in zip(names, nulls, strict=True):
        column = value_check(model, name)[0]
        clauses.append(column.is_(None) if null else binder.compare(column, operators.eq))
    if after:
        ident = key_attribute(model)
        created_at = None
        if "created_at" in inspect(model).column_attrs:
            created_at = binder.value(model.created_at, operators.ge, operators.gt)
        clauses.append(position_clause(model, created_at, binder.value(ident, operators.gt)))
    stmt = select(model).where(*clauses).order_by(*ordering(model, order or None))
    if limit:
        stmt = stmt.limit(binder.count())
    if offset:
        stmt = stmt.offset(binder.count())
    return stmt


def _order_key(order_by: OrderBy) -> tuple[str, ...] | None:
    """``order_by`` as a shape's part (``()``: the default order); ``None`` when it is not a
    field name or a list of them."""
    if order_by is None:
        return ()
    if isinstance(order_by, str):
        return (order_by,)
    names = order_by if isinstance(order_by, list | tuple) else ()
    if names and all(isinstance(name, str) for name in names):
        return tuple(names)
    return None


def _count(value: Any) -> bool:
    """Whether ``value`` is ``None`` or a limit or offset ``check_page`` takes."""
    return value is None or (type(value) is int and 0 <= value < 2**63)


def _text(value: Any) -> bool:
    return value is None or type(value) is str


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
