"""flowstore errors as HTTP problem details (RFC 9457), for any web framework.

``problem_for(error)`` gives the status and the ``type``/``title``/``status``/``detail`` body.
The detail is written for a client: flowstore's own messages (a missing entity, a bad value)
are kept, cleared of Python reprs; an error the database raised is described by what the
client can change (the field whose value is taken, the reference that points nowhere), never
by the database's text, which can carry SQL, values or server names. Nothing else leaves:
a connection failure or an internal error says only that the service cannot answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ForeignKeyConstraint, Table, UniqueConstraint
from sqlalchemy import exc as sa_exc

from flowstore.errors import (
    AlreadyExistsError,
    ConcurrencyError,
    ConnectionFailedError,
    FlowstoreError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    StatementTimeoutError,
    TenantScopeError,
    TransactionFailedError,
    mask_secrets,
)
from flowstore.models.base import Base

__all__ = ["MEDIA_TYPE", "STATUSES", "Problem", "problem_for"]

#: The media type of a problem details body.
MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    """One problem details object (RFC 9457)."""

    status: int
    title: str
    type: str
    detail: str

    def body(self) -> dict[str, Any]:
        """The JSON object to send."""
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }


# (error class, HTTP status, title, slug of the type URI, detail when the message is the
# database's): the first class an error is an instance of wins, so subclasses come first.
_KINDS: tuple[tuple[type[FlowstoreError], int, str, str, str], ...] = (
    (NotFoundError, 404, "Not found", "not-found", "the requested record does not exist"),
    (AlreadyExistsError, 409, "Already exists", "already-exists", "that record already exists"),
    (
        ConcurrencyError,
        409,
        "Changed meanwhile",
        "concurrent-change",
        "the record was changed by someone else since it was read; read it again and retry",
    ),
    (
        TenantScopeError,
        403,
        "Outside your organization",
        "tenant-scope",
        "that data belongs to another organization",
    ),
    (
        InvalidInputError,
        422,
        "Invalid input",
        "invalid-input",
        "the values were refused by a rule of the data",
    ),
    (
        StatementTimeoutError,
        504,
        "Database timeout",
        "statement-timeout",
        "the database took too long to answer and the work was cut off; nothing was saved",
    ),
    (
        ReadOnlyError,
        503,
        "Read only",
        "read-only",
        "the data can be read but not changed at the moment; nothing was saved",
    ),
    (
        ConnectionFailedError,
        503,
        "Database unavailable",
        "database-unavailable",
        "the database cannot be reached at the moment; try again later",
    ),
    (
        TransactionFailedError,
        503,
        "Try again",
        "transaction-failed",
        "the work collided with other work at the same moment and was undone; try again",
    ),
    (FlowstoreError, 500, "Internal error", "internal-error", "the request could not be completed"),
)

#: HTTP status per error class (the contract's table, and flowstore's other errors).
STATUSES: dict[type[FlowstoreError], int] = {kind[0]: kind[1] for kind in _KINDS}

#: Errors whose message a client may read once cleaned (flowstore's own wording); the others'
#: messages are for operators and are replaced by the fixed detail.
_SHOWN = (NotFoundError, AlreadyExistsError, ConcurrencyError, InvalidInputError)

_TYPE_PREFIX = "urn:flowstore:problem:"


def problem_for(error: FlowstoreError) -> Problem:
    """The problem details for ``error``."""
    for kind, status, title, slug, fixed in _KINDS:
        if isinstance(error, kind):
            return Problem(status, title, _TYPE_PREFIX + slug, _detail(error, fixed))
    raise AssertionError("FlowstoreError closes the table")


def _detail(error: FlowstoreError, fixed: str) -> str:
    if not isinstance(error, _SHOWN):
        return fixed
    database_error = _database_cause(error)
    if database_error is None:
        return _clean(str(error)) or fixed
    return _explain(database_error, error) or fixed


def _database_cause(error: BaseException) -> sa_exc.DBAPIError | None:
    """The database's own error behind ``error``, when the database raised it."""
    seen: BaseException | None = error.__cause__
    while seen is not None:
        if isinstance(seen, sa_exc.DBAPIError):
            return seen
        seen = seen.__cause__
    return None


# -- flowstore's own messages -------------------------------------------------------------------

_REPRS = (
    (re.compile(r"\bUUID\('([0-9a-fA-F-]{32,36})'\)"), r"\1"),
    (re.compile(r"\bDecimal\('([^']*)'\)"), r"\1"),
    (re.compile(r"<(\w+)\.(\w+): '([^']*)'>"), r"'\3'"),  # an enum member
)


def _clean(message: str) -> str:
    text = mask_secrets(message.strip().splitlines()[0] if message.strip() else "")
    for pattern, replacement in _REPRS:
        text = pattern.sub(replacement, text)
    return text


# -- what the database refused, in the client's terms ----------------------------------------

_QUOTED = re.compile(r"[\"'`]([A-Za-z_][\w$]*)[\"'`]")
_DOTTED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)\b")


def _explain(database_error: sa_exc.DBAPIError, error: FlowstoreError) -> str | None:
    text = str(database_error.orig)
    names = set(_QUOTED.findall(text))
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name in names:
                return _constraint_detail(table, constraint, error)
        for index in table.indexes:
            if index.unique and index.name in names:
                return _columns_taken(table, list(index.columns))
    for table_name, column_name in _DOTTED.findall(text):  # SQLite: "... failed: table.column"
        found = Base.metadata.tables.get(table_name)
        if found is not None and column_name in found.c:
            column = found.c[column_name]
            if isinstance(error, AlreadyExistsError):
                return _columns_taken(found, [column])
            return f"{column.name} is required"
    if isinstance(error, InvalidInputError):
        for name in names:  # "null value in column "x"", "Column 'x' cannot be null"
            if "null" in text.lower() and any(name in t.c for t in Base.metadata.tables.values()):
                return f"{name} is required"
    return None


def _constraint_detail(table: Table, constraint: Any, error: FlowstoreError) -> str | None:
    columns: list[Column[Any]] = list(constraint.columns)
    if isinstance(constraint, ForeignKeyConstraint):
        referred = constraint.referred_table.name
        return (
            f"{', '.join(c.name for c in columns)} does not refer to an existing {_thing(referred)}"
        )
    if isinstance(error, AlreadyExistsError) or isinstance(constraint, UniqueConstraint):
        return _columns_taken(table, columns)
    return f"the values break the rule {constraint.name!s}"


def _columns_taken(table: Table, columns: list[Column[Any]]) -> str:
    fields = " and ".join(c.name for c in columns) or "key"
    thing = _thing(table.name)
    article = "an" if thing[:1] in set("aeiou") else "a"
    return f"{article} {thing} with this {fields} already exists"


def _thing(table_name: str) -> str:
    """``"organizations"`` -> ``"organization"``: what a row of the table is called."""
    for mapper in Base.registry.mappers:
        if getattr(mapper.local_table, "name", None) == table_name:
            words = re.sub(r"(?<!^)(?=[A-Z])", " ", mapper.class_.__name__)
            return words.lower()
    return table_name.removesuffix("s")
