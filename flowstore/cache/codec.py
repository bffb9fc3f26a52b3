"""Rows of a model as cache values: JSON text in column order, and back to column values.

JSON, not pickle: whoever can write to the cache must not be able to run code in the readers.
Each column's value is encoded by its Python type (UUIDs, amounts and times as text, enums by
value, JSON as it is). A model with a column type this module does not know is not cached.
The value carries a fingerprint of the model's columns, so a process of another version of
the code (a rolling deploy) never reads a row shaped differently: it takes it as a miss.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, inspect
from sqlalchemy.orm import Mapper

from flowstore.validation import python_type

__all__ = ["Codec", "codec_for", "encode_key"]

_Pair = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _same(value: Any) -> Any:
    return value


def _pair(sql_type: Any) -> _Pair | None:
    if isinstance(sql_type, JSON) or isinstance(getattr(sql_type, "impl", None), JSON):
        return _same, _same
    kind = python_type(sql_type)
    if kind is None:
        return None
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        enum_class = kind
        return (lambda v: v.value if isinstance(v, enum.Enum) else v), enum_class
    if kind is uuid.UUID:
        return str, uuid.UUID
    if kind is datetime:
        return (lambda v: v.isoformat()), datetime.fromisoformat
    if kind is date:
        return (lambda v: v.isoformat()), date.fromisoformat
    if kind is Decimal:
        return str, Decimal
    if kind is bytes:
        return (lambda v: base64.b64encode(v).decode()), base64.b64decode
    if kind in (int, str, float, bool):
        return _same, _same
    return None


def encode_key(value: Any) -> str:
    """A key or lookup value as it appears in a cache key."""
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value)


@dataclass(frozen=True)
class Codec:
    """How one model's rows become cache values and back."""

    attributes: tuple[str, ...]
    encoders: tuple[Callable[[Any], Any], ...]
    decoders: tuple[Callable[[Any], Any], ...]
    json_attributes: tuple[str, ...]
    fingerprint: str

    def encode(self, values: dict[str, Any]) -> str:
        """``values`` (attribute -> value, every column) as a cache value."""
        row = [
            None if values.get(name) is None else encode(values[name])
            for name, encode in zip(self.attributes, self.encoders, strict=True)
        ]
        return json.dumps([self.fingerprint, row], separators=(",", ":"))

    def decode(self, text: str | bytes) -> dict[str, Any] | None:
        """The column values of a cache value; ``None`` if another code version wrote it, or
        it cannot be read (then the database answers)."""
        try:
            fingerprint, row = json.loads(text)
            if fingerprint != self.fingerprint or len(row) != len(self.attributes):
                return None
            return {
                name: None if value is None else decode(value)
                for name, decode, value in zip(self.attributes, self.decoders, row, strict=True)
            }
        except (ValueError, TypeError, KeyError, ArithmeticError):
            return None


_CODECS: dict[type[Any], Codec | None] = {}


def codec_for(model: type[Any]) -> Codec | None:
    """The codec of ``model``, or ``None`` when one of its columns cannot be cached."""
    if model not in _CODECS:
        _CODECS[model] = _codec(model)
    return _CODECS[model]


def _codec(model: type[Any]) -> Codec | None:
    mapper: Mapper[Any] = inspect(model)
    names: list[str] = []
    encoders: list[Callable[[Any], Any]] = []
    decoders: list[Callable[[Any], Any]] = []
    json_attributes: list[str] = []
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1:
            return None
        sql_type = prop.columns[0].type
        pair = _pair(sql_type)
        if pair is None:
            return None
        names.append(prop.key)
        encoders.append(pair[0])
        decoders.append(pair[1])
        if pair[0] is _same and pair[1] is _same and isinstance(sql_type, JSON):
            json_attributes.append(prop.key)
    shape = repr([(prop.key, repr(prop.columns[0].type)) for prop in mapper.column_attrs])
    fingerprint = hashlib.sha1(f"{model.__name__}:{shape}".encode()).hexdigest()[:12]  # noqa: S324
    return Codec(
        tuple(names), tuple(encoders), tuple(decoders), tuple(json_attributes), fingerprint
    )
