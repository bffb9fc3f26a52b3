"""Filling and checking the values of new rows, as a flush would: the one pass both bulk
writers make (``Repository.add_many``'s fast path and the ``AuditWriter``).

Each row is a dict of attribute values (for ``add_many``, the objects' own dicts, which are
also the INSERT parameters). Every value given is checked with the checks every repository
write makes (``flowstore.validation.column_checks``, converting where unambiguous: a UUID
string, an enum value); a missing one gets its column default (ids, timestamps, a
``CopyOf`` column the value of the column it repeats); a ``None`` where the column takes none
is ``InvalidInputError``; the version counter gets its first value.
"""

from __future__ import annotations

from typing import Any

from flowstore.errors import InvalidInputError
from flowstore.writes.plan import Plan

__all__ = ["fill", "fill_row", "take_back"]

_MISSING: Any = object()


def fill_row(plan: Plan, values: dict[str, Any], version: Any) -> int:
    """Check and complete ``values`` in place (``InvalidInputError`` for a bad value, and then
    ``values`` as they were given). Returns what was filled, as one bit per column of
    ``plan.columns``; the bit after the last column's is the version counter's."""
    mask = 0
    try:
        for attribute, default, copied, none_is_unset, bit, check, none_ok in plan.columns:
            value = values.get(attribute, _MISSING)
            if value is _MISSING or (value is None and none_is_unset):
                if copied is not None and values[copied] is not None:
                    values[attribute] = values[copied]  # as a CopyOf does
                else:
                    values[attribute] = default() if default is not None else None
                mask |= bit
            elif value is None:
                if not none_ok:
                    raise InvalidInputError(f"{plan.name}.{attribute} is required")
            else:
                checked = check(value)
                if checked is not value:  # converted (a UUID string, an enum value)
                    values[attribute] = checked
    except BaseException:
        take_back(plan, [values], [mask])
        raise
    version_attribute = plan.version_attribute
    if version_attribute is not None:
        if version_attribute not in values:
            mask |= 1 << len(plan.columns)
        values[version_attribute] = version
    return mask


def fill(plan: Plan, dicts: list[dict[str, Any]], version: Any) -> list[int]:
    """:func:`fill_row` on every one of ``dicts``: every value checked (``InvalidInputError``,
    and the dicts as they were given), the missing ones filled in, the version counter set.

    What was filled is kept as one bit per column, so that it can be taken out again
    (:func:`take_back`) without a container per row for the collector to scan.
    """
    filled: list[int] = []
    try:
        for values in dicts:
            filled.append(fill_row(plan, values, version))
    except BaseException:
        take_back(plan, dicts, filled)
        raise
    return filled


def take_back(plan: Plan, dicts: list[dict[str, Any]], filled: list[int]) -> None:
    """Remove the values :func:`fill` put in ``dicts``: they are as they were given."""
    version_bit = 1 << len(plan.columns)
    for values, mask in zip(dicts, filled, strict=False):
        if mask:
            for attribute, _default, _copied, _unset, bit, _check, _none_ok in plan.columns:
                if mask & bit:
                    values.pop(attribute, None)
            if mask & version_bit and plan.version_attribute is not None:
                values.pop(plan.version_attribute, None)
