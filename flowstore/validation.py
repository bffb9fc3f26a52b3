"""Checking values before they are written or compared: one table from a column's Python type
to its checker, used by every path (repositories, specifications, the bulk insert, the
AuditWriter), so that they accept and refuse the same values.

SQLite stores almost anything; PostgreSQL and MySQL refuse too-long text, out-of-range
numbers, NUL characters. Checking here makes a bad value the same ``InvalidInputError`` on
every backend, raised before any SQL (so a PostgreSQL transaction is not left aborted). A
checker returns the value, converted where that is unambiguous (a UUID's string form, an
enum's value), or raises; nothing is rounded or cut.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

from sqlalchemy import BigInteger, Integer, SmallInteger, inspect
from sqlalchemy.orm import ColumnProperty
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.sqltypes import JSON

from flowstore.errors import InvalidInputError

__all__ = [
    "ColumnCheck",
    "check_entity",
    "check_json",
    "check_text",
    "coerce_value",
    "column_checks",
    "column_for",
    "python_type",
]

_MAX_JSON_DEPTH: Final = 64  # MySQL refuses documents nested deeper than 100
_INT64: Final = 2**63
_INT32: Final = 2**31
_UNSET: Any = object()


def column_for(model: type[Any], field: str) -> Any:
    """The mapped column attribute ``model.field``, or ``InvalidInputError`` if there is none."""
    if not isinstance(field, str):
        raise InvalidInputError(f"field names are strings, not {type(field).__name__}")
    prop = inspect(model).attrs.get(field)
    if not isinstance(prop, ColumnProperty):
        raise InvalidInputError(f"{model.__name__} has no field {field!r}")
    return getattr(model, field)


def check_text(field: str, value: str) -> None:
    """Text every backend can store: no NUL (PostgreSQL refuses it) and valid Unicode (no lone
    surrogates, which no driver can encode)."""
    if "\x00" in value:
        raise InvalidInputError(f"{field!r}: text may not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field!r}: text must be valid Unicode") from None


def python_type(sql_type: Any) -> type[Any] | None:
    """The Python type of a column type; a ``TypeDecorator`` that does not say (``object`` on
    SQLAlchemy 2.1, ``NotImplementedError`` on 2.0) answers with its underlying type's."""
    try:
        found = sql_type.python_type
    except NotImplementedError:
        found = object
    if found is object and hasattr(sql_type, "impl_instance"):
        try:
            found = sql_type.impl_instance.python_type
        except NotImplementedError:
            return None
    return None if found is object else cast("type[Any]", found)


def _int_bound(sql_type: Any) -> int:
    """The exclusive magnitude bound of an integer column: 32 bits for ``INTEGER`` (PostgreSQL
    casts a compared value to the column's type, so a larger one is an error there)."""
    impl = getattr(sql_type, "impl_instance", sql_type)
    if isinstance(impl, BigInteger) or not isinstance(impl, Integer):
        return _INT64
    if isinstance(impl, SmallInteger):
        return 2**15
    return _INT32


def _numeric_shape(sql_type: Any) -> tuple[int | None, int | None]:
    """``(precision, scale)`` of a ``NUMERIC(p, s)`` column (``None`` where it declares none)."""
    impl = getattr(sql_type, "impl_instance", sql_type)
    precision, scale = getattr(impl, "precision", None), getattr(impl, "scale", None)
    return (
        precision if isinstance(precision, int) else None,
        scale if isinstance(scale, int) else None,
    )


# -- the table: a column's Python type -> how its values are checked -------------------------


@dataclass(frozen=True)
class _Kind:
    """How values of one Python type are checked for a column of type ``sql_type``:
    ``coerce(sql_type, field, value)`` converts or refuses any value; ``exact(sql_type)`` gives
    a cheap test for a value already exactly right (the common case), or ``None``."""

    coerce: Callable[[Any, str, Any], Any]
    exact: Callable[[Any], Callable[[Any], bool]] | None = None


def _coerce_enum(sql_type: Any, field: str, value: Any) -> Any:
    members = cast("type[enum.Enum]", python_type(sql_type))
    try:
        return members(value.value if isinstance(value, enum.Enum) else value)
    except (ValueError, TypeError):
        allowed = ", ".join(str(m.value) for m in members)
        raise InvalidInputError(f"{field!r} must be one of: {allowed}") from None


