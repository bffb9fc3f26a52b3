"""Primary keys: the one key column of a model, and ids given by callers converted to it.

A repository serves any model with a single-column primary key (a UUID, an integer, a string).
Ids often arrive as text (a URL path, a JSON body): a UUID's string form and an integer's
decimal form are taken; a value that cannot be a key of the model is simply not found.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper

from flowstore.errors import InvalidInputError
from flowstore.models.types import as_uuid
from flowstore.validation import coerce_value, python_type

__all__ = ["coerce_id", "key_attribute", "key_for", "key_of", "require_id"]


_KEYS: dict[type[Any], Any] = {}


def key_attribute(model: type[Any]) -> Any:
    """The mapped attribute of ``model``'s primary key (``TypeError`` for a composite key)."""
    known = _KEYS.get(model)
    if known is None:
        mapper: Mapper[Any] = inspect(model)
        if len(mapper.primary_key) != 1:
            raise TypeError(f"{model.__name__}: a repository needs a single-column primary key")
        known = getattr(model, mapper.get_property_by_column(mapper.primary_key[0]).key)
        _KEYS[model] = known
    return known


def key_for(model: type[Any], value: Any) -> Any | None:
    """``value`` as a primary key of ``model``, or ``None`` when it cannot be one."""
    if value is None or isinstance(value, bool):
        return None
    attribute = key_attribute(model)
    if isinstance(value, str) and python_type(attribute.type) is int:
        text = value.strip()
        if not (text.lstrip("-").isdigit() and len(text) < 21):
            return None
        value = int(text)
    try:
        return coerce_value(attribute, attribute.key, value)
    except InvalidInputError:
        return None


def key_of(entity: Any) -> Any:
    """The primary-key value of ``entity`` (``None`` when it has none yet)."""
    return inspect(entity).dict.get(key_attribute(type(entity)).key)


def coerce_id(value: Any) -> uuid.UUID | None:
    """``value`` as a UUID, or ``None`` when it cannot be one (so: not found)."""
    try:
        return as_uuid(value)
    except ValueError:
        return None


def require_id(value: Any, name: str) -> uuid.UUID:
    """``value`` as a UUID; ``InvalidInputError`` naming ``name`` when it cannot be one."""
    key = coerce_id(value)
    if key is None:
        raise InvalidInputError(f"{name} must be a UUID")
    return key
