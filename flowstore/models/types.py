"""Portable column types and defaults shared by every model (flowstore's and a service's).

Types are chosen to behave the same on SQLite, PostgreSQL and MySQL/MariaDB:

* ids are UUIDv7 (time-ordered, made client-side, so inserts need no RETURNING round trip);
  stored as native ``uuid`` on PostgreSQL and ``CHAR(32)`` elsewhere;
* timestamps are timezone-aware UTC with microseconds (``DATETIME(6)`` on MySQL);
* ``dict`` columns are JSON (``JSONB`` on PostgreSQL);
* amounts are exact (``Money``): a value with more decimals than the column keeps is refused,
  never rounded;
* enums are ``VARCHAR`` + ``CHECK`` (no native enum types to migrate).
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Numeric, TypeDecorator, Uuid
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects import mysql, postgresql

__all__ = [
    "GUID",
    "CopyOf",
    "JSONType",
    "Money",
    "UTCDateTime",
    "as_uuid",
    "str_enum",
    "utcnow",
    "uuid7",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class CopyOf:
    """A column default that repeats the value another column of the same row gets, or calls
    ``otherwise`` when that column has no plain value in the statement (say, an SQL expression).

    ``Entity.updated_at`` takes ``created_at``'s: a record never updated shows ``updated_at ==
    created_at``, to the microsecond, however it was inserted (a flush, ``add_many``, the
    ``AuditWriter``). ``add_many``'s bulk path knows this default and converts the shared value
    once (``flowstore.writes``).
    """

    __slots__ = ("key", "otherwise")

    def __init__(self, key: str, otherwise: Callable[[], Any]) -> None:
        self.key = key
        self.otherwise = otherwise

    def __call__(self, context: Any) -> Any:  # SQLAlchemy passes the execution context
        value = context.get_current_parameters().get(self.key)
        return self.otherwise() if value is None else value

    def __repr__(self) -> str:
        return f"CopyOf({self.key!r})"


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; sorts by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return uuid.UUID(int=value)


def as_uuid(value: Any) -> uuid.UUID:
    """``value`` as a UUID: UUIDs pass, strings are parsed; anything else is a ``ValueError``."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        return uuid.UUID(value)
    raise ValueError(f"expected a UUID, got {type(value).__name__}")


class GUID(TypeDecorator[uuid.UUID]):
    """A UUID column that also accepts the UUID's string form (ids often arrive as text)."""

    impl = Uuid
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        return None if value is None else as_uuid(value)

    @property
    def python_type(self) -> type[uuid.UUID]:
        return uuid.UUID


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    Naive values are refused (they are ambiguous); aware values are converted to UTC before
    they are stored, and values read back are always aware UTC, including on SQLite and MySQL,
    which store no offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(DateTime(timezone=False))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An exact amount with 6 decimal places: ``NUMERIC(18, 6)`` where the database has it, and
    integer micro-units on SQLite (which has no exact decimal type), so sums stay exact."""

    impl = Numeric(18, 6)
    cache_ok = True
    _QUANTUM = Decimal("0.000001")

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 6))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise TypeError(f"expected a decimal amount, got {type(value).__name__}")
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if not amount.is_finite():
            raise ValueError("an amount must be finite")
        exact = amount.quantize(self._QUANTUM)
        if exact != amount:
            raise ValueError(f"an amount keeps at most 6 decimal places, got {amount}")
        return int(exact.scaleb(6)) if dialect.name == "sqlite" else exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-6).quantize(self._QUANTUM)
        return Decimal(value).quantize(self._QUANTUM)

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


def str_enum(enum_cls: type[enum.Enum], name: str) -> SAEnum:
    """A portable enum column type: VARCHAR holding the lower-case values, plus a CHECK."""
    return SAEnum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )
