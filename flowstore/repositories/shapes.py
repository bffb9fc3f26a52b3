"""Reads as statements made once per shape, run with each call's values bound.

A list or an audit query built the same statement again and again with new values: the
``select()`` with its filters, order and page, then SQLAlchemy's cache key over it, about
100 µs a call, a tenth to a fifth of what a page of 50-100 rows takes to load (issue #19). So
the common reads (``Repository.list`` with field filters, ``AuditLogRepository.query``) keep
one statement per *shape*: the model, which fields are compared and how (``IS NULL`` for a
``None``), the order, whether there is a cursor, a limit, an offset. Its values are bound
parameters. A call checks its values as every read always has (``flowstore.validation``: the
same errors, in the same order) and runs the kept statement with them; SQLAlchemy finds its
compiled form by a cache key worked out once.

The SQL sent is the SQL of the statement built with the values in place: each parameter has
the type SQLAlchemy gives that value compared with that column. A value it would type
otherwise (``TypeEngine.coerce_compared_value``), or a limit or offset past 32 bits (bound as
BIGINT, not INTEGER), is not bound into the kept statement: that call builds its statement
with the values in place, as before. Loader criteria (a tenant scope) are added to the kept
statement when it runs, as to any other.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Integer, Select, bindparam
from sqlalchemy.sql.operators import OperatorType
from sqlalchemy.sql.sqltypes import JSON

from flowstore.validation import coerce_value, column_checker, column_for

__all__ = ["Binder", "Plan", "planned", "value_check"]

#: Statements kept at most; past that the oldest go (shapes are few: a bound for safety).
MAX_PLANS = 1000
_INT32 = 2**31

Check = Callable[[Any], Any]

_CHECKS: dict[tuple[type[Any], str, str], tuple[Any, Check]] = {}


def value_check(model: type[Any], name: str, label: str | None = None) -> tuple[Any, Check]:
    """The attribute ``model.<name>`` and the check of a value compared with it:
    ``coerce_value(attribute, label, value)``, with a value of exactly the column's type let
    through in a few comparisons (``column_checker``). ``InvalidInputError`` when ``name`` is
    not a field of ``model`` (``column_for``)."""
    label = name if label is None else label
    found = _CHECKS.get((model, name, label))
    if found is None:
        attribute = column_for(model, name)
        check: Check
        if isinstance(attribute.type, JSON):  # refused in comparisons, as coerce_value says
            check = functools.partial(coerce_value, attribute, label)
        else:
            check = column_checker(attribute, label)
        found = _CHECKS[(model, name, label)] = (attribute, check)
    return found


class Binder(Protocol):
    """What a shape's statement is built with: a bound parameter in place of each value
    (``_Template``), or the values themselves (``_Values``), in the order a call gives them."""

    def compare(self, column: Any, operator: OperatorType) -> ColumnElement[bool]:
        """``column <operator> <the next value>``."""
        ...

    def value(self, column: Any, *operators: OperatorType) -> Any:
        """The next value, compared with ``column`` by each of ``operators``."""
        ...

    def count(self) -> Any:
        """The next value, a LIMIT or an OFFSET."""
        ...


# A slot: the parameter's key, and the column type with the operators it is compared by
# (``None`` for a LIMIT or OFFSET).
_Slot = tuple[str, Any, tuple[OperatorType, ...] | None]


@dataclass
class _Template:
    """Hands out a bound parameter per value as a shape's statement is built."""

    slots: list[_Slot] = field(default_factory=list)

    def compare(self, column: Any, operator: OperatorType) -> ColumnElement[bool]:
        return operator(column, self.value(column, operator))  # type: ignore[no-any-return]

    def value(self, column: Any, *operators: OperatorType) -> Any:
        key = f"flowstore_{len(self.slots)}"
        self.slots.append((key, column.type, operators))
        return bindparam(key, type_=column.type)

    def count(self) -> Any:
        key = f"flowstore_{len(self.slots)}"
        self.slots.append((key, None, None))
        return bindparam(key, type_=Integer())


@dataclass
class _Values:
    """Hands out the values themselves: the statement as it is built without a shape."""

    values: Sequence[Any]
    taken: int = 0

    def _next(self) -> Any:
        self.taken += 1
        return self.values[self.taken - 1]

    def compare(self, column: Any, operator: OperatorType) -> ColumnElement[bool]:
        return operator(column, self._next())  # type: ignore[no-any-return]

    def value(self, column: Any, *operators: OperatorType) -> Any:
        return self._next()

    def count(self) -> Any:
        return self._next()


@dataclass(frozen=True)
class Plan:
    """One shape: its statement with bound parameters, and how to build it with values."""

    statement: Select[Any]
    slots: tuple[_Slot, ...]
    build: Callable[[Binder], Select[Any]]

    def bind(self, values: Sequence[Any]) -> tuple[Select[Any], dict[str, Any]]:
        """The statement and parameters that run the shape with ``values`` (checked values,
        one per slot, in order)."""
        parameters: dict[str, Any] = {}
        for (key, sql_type, operators), value in zip(self.slots, values, strict=True):
            if operators is None:
                if value >= _INT32:  # SQLAlchemy binds it as a BIGINT
                    return self.build(_Values(values)), {}
            else:
                for operator in operators:
                    if sql_type.coerce_compared_value(operator, value) is not sql_type:
                        return self.build(_Values(values)), {}
            parameters[key] = value
        return self.statement, parameters


_PLANS: dict[Hashable, Plan] = {}
_LOCK = threading.Lock()


def planned(shape: Hashable, build: Callable[[Binder], Select[Any]]) -> Plan:
    """The plan of ``shape``, whose statement ``build`` makes (once per shape, kept)."""
    found = _PLANS.get(shape)
    if found is None:
        template = _Template()
        statement = build(template)
        found = Plan(statement, tuple(template.slots), build)
        with _LOCK:
            while len(_PLANS) >= MAX_PLANS:
                del _PLANS[next(iter(_PLANS))]
            _PLANS[shape] = found
    return found
