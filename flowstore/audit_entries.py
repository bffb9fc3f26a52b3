"""Audit entries as the ``AuditWriter`` takes and gives them: checked once in ``write()``, kept
as rows in table order, and handed back (when they cannot be stored) in the form ``write()``
takes, so a failed entry can be written again as it is.

An entry is an ``AuditLog`` or a mapping of its fields (``id`` and ``created_at`` included, which
the writer fills in when they are missing); ``details`` is a JSON object, kept as JSON text in
the row so it is encoded once. Its values are checked and completed as ``add_many`` checks and
completes an ``AuditLog``'s (``flowstore.writes.rows``, with ``AuditLog``'s plan: the checks
every repository write makes, the column defaults, the first ``lock_version``).
"""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from sqlalchemy import Table, Text, column, table

from flowstore.errors import InvalidInputError
from flowstore.models import AuditLog
from flowstore.writes.plan import Plan, plan_for
from flowstore.writes.rows import fill_row

__all__ = ["COLUMNS", "CORE_TABLE", "INDEX", "TABLE", "TWINS", "Row", "entry_row", "entry_values"]

TABLE: Table = AuditLog.__table__  # type: ignore[assignment]
COLUMNS: tuple[str, ...] = tuple(c.name for c in TABLE.columns)
INDEX = {name: i for i, name in enumerate(COLUMNS)}
# What an entry may give; the rest (updated_at, lock_version) follow from it.
_FIELDS = frozenset({"id", "created_at"} | (set(COLUMNS) - {"updated_at", "lock_version"}))
# Where the writer does not COPY, the rows take Core's type handling (their bind processors);
# ``details`` arrives already as JSON text.
CORE_TABLE = table(
    TABLE.name,
    *(column(c.name, Text() if c.name == "details" else c.type) for c in TABLE.columns),
)
# updated_at is created_at's very value (entry_row): converted once, for created_at
TWINS = ((INDEX["updated_at"], INDEX["created_at"]),)

Row = tuple[Any, ...]

_PLAN: Plan = plan_for(AuditLog)  # type: ignore[assignment]  # a plain model: it has one
_CHECK_ORG_ID = _PLAN.check_of("org_id")
_FIRST_VERSION = _PLAN.first_version()
_BLANK: dict[str, Any] = dict.fromkeys(COLUMNS)
_ROW = operator.itemgetter(*COLUMNS)
_JSON = json.JSONEncoder(allow_nan=False)  # made once: json.dumps(allow_nan=...) makes one a call


def entry_row(entry: AuditLog | Mapping[str, Any], org_id: uuid.UUID | None) -> Row:
    """The entry's column values, checked, in table order (``details`` as JSON text), with an
    id and a creation time when it has none. ``org_id`` scopes it to one organization."""
    if type(entry) is dict or isinstance(entry, Mapping):
        if not _FIELDS.issuperset(entry):
            unknown = ", ".join(sorted(str(k) for k in set(entry) - _FIELDS))
            raise InvalidInputError(f"unknown audit fields: {unknown}")
        values = {**_BLANK, **entry}
    elif isinstance(entry, AuditLog):
        values = {**_BLANK, **{name: getattr(entry, name) for name in _FIELDS}}
    else:
        raise InvalidInputError("an audit entry is an AuditLog or a mapping of its fields")
    if org_id is not None:
        given = org_id if values["org_id"] is None else values["org_id"]
        values["org_id"] = _CHECK_ORG_ID(given)  # kept coerced: not coerced again below
        if values["org_id"] != org_id:
            raise InvalidInputError("this audit writer writes one organization's entries")
    details = values["details"]
    if details is not None and type(details) is not dict and not isinstance(details, Mapping):
        raise InvalidInputError("details must be a dict")
    values["details"] = {} if details is None else details  # None: no details
    fill_row(_PLAN, values, _FIRST_VERSION)  # checked; id, created_at... filled in
    values["details"] = _details_json(values["details"])
    created = values["created_at"]
    if created.tzinfo is not UTC:  # an aware time (checked): stored and given back in UTC
        values["created_at"] = values["updated_at"] = created.astimezone(UTC)
    row: Row = _ROW(values)
    return row


def entry_values(row: Row) -> dict[str, Any]:
    """The entry of ``row`` as ``write()`` takes it: its fields, ``details`` as a dict, and its
    ``id`` and ``created_at``, so writing it again stores the same entry (once)."""
    values = {name: row[i] for name, i in INDEX.items() if name in _FIELDS}
    values["details"] = json.loads(values["details"])
    return values


def _details_json(details: Any) -> str:
    """``details`` (a checked mapping) as JSON text."""
    try:
        text = _JSON.encode(details)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"details must be JSON values: {exc}") from None
    if "\\u0000" in text:
        raise InvalidInputError("details may not contain NUL characters")
    return text
