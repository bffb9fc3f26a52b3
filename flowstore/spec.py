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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    SmallInteger,
    String,
    and_,
    inspect,
    not_,
    or_,
)
from sqlalchemy.orm import ColumnProperty
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.sqltypes import JSON

from flowstore.errors import InvalidInputError

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
    {"==", "!=", "<", "<=", ">", ">=", "in", "like", "contains", "startswith"}
)
_ESCAPE: Final = "\\"
_MAX_IN: Final = 10_000
_MAX_DEPTH: Final = 32  # nesting of & | ~ (chains of one operator are flattened)
_MAX_TERMS: Final = 256  # where() leaves in one spec
_MAX_PATTERN: Final = 10_000  # a LIKE pattern on a column without a declared length
_MAX_JSON_DEPTH: Final = 64  # MySQL refuses documents nested deeper than 100
_INT64: Final = 2**63
_INT32: Final = 2**31
_UNSET: Any = object()


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
        if op in {"like", "contains", "startswith"}:
            if not isinstance(value, str):
                raise InvalidInputError(f"{op!r} on {self.field!r} takes a string")
            _check_pattern(column, self.field, op, value)
            if op == "like":
                # backslash escapes % and _ on every backend (SQLite has no default escape)
                return cast("ColumnElement[bool]", column.like(value, escape=_ESCAPE))
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
    """A predicate ``field <op> value``; ops: ``== != < <= > >= in like contains startswith``.

    ``like`` takes an SQL LIKE pattern as given, with ``\\`` as its escape character on every
    backend (``\\%`` matches a literal ``%``); ``contains`` and ``startswith`` match the value
    literally (its ``%``, ``_`` and ``\\`` are escaped). The three work on text fields only.
    """
    if not isinstance(field, str) or not field:
        raise InvalidInputError("a spec's field must be a non-empty string")
    if not isinstance(op, str) or op not in OPERATORS:
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
    """Text every backend can store: no NUL (PostgreSQL refuses it) and valid Unicode (no lone
    surrogates, which no driver can encode)."""
    if "\x00" in value:
        raise InvalidInputError(f"{field!r}: text may not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field!r}: text must be valid Unicode") from None


def _check_pattern(column: Any, field: str, op: str, value: str) -> None:
    sql_type = column.type
    if not isinstance(sql_type, String) or _python_type(sql_type) is not str:
        raise InvalidInputError(f"{op!r} works on text fields; {field!r} is not one")
    _check_text(field, value)
    length = sql_type.length
    limit = length if op != "like" and length else max(4 * (length or 0), _MAX_PATTERN)
    if len(value) > limit:
        raise InvalidInputError(f"{op!r} on {field!r} takes at most {limit} characters")
    if op == "like" and (len(value) - len(value.rstrip(_ESCAPE))) % 2:
        raise InvalidInputError(f"a LIKE pattern may not end with a lone {_ESCAPE!r}")


def _python_type(sql_type: Any) -> type[Any] | None:
    """The Python type of a column type; a ``TypeDecorator`` that does not say (``object``)
    answers with its underlying type's."""
    try:
        found = sql_type.python_type
        if found is object and hasattr(sql_type, "impl_instance"):
            found = sql_type.impl_instance.python_type
    except NotImplementedError:
        return None
    return cast("type[Any]", found)


def _int_bound(sql_type: Any) -> int:
    """The exclusive magnitude bound of an integer column: 32 bits for ``INTEGER`` (PostgreSQL
    casts a compared value to the column's type, so a larger one is an error there)."""
    impl = getattr(sql_type, "impl_instance", sql_type)
    if isinstance(impl, BigInteger) or not isinstance(impl, Integer):
        return _INT64
    if isinstance(impl, SmallInteger):
        return 2**15
    return _INT32