def _coerce_uuid(_sql_type: Any, field: str, value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidInputError(f"{field!r} must be a UUID")


def _coerce_bool(_sql_type: Any, field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidInputError(f"{field!r} must be a bool")


def _coerce_int(sql_type: Any, field: str, value: Any) -> int:
    bound = _int_bound(sql_type)
    if isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound:
        return value
    raise InvalidInputError(f"{field!r} must be an integer within {bound.bit_length()} bits")


def _coerce_float(_sql_type: Any, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{field!r} must be a number")
    number = float(value)
    if not math.isfinite(number) or (isinstance(value, int) and int(number) != value):
        raise InvalidInputError(f"{field!r} must be a finite number a float holds exactly")
    return number


def _coerce_decimal(sql_type: Any, field: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidInputError(f"{field!r} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{field!r} must be a finite number")
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise InvalidInputError(f"{field!r} must be a finite number")
    precision, scale = _numeric_shape(sql_type)
    if precision is not None and scale is not None:
        limit = Decimal(10) ** (precision - scale)
        if abs(number) >= limit:
            raise InvalidInputError(f"{field!r} must be less than {limit} in magnitude")
    if scale is not None and number.as_tuple().exponent < -scale:  # type: ignore[operator]
        try:
            exact = number == number.quantize(Decimal(1).scaleb(-scale))
        except InvalidOperation:
            exact = False
        if not exact:
            raise InvalidInputError(
                f"{field!r} keeps at most {scale} decimal places; {number} would be rounded"
            )
    return number


def _coerce_datetime(_sql_type: Any, field: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{field!r} must be a date and time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{field!r} must be a timezone-aware date and time (UTC)")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(f"{field!r} is out of range once converted to UTC") from None
    return value


def _coerce_str(sql_type: Any, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field!r} must be a string")
    check_text(field, value)
    length = getattr(sql_type, "length", None)
    if length is not None and len(value) > length:
        raise InvalidInputError(f"{field!r} takes at most {length} characters")
    return value


def _exact_type(sql_type: Any) -> Callable[[Any], bool]:
    exact = python_type(sql_type)
    return lambda value: type(value) is exact


def _exact_int(sql_type: Any) -> Callable[[Any], bool]:
    bound = _int_bound(sql_type)
    return lambda value: type(value) is int and -bound <= value < bound


def _exact_str(sql_type: Any) -> Callable[[Any], bool]:
    # ASCII text is valid Unicode: only NUL and the length are left to look at
    length = getattr(sql_type, "length", None) or math.inf
    return lambda value: (
        type(value) is str and value.isascii() and "\x00" not in value and len(value) <= length
    )


def _exact_datetime(_sql_type: Any) -> Callable[[Any], bool]:
    return lambda value: type(value) is datetime and value.tzinfo is UTC


_KINDS: Final[dict[type[Any], _Kind]] = {
    enum.Enum: _Kind(_coerce_enum, _exact_type),
    uuid.UUID: _Kind(_coerce_uuid, _exact_type),
    bool: _Kind(_coerce_bool, _exact_type),
    int: _Kind(_coerce_int, _exact_int),
    float: _Kind(_coerce_float),
    Decimal: _Kind(_coerce_decimal),
    datetime: _Kind(_coerce_datetime, _exact_datetime),
    str: _Kind(_coerce_str, _exact_str),
}


def _kind_of(sql_type: Any) -> _Kind | None:
    found = python_type(sql_type)
    if found is None:
        return None
    if isinstance(found, type) and issubclass(found, enum.Enum):
        return _KINDS[enum.Enum]
    return _KINDS.get(found)


def coerce_value(column: Any, field: str, value: Any) -> Any:
    """Check (and where unambiguous convert) ``value`` for ``column``'s type; ``None`` passes.

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
    kind = _kind_of(sql_type)
    return value if kind is None else kind.coerce(sql_type, field, value)


# -- JSON ------------------------------------------------------------------------------------

#: The types of JSON values; an instance of a subclass (an ``IntEnum``, a ``StrEnum``, an
#: ``OrderedDict``, a tracked dict) is checked as its base type (:func:`_json_kind`).
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
                check_text(field, item)
        elif kind is int:
            if not -_INT64 <= item < _INT64:
                raise InvalidInputError(f"{field!r}: JSON integers must fit in 64 bits")
        elif kind is dict:
            for key, member in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{field!r}: JSON object keys must be strings")
                if not key.isascii() or "\x00" in key:
                    check_text(field, key)
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


# -- a model's checks ------------------------------------------------------------------------

# How one column's value is checked before a write: (attribute, checker, whether None is
# accepted on a new object, whether None is accepted on an existing one). A checker returns
# the value (converted where unambiguous) or raises InvalidInputError.
ColumnCheck = tuple[str, Callable[[Any], Any], bool, bool]


def column_checker(column: Any, field: str) -> Callable[[Any], Any]:
    """A checker for ``column``: a value of exactly the right type passes in a few comparisons,
    every other value goes through :func:`coerce_value`, so the two always agree."""
    if isinstance(column.type, JSON):

        def check_json_value(value: Any) -> Any:
            check_json(field, value)
            return value

        return check_json_value
    kind = _kind_of(column.type)

    def slow(value: Any) -> Any:
        return coerce_value(column, field, value)

    if kind is None or kind.exact is None:
        return slow
    exact = kind.exact(column.type)
    return lambda value: value if exact(value) else slow(value)


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
                column_checker(column, prop.key),
                optional or (defaulted and not json),
                optional,
            )
        )
    _CHECK_PLANS[model] = result = tuple(plan)
    return result


def check_entity(entity: Any) -> None:
    """Check the values set on ``entity`` before it is written, converting where unambiguous
    (a UUID string, an enum value)."""
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
