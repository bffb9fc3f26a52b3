"""Argument checks shared by the queue, the worker and the AuditWriter: each returns the value
(normalised) or raises ``InvalidInputError`` naming the argument, so a bad setting is refused
where it is given rather than when it is first used."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flowstore.errors import InvalidInputError

__all__ = [
    "MAX_INT",
    "age",
    "aware",
    "cutoff",
    "integer",
    "number",
    "optional_text",
    "text",
]

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: The largest value of a 32-bit signed integer column (priorities, attempts).
MAX_INT = 2**31 - 1


def number(name: str, value: Any, *, minimum: float = 0, positive: bool = False) -> float:
    """``value`` as a finite float of at least ``minimum`` (above it, with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (positive and value <= minimum):
        relation = "above" if positive else "at least"
        raise InvalidInputError(f"{name} must be {relation} {minimum:g}, got {value!r}")
    return float(value)


def integer(name: str, value: Any, *, minimum: int, maximum: int = MAX_INT) -> int:
    """``value`` as an integer between ``minimum`` and ``maximum`` (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidInputError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return value


def aware(name: str, value: Any) -> datetime:
    """``value`` as an aware datetime in UTC (a naive one is ambiguous, so refused)."""
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def text(name: str, value: Any, *, max_length: int) -> str:
    """``value`` as a non-blank string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidInputError(
            f"{name} must be a non-empty string of at most {max_length} characters, got {value!r}"
        )
    return value


def optional_text(name: str, value: Any, *, max_length: int) -> str | None:
    """``None``, or ``value`` as :func:`text` checks it."""
    return None if value is None else text(name, value, max_length=max_length)


def age(option: str, value: str) -> timedelta:
    """A command-line age (``30d``, ``12h``, ``90m``, ``45s``, ``2w``) as a ``timedelta``;
    ``option`` names the flag in the error."""
    found = _AGE.match(value or "")
    if found is None:
        raise InvalidInputError(
            f"{option} takes a number and a unit (s, m, h, d, w), like 30d; got {value!r}"
        )
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def cutoff(name: str, older_than: timedelta | datetime, now: datetime) -> datetime:
    """The instant before which rows are ``older_than`` (an age before ``now``, or a time)."""
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidInputError(f"{name} must not be negative")
        return now - older_than
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise InvalidInputError(f"{name} must be timezone-aware")
        return older_than
    raise InvalidInputError(f"{name} takes a timedelta or a datetime, got {older_than!r}")
