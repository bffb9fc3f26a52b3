"""Composable query specifications: ``where(field, op, value)`` combined with ``&``, ``|``, ``~``.

A spec is a small immutable tree; it is compiled against a model only when a repository runs
it, so the same spec serves every repository that has the field. Field names and values are
checked at compile time and refused with ``InvalidInputError``: values always travel as bound
parameters, never as SQL text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, String, and_, literal, not_, or_

from flowstore.errors import InvalidInputError
from flowstore.sql_functions import lower_text
from flowstore.validation import (
    check_entity,
    check_json,
    check_text,
    coerce_value,
    column_checks,
    column_for,
    python_type,
)

__all__ = [
    "OPERATORS",
    "Spec",
    "check_entity",
    "check_json",
    "coerce_value",
    "column_checks",
    "column_for",
    "where",
]

OPERATORS: Final = frozenset(
    {
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "in",
        "like",
        "contains",
        "startswith",
        "icontains",
        "istartswith",
    }
)
_TEXT_OPERATORS: Final = frozenset({"like", "contains", "startswith", "icontains", "istartswith"})
_ESCAPE: Final = "\\"
_MAX_IN: Final = 10_000
_MAX_DEPTH: Final = 32  # nesting of & | ~ (chains of one operator are flattened)
_MAX_TERMS: Final = 256  # where() leaves in one spec
_MAX_PATTERN: Final = 10_000  # a LIKE pattern on a column without a declared length


class Spec:
    """A predicate over a model; build one with :func:`where`."""

    depth: int = 1
    terms: int = 1

    def __and__(self, other: Spec) -> Spec:
        return _combine("and", self, _check_spec(other))

    def __or__(self, other: Spec) -> Spec:
        return _combine("or", self, _check_spec(other))

    def __invert__(self) -> Spec:
        return _checked_size(_Not(self))

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        """Compile into a SQLAlchemy boolean clause over ``model``'s columns."""
        raise NotImplementedError


def _check_spec(other: object) -> Spec:
    if not isinstance(other, Spec):
        raise InvalidInputError(f"cannot combine a Spec with {type(other).__name__}")
    return other


def _combine(kind: str, left: Spec, right: Spec) -> Spec:
    """``left <kind> right``, with chains of one operator kept flat (``a & b & c`` is one node),
    so long chains neither nest deeply nor overflow the compiler's recursion."""
    parts: list[Spec] = []
    for side in (left, right):
        parts.extend(side.parts if isinstance(side, _Bool) and side.kind == kind else (side,))
    return _checked_size(_Bool(kind, tuple(parts)))


def _checked_size(spec: Spec) -> Spec:
    if spec.depth > _MAX_DEPTH:
        raise InvalidInputError(f"a spec may nest at most {_MAX_DEPTH} levels deep")
    if spec.terms > _MAX_TERMS:
        raise InvalidInputError(f"a spec may hold at most {_MAX_TERMS} conditions")
    return spec


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
        if op in _TEXT_OPERATORS:
            if not isinstance(value, str):
                raise InvalidInputError(f"{op!r} on {self.field!r} takes a string")
            _check_pattern(column, self.field, op, value)
            return _text_match(column, op, value)
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
    parts: tuple[Spec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", 1 + max(part.depth for part in self.parts))
        object.__setattr__(self, "terms", sum(part.terms for part in self.parts))

    def __repr__(self) -> str:
        sign = " & " if self.kind == "and" else " | "
        return f"({sign.join(repr(part) for part in self.parts)})"

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        clauses = [part.to_clause(model) for part in self.parts]
        return and_(*clauses) if self.kind == "and" else or_(*clauses)


@dataclass(frozen=True, repr=False)
class _Not(Spec):
    inner: Spec

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", 1 + self.inner.depth)
        object.__setattr__(self, "terms", self.inner.terms)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"

    def to_clause(self, model: type[Any]) -> ColumnElement[bool]:
        return not_(self.inner.to_clause(model))


def where(field: str, op: str, value: Any) -> Spec:
    """A predicate ``field <op> value``; ops: ``== != < <= > >= in like contains startswith
    icontains istartswith``.

    ``like`` takes an SQL LIKE pattern as given, with ``\\`` as its escape character on every
    backend (``\\%`` matches a literal ``%``); ``contains`` and ``startswith`` match the value
    literally (its ``%``, ``_`` and ``\\`` are escaped) and respect case on every backend;
    ``icontains`` and ``istartswith`` do the same ignoring case (Unicode lower case, the same
    on every backend). They work on text fields only.
    """
    if not isinstance(field, str) or not field:
        raise InvalidInputError("a spec's field must be a non-empty string")
    if not isinstance(op, str) or op not in OPERATORS:
        raise InvalidInputError(f"unknown operator {op!r}; use one of {sorted(OPERATORS)}")
    return _Where(field, op, value)


def _escaped(value: str) -> str:
    """``value`` with LIKE's wildcards and the escape character escaped: matched literally."""
    return (
        value.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


def _text_match(column: Any, op: str, value: str) -> ColumnElement[bool]:
    """The LIKE for one of the text operators; backslash escapes ``%`` and ``_`` on every
    backend (SQLite has no default escape character)."""
    if op == "like":
        return cast("ColumnElement[bool]", column.like(value, escape=_ESCAPE))
    pattern = _escaped(value) + "%"
    if op in {"contains", "icontains"}:
        pattern = "%" + pattern
    if op.startswith("i"):
        folded = lower_text(literal(pattern, String()))
        return cast("ColumnElement[bool]", lower_text(column).like(folded, escape=_ESCAPE))
    return cast("ColumnElement[bool]", column.like(pattern, escape=_ESCAPE))


def _check_pattern(column: Any, field: str, op: str, value: str) -> None:
    sql_type = column.type
    if not isinstance(sql_type, String) or python_type(sql_type) is not str:
        raise InvalidInputError(f"{op!r} works on text fields; {field!r} is not one")
    check_text(field, value)
    length = sql_type.length
    limit = length if op != "like" and length else max(4 * (length or 0), _MAX_PATTERN)
    if len(value) > limit:
        raise InvalidInputError(f"{op!r} on {field!r} takes at most {limit} characters")
    if op == "like" and (len(value) - len(value.rstrip(_ESCAPE))) % 2:
        raise InvalidInputError(f"a LIKE pattern may not end with a lone {_ESCAPE!r}")
