"""Which columns a batch of new objects of one model fills, and how: the plan of the fast
write path, worked out once per model from the public mapping (``sqlalchemy.inspect()``).

A model the plan cannot describe faithfully (relationships, inheritance, server-side or
context-dependent defaults, unmapped columns, attribute names that differ from their column
names, a server-side version counter) gets no plan: the ordinary flush writes it. Generated
columns (``Computed``) are left out of the INSERT; the objects load them when first read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper

from flowstore.models.types import CopyOf
from flowstore.validation import column_checks

__all__ = ["Column", "Plan", "column_default", "plan_for"]

# (attribute, default (None: NULL), the attribute whose value it repeats instead (a CopyOf
#  default), whether None means "not set", bit in the masks, the value check, whether None is
#  accepted)
Column = tuple[str, Callable[[], Any] | None, str | None, bool, int, Callable[[Any], Any], bool]


@dataclass(frozen=True)
class Plan:
    """How the mapped columns of one model get their INSERT values."""

    name: str  # the model's
    table: Table
    columns: tuple[Column, ...]  # every mapped column but the version counter
    version_attribute: str | None
    version_generator: Callable[[Any], Any] | None
    identity_class: type[Any]  # the first member of the objects' identity keys
    primary_key: tuple[str, ...]  # the attributes of the other
    json_attributes: tuple[str, ...]  # whose values must be tracked (flowstore.models.mutable_json)
    given_keys: tuple[str, ...]  # key attributes without a default: every object must set them
    computed: tuple[str, ...]  # attributes of generated columns: the database computes them

    def first_version(self) -> Any:
        """The version counter's value in a new row (``None`` without one)."""
        return self.version_generator(None) if self.version_generator is not None else None

    def check_of(self, attribute: str) -> Callable[[Any], Any]:
        """The value check of ``attribute``'s column (the one every repository write makes)."""
        for key, _default, _copied, _unset, _bit, check, _none_ok in self.columns:
            if key == attribute:
                return check
        raise KeyError(attribute)


def column_default(column: Any) -> tuple[bool, Callable[[], Any] | None, str | None]:
    """``(usable, default, copied)``: whether the column's default can be computed here, and
    how: by calling ``default``, or by repeating the value of the attribute ``copied``."""
    if column.server_default is not None or column.computed is not None:
        return False, None, None
    if column.identity is not None:
        return False, None, None
    default = column.default
    if default is None:
        return True, None, None
    if getattr(default, "is_scalar", False):
        value = default.arg
        return True, lambda: value, None
    if getattr(default, "is_callable", False):
        if isinstance(default.arg, CopyOf):
            return True, default.arg.otherwise, default.arg.key
        # SQLAlchemy wraps a default that takes no execution context (and marks the wrapper
        # with __wrapped__); one that reads the context cannot be computed outside a statement.
        function = getattr(default.arg, "__wrapped__", None)
        return (True, function, None) if callable(function) else (False, None, None)
    return False, None, None  # a SQL expression or a sequence: only the database knows it


@functools.cache
def plan_for(model: type[Any]) -> Plan | None:
    """The plan for ``model``, or ``None`` when its mapping needs the ordinary flush."""
    mapper: Mapper[Any] = sa_inspect(model)
    table = mapper.local_table
    if (
        not isinstance(table, Table)
        or mapper.inherits is not None
        or mapper.polymorphic_on is not None
        or mapper.relationships
        or mapper.persist_selectable is not table
    ):
        return None
    if len(mapper.column_attrs) != len(table.columns):
        return None  # a column no attribute maps: only the flush knows what it gets
    version_col = mapper.version_id_col
    checks = {key: (check, none_ok) for key, check, none_ok, _existing in column_checks(model)}
    found: dict[str, tuple[Any, Callable[[], Any] | None, str | None, bool]] = {}
    computed: list[str] = []
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1 or prop.columns[0].table is not table:
            return None
        column = prop.columns[0]
        if column.key != prop.key:
            return None  # the objects' own dicts are the INSERT parameters: names must agree
        if column is version_col:
            continue
        if column.computed is not None:  # not in the INSERT; loaded when first read, as after
            computed.append(prop.key)  # a flush without eager defaults
            continue
        usable, default, copied = column_default(column)
        if not usable:
            return None
        none_is_unset = default is not None and not column.type.should_evaluate_none
        found[prop.key] = (column, default, copied, none_is_unset)
    # A copy of a column not there, of a copy, or of another type is left to the flush, which
    # fills it in table order and checks the value as this column's.
    for column, _default, copied, _unset in found.values():
        if copied is None:
            continue
        if copied not in found:
            return None
        source, _source_default, source_copied, _source_unset = found[copied]
        if source_copied is not None or not same_type(column.type, source.type):
            return None
    columns: list[Column] = []
    # a column that repeats another's value is filled after it
    for key, (_column, default, copied, none_is_unset) in sorted(
        found.items(), key=lambda item: item[1][2] is not None
    ):
        check, none_ok = checks[key]
        bit = 1 << len(columns)
        columns.append((key, default, copied, none_is_unset, bit, check, none_ok))
    identity_class = mapper.identity_key_from_primary_key((None,) * len(mapper.primary_key))[0]
    primary_key = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    json_attributes = tuple(
        key for key, (column, *_rest) in found.items() if isinstance(column.type, JSON)
    )
    given_keys = tuple(
        key for key in primary_key if found[key][1] is None and found[key][2] is None
    )
    if any(key in computed for key in primary_key):
        return None
    identity = (identity_class, primary_key, json_attributes, given_keys, tuple(computed))
    if version_col is None:
        return Plan(model.__name__, table, tuple(columns), None, None, *identity)
    generator = mapper.version_id_generator
    if not callable(generator):
        return None  # a server-side version counter needs RETURNING
    return Plan(model.__name__, table, tuple(columns), version_col.key, generator, *identity)


def same_type(one: Any, other: Any) -> bool:
    """Whether two column types take and convert values alike: one class, made alike."""
    return type(one) is type(other) and repr(one) == repr(other)
