"""Read-only units of work: a write is refused before anything reaches the database.

A read-only unit of work (``store.unit_of_work(read_only=True)``) runs on an engine made by
:func:`read_only_engine`: its connections carry the ``flowstore_read_only`` execution option,
and on PostgreSQL its transactions begin ``READ ONLY`` (``postgresql_readonly``, no extra round
trip). Two guards then refuse writes with ``ReadOnlyError``:

- the flush: new, changed or deleted objects are refused before it sends anything;
- every statement the connection sends: an ``INSERT``/``UPDATE``/``DELETE`` (compiled, or SQL
  text starting with a writing keyword) is refused before the cursor runs it. That also covers
  what bypasses the flush (``add_many``'s batches, ``update_many``, the queue).

A test's connection (``flowstore.testing`` lends one to every session of the store) is marked
and watched for the read-only session's transaction only.

PostgreSQL's ``READ ONLY`` transaction (and a replica itself) refuses what text can hide
(``WITH ... DELETE``, a function that writes): that is ``ReadOnlyError`` as well.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from flowstore.errors import ReadOnlyError
from flowstore.events.capture import bulk_aware
from flowstore.sessions import FlowstoreSession

__all__ = ["READ_ONLY", "read_only_async_engine", "read_only_engine", "refusal"]

#: ``Session.info`` key (and execution option) of a read-only unit of work's session.
READ_ONLY = "flowstore_read_only"

_LENT = "flowstore_read_only_lent"  # Session.info: the lent connection it marked
_watched: weakref.WeakSet[Connection] = weakref.WeakSet()
_WRITING = frozenset(
    {"insert", "update", "delete", "merge", "upsert", "replace", "create", "drop", "alter",
     "truncate", "grant", "revoke", "copy", "call", "lock", "vacuum", "refresh", "cluster",
     "reindex", "comment", "rename", "load"}
)  # fmt: skip


def refusal(what: str) -> ReadOnlyError:
    """The error for ``what`` was asked of a read-only unit of work."""
    return ReadOnlyError(
        f"this unit of work is read-only (unit_of_work(read_only=True)): {what} was refused "
        "and nothing was written; use a unit of work without read_only=True to write"
    )


def _options(engine: Engine) -> dict[str, Any]:
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    return options


def read_only_engine(engine: Engine) -> Engine:
    """``engine`` for read-only units of work: the same pool, its connections marked (and
    ``READ ONLY`` on PostgreSQL), every statement they send checked. The check listens on the
    returned engine alone: ``engine``'s other connections stay unwatched (``add_many``'s
    ``COPY`` needs that, ``flowstore.writes.send.quiet``)."""
    guarded = engine.execution_options(**_options(engine))
    event.listen(guarded, "before_cursor_execute", _refuse_writes)
    return guarded


def read_only_async_engine(engine: AsyncEngine) -> AsyncEngine:
    """:func:`read_only_engine` for an ``AsyncEngine``."""
    guarded = engine.execution_options(**_options(engine.sync_engine))
    event.listen(guarded.sync_engine, "before_cursor_execute", _refuse_writes)
    return guarded


def _refuse_writes(
    connection: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    dml = context.isinsert or context.isupdate or context.isdelete
    _refuse_if_writing(connection, dml, statement)


def _refuse_write_statements(
    connection: Connection, statement: Any, *args: Any, **kwargs: Any
) -> None:
    text = statement if isinstance(statement, str) else getattr(statement, "text", None)
    _refuse_if_writing(connection, getattr(statement, "is_dml", False), text)


def _refuse_if_writing(connection: Connection, dml: bool, text: str | None) -> None:
    """``ReadOnlyError`` for a DML statement, or SQL text starting with a writing keyword, on a
    connection marked read-only."""
    if not connection.get_execution_options().get(READ_ONLY):
        return
    if dml:
        raise refusal("an INSERT, UPDATE or DELETE")
    word = _first_word(text) if isinstance(text, str) else ""
    if word in _WRITING:
        raise refusal(f"a statement {word.upper()} ...")


def _first_word(statement: str) -> str:
    text = statement.lstrip(" \t\r\n(")
    end = 0
    while end < len(text) and (text[end].isalpha() or text[end] == "_"):
        end += 1
    return text[:end].lower()


@event.listens_for(FlowstoreSession, "before_flush")
@bulk_aware  # add_many's batches bypass the flush: the statement guard sees them instead
def _refuse_changes(session: Session, transaction: UOWTransaction, instances: Any) -> None:
    if not session.info.get(READ_ONLY):
        return
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise refusal("saving new, changed or deleted objects")


# A test's lent connection (flowstore.testing binds the store's sessions to it) is not one of
# a read-only engine's: it is marked, and watched, for the read-only session's transaction only.


@event.listens_for(FlowstoreSession, "after_begin")
def _mark_lent_connection(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    if not session.info.get(READ_ONLY) or connection.get_execution_options().get(READ_ONLY):
        return
    if connection not in _watched:  # before_execute: before the test kit takes its turn
        event.listen(connection, "before_execute", _refuse_write_statements)
        _watched.add(connection)
    connection.execution_options(**{READ_ONLY: True})
    session.info[_LENT] = connection


@event.listens_for(FlowstoreSession, "after_transaction_end")
def _unmark_lent_connection(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and _LENT in session.info:
        connection = session.info.pop(_LENT)
        if not connection.closed:
            connection.execution_options(**{READ_ONLY: False})