def _numeric_limit(sql_type: Any) -> Decimal | None:
    """The exclusive bound of a ``NUMERIC(p, s)`` column (``10**(p-s)``), if it declares one."""
    impl = getattr(sql_type, "impl", sql_type)
    precision, scale = getattr(impl, "precision", None), getattr(impl, "scale", None)
    if isinstance(precision, int) and isinstance(scale, int):
        return Decimal(10) ** (precision - scale)
    return None


#: The types of JSON values; an instance of a subclass (an ``IntEnum``, a ``StrEnum``, an
#: ``OrderedDict``) is checked as its base type (:func:`_json_kind`).
_JSON_KINDS: Final = frozenset({str, int, float, bool, dict, list, tuple, type(None)})


def _json_kind(field: str, item: Any) -> type[Any]:
    for kind in (bool, str, int, float, dict, list, tuple):  # bool before int: a subclass
        if isinstance(item, kind):
            return kind
    raise InvalidInputError(f"{field!r}: {type(item).__name__} is not a JSON value")


def check_json(field: str, value: Any) -> None:
    """A JSON value every backend stores and returns unchanged: string keys, finite numbers,
    64-bit integers, text without NUL, nesting below MySQL's limit."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        if depth > _MAX_JSON_DEPTH:
            raise InvalidInputError(f"{field!r}: JSON nested deeper than {_MAX_JSON_DEPTH}")
        kind = type(item)
        if kind not in _JSON_KINDS:
            kind = _json_kind(field, item)
        if kind is str:
            if not item.isascii() or "\x00" in item:
                _check_text(field, item)
        elif kind is int:
            if not -_INT64 <= item < _INT64:
                raise InvalidInputError(f"{field!r}: JSON integers must fit in 64 bits")
        elif kind is dict:
            for key, member in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{field!r}: JSON object keys must be strings")
                if not key.isascii() or "\x00" in key:
                    _check_text(field, key)
                member_kind = type(member)  # plain ASCII text and small integers need no visit
                if member_kind is str:
                    if member.isascii() and "\x00" not in member:
                        continue
                elif member_kind is int and -_INT64 <= member < _INT64:
                    continue
                push((member, depth + 1))
        elif kind is float:
            if not math.isfinite(item):
                raise InvalidInputError(f"{field!r}: JSON numbers must be finite")
        elif kind is list or kind is tuple:
            for member in item:
                push((member, depth + 1))
        # None and bool need nothing


# How one column's value is checked before a write: (attribute, checker, whether None is
# accepted on a new object, whether None is accepted on an existing one). A checker returns
# the value (converted where unambiguous) or raises InvalidInputError.
ColumnCheck = tuple[str, Callable[[Any], Any], bool, bool]


def _column_checker(column: Any, field: str) -> Callable[[Any], Any]:
    """A checker for ``column`` that answers a value of exactly the right type in a few
    comparisons and leaves every other value to :func:`coerce_value` (so both agree)."""
    if isinstance(column.type, JSON):

        def check_json_value(value: Any) -> Any:
            check_json(field, value)
            return value

        return check_json_value

    def slow(value: Any) -> Any:
        return coerce_value(column, field, value)

    python_type = _python_type(column.type)
    if python_type is str:
        length = getattr(column.type, "length", None) or math.inf

        def check_text(value: Any) -> Any:
            # ASCII text is valid Unicode: only NUL and the length are left to look at
            plain = type(value) is str and value.isascii() and "\x00" not in value
            return value if plain and len(value) <= length else slow(value)

        return check_text
    if python_type is datetime:

        def check_time(value: Any) -> Any:
            return value if type(value) is datetime and value.tzinfo is UTC else slow(value)

        return check_time
    if python_type is int:
        bound = _int_bound(column.type)

        def check_int(value: Any) -> Any:
            return value if type(value) is int and -bound <= value < bound else slow(value)

        return check_int
    if python_type is uuid.UUID or python_type is bool or _is_enum(python_type):
        exact = python_type

        def check_exact(value: Any) -> Any:
            return value if type(value) is exact else slow(value)

        return check_exact
    return slow


def _is_enum(python_type: type[Any] | None) -> bool:
    return isinstance(python_type, type) and issubclass(python_type, enum.Enum)


_CHECK_PLANS: dict[type[Any], tuple[ColumnCheck, ...]] = {}


def column_checks(model: type[Any]) -> tuple[ColumnCheck, ...]:
    """The checks :func:`check_entity` makes on ``model``'s objects, worked out once (the bulk
    insert path makes them too, in the same pass that fills the defaults in)."""
    known = _CHECK_PLANS.get(model)
    if known is not None:
        return known
    mapper = inspect(model)
    plan: list[ColumnCheck] = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        json = isinstance(column.type, JSON)  # a JSON None is stored, as JSON null
        optional = bool(column.nullable or column.primary_key or column is mapper.version_id_col)
        # an INSERT fills a column default in for a None; an UPDATE writes the None
        defaulted = column.default is not None or column.server_default is not None
        plan.append(
            (
                prop.key,
                _column_checker(column, prop.key),
                optional or (defaulted and not json),
                optional,
            )
        )
    _CHECK_PLANS[model] = result = tuple(plan)
    return result


def check_entity(entity: Any) -> None:
    """Check the values set on ``entity`` before it is written, converting where unambiguous
    (a UUID string, an enum value).

    SQLite stores almost anything; PostgreSQL and MySQL refuse too-long text, out-of-range
    numbers, NUL characters. Checking here makes a bad value the same ``InvalidInputError`` on
    every backend, raised before any SQL (so a PostgreSQL transaction is not left aborted).
    """
    model = type(entity)
    state = instance_state(entity)
    values = state.dict
    existing = state.key is not None
    for key, check, none_when_new, none_when_existing in column_checks(model):
        value = values.get(key, _UNSET)
        if value is _UNSET:
            continue
        if value is None:
            if not (none_when_existing if existing else none_when_new):
                raise InvalidInputError(f"{model.__name__}.{key} is required")
            continue
        checked = check(value)
        if checked is not value:
            setattr(entity, key, checked)


def coerce_value(column: Any, field: str, value: Any) -> Any:
    """Check (and where unambiguous convert) ``value`` for ``column``'s type.

    Refusing a value here gives the caller a clear ``InvalidInputError`` instead of a driver
    error, and keeps the behaviour the same on every dialect.
    """
    if value is None:
        return None
    if isinstance(value, ClauseElement) or hasattr(value, "__clause_element__"):
        raise InvalidInputError(f"{field!r} takes a value, not an SQL expression")
    sql_type = column.type
    if isinstance(sql_type, JSON):
        raise InvalidInputError(f"{field!r} is a JSON field; it cannot be compared directly")
    python_type = _python_type(sql_type)
    if python_type is None or python_type is object:
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
        bound = _int_bound(sql_type)
        if isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound:
            return value
        raise InvalidInputError(f"{field!r} must be an integer within {bound.bit_length()} bits")
    if python_type is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise InvalidInputError(f"{field!r} must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{field!r} must be a finite number")
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise InvalidInputError(f"{field!r} must be a finite number")
        limit = _numeric_limit(sql_type)
        if limit is not None and abs(number) >= limit:
            raise InvalidInputError(f"{field!r} must be less than {limit} in magnitude")
        return number
    if python_type is datetime:
        if not isinstance(value, datetime):
            raise InvalidInputError(f"{field!r} must be a datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInputError(f"{field!r} must be a timezone-aware datetime")
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise InvalidInputError(f"{field!r} is out of range once converted to UTC") from None
        return value
    if python_type is str:
        if not isinstance(value, str):
            raise InvalidInputError(f"{field!r} must be a string")
        _check_text(field, value)
        length = getattr(sql_type, "length", None)
        if length is not None and len(value) > length:
            raise InvalidInputError(f"{field!r} takes at most {length} characters")
        return value
    return value
