"""Composable query specifications: ``where(field, op, value)`` combined with ``&``, ``|``, ``~``.

A spec is a small immutable tree; it is compiled against a model only when a repository runs
it, so the same spec serves every repository that has the field. Field names and values are
checked at compile time and refused with ``InvalidInputError``: values always travel as bound
parameters, never as SQL text.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, and_, inspect, not_, or_
from sqlalchemy.orm import ColumnProperty
from sqlalchemy.sql.sqltypes import JSON

from flowstore.errors import InvalidInputError

__all__ = ["OPERATORS", "Spec", "coerce_value", "column_for", "where"]

OPERATORS: Final = frozenset(
    {"==", "!=", "<", "<=", ">", ">=", "in", "like", "contains", "startswith"}
)
_ESCAPE: Final = "\\"
_MAX_IN: Final = 10_000


class Spec:
    """A predicate over a model; build one with :func:`where`."""

    def __and__(self, other: Spec) -> Spec:
        return _Bool("and", (self, _check_spec(other)))

    def __or__(self, other: Spec) -> Spec:
        return _Bool("or", (self, _check_spec(other)))

    def __invert__(self) -> Spec:
        return _Not(self)

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        """Compile into a SQLAlchemy boolean clause over ``model``'s columns."""
        raise NotImplementedError


def _check_spec(other: object) -> Spec:
    if not isinstance(other, Spec):
        raise InvalidInputError(f"cannot combine a Spec with {type(other).__name__}")
    return other


@dataclass(frozen=True, repr=False)
class _Where(Spec):
    field: str
    op: str
    value: Any

    def __repr__(self) -> str:
        return f"where({self.field!r}, {self.op!r}, {self.value!r})"

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        column = column_for(model, self.field)
        op, value = self.op, self.value
        if op == "in":
            if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
                raise InvalidInputError(f"'in' on {self.field!r} takes a list of values")
            values = [coerce_value(column, self.field, v) for v in value]
            if len(values) > _MAX_IN:
                raise InvalidInputError(f"'in' takes at most {_MAX_IN} values")
            return cast("ColumnElement[bool]", column.in_(values))
        if op in {"like", "contains", "startswith"}:
            if not isinstance(value, str):
                raise InvalidInputError(f"{op!r} on {self.field!r} takes a string")
            _check_text(self.field, value)
            if op == "like":
                return cast("ColumnElement[bool]", column.like(value))
            if op == "contains":
                return cast("ColumnElement[bool]", column.contains(value, autoescape=True))
            return cast("ColumnElement[bool]", column.startswith(value, autoescape=True))
        coerced = coerce_value(column, self.field, value)
        if coerced is None and op in {"==", "!="}:
            return cast(
                "ColumnElement[bool]", column.is_(None) if op == "==" else column.is_not(None)
            )
        if coerced is None:
            raise InvalidInputError(f"{op!r} on {self.field!r} cannot compare with None")
        comparisons = {
            "==": column.__eq__,
            "!=": column.__ne__,
            "<": column.__lt__,
            "<=": column.__le__,
            ">": column.__gt__,
            ">=": column.__ge__,
        }
        return cast("ColumnElement[bool]", comparisons[op](coerced))


@dataclass(frozen=True, repr=False)
class _Bool(Spec):
    kind: str
    parts: tuple[Spec, Spec]

    def __repr__(self) -> str:
        sign = "&" if self.kind == "and" else "|"
        return f"({self.parts[0]!r} {sign} {self.parts[1]!r})"

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        clauses = [part.to_clause(model) for part in self.parts]
        return and_(*clauses) if self.kind == "and" else or_(*clauses)


@dataclass(frozen=True, repr=False)
class _Not(Spec):
    inner: Spec

    def __repr__(self) -> str:
        return f"~{self.inner!r}"

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        return not_(self.inner.to_clause(model))


def where(field: str, op: str, value: Any) -> Spec:
    """A predicate ``field <op> value``; ops: ``== != < <= > >= in like contains startswith``.

    ``like`` takes an SQL LIKE pattern as given; ``contains`` and ``startswith`` match the value
    literally (its ``%``, ``_`` and ``\\`` are escaped).
    """
    if not isinstance(field, str) or not field:
        raise InvalidInputError("a spec's field must be a non-empty string")
    if op not in OPERATORS:
        raise InvalidInputError(f"unknown operator {op!r}; use one of {sorted(OPERATORS)}")
    return _Where(field, op, value)


def column_for(model: type[Any], field: str) -> Any:
    """The mapped column attribute ``model.field``, or ``InvalidInputError`` if there is none."""
    if not isinstance(field, str):
        raise InvalidInputError(f"field names are strings, not {type(field).__name__}")
    prop = inspect(model).attrs.get(field)
    if not isinstance(prop, ColumnProperty):
        raise InvalidInputError(f"{model.__name__} has no field {field!r}")
    return getattr(model, field)


def _check_text(field: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidInputError(f"{field!r}: text may not contain NUL characters")


def coerce_value(column: Any, field: str, value: Any) -> Any:
    """Check (and where unambiguous convert) ``value`` for ``column``'s type.

    Refusing a value here gives the caller a clear ``InvalidInputError`` instead of a driver
    error, and keeps the behaviour the same on every dialect.
    """
    if value is None:
        return None
    sql_type = column.type
    if isinstance(sql_type, JSON):
        raise InvalidInputError(f"{field!r} is a JSON field; it cannot be compared directly")
    try:
        python_type = sql_type.python_type
    except NotImplementedError:
        return value
    if issubclass(python_type, enum.Enum):
        try:
            return python_type(value.value if isinstance(value, enum.Enum) else value)
        except (ValueError, TypeError):
            allowed = ", ".join(str(m.value) for m in python_type)
            raise InvalidInputError(f"{field!r} must be one of: {allowed}") from None
    if python_type is uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                raise InvalidInputError(f"{field!r} must be a UUID") from None
        raise InvalidInputError(f"{field!r} must be a UUID")
    if python_type is bool:
        if isinstance(value, bool):
            return value
        raise InvalidInputError(f"{field!r} must be a bool")
    if python_type is int:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
            return value
        raise InvalidInputError(f"{field!r} must be an integer within 64 bits")
    if python_type is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise InvalidInputError(f"{field!r} must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{field!r} must be a finite number")
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise InvalidInputError(f"{field!r} must be a finite number")
        return number
    if python_type is datetime:
        if not isinstance(value, datetime):
            raise InvalidInputError(f"{field!r} must be a datetime")
        if value.tzinfo is None:
            raise InvalidInputError(f"{field!r} must be a timezone-aware datetime")
        return value
    if python_type is str:
        if not isinstance(value, str):
            raise InvalidInputError(f"{field!r} must be a string")
        _check_text(field, value)
        return value
    return value
