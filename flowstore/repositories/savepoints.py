"""What guards one ``Repository.add`` so that a refused row (a duplicate key) leaves the unit of
work usable, paid for only where the database needs it.

The ORM gives that guarantee through a nested transaction: the flush runs inside it, and a
failure rolls back only the nested part (the failed object is expunged, the rest of the
session stays). On PostgreSQL a failed statement aborts the whole transaction, so the nested
transaction must be a real ``SAVEPOINT`` (two more round trips per insert). SQLite and InnoDB
(MariaDB, MySQL) roll back just the failed statement themselves: there the nested transaction
is kept for the ORM's bookkeeping but its ``SAVEPOINT``/``RELEASE``/``ROLLBACK TO`` are not
sent, which is exact as long as the block holds one statement, so it is used only for a new
object of a single-table model without relationships, with nothing else pending.

An error that ends more than the statement (a deadlock, a lost connection, SQLite rolling the
whole transaction back after an I/O error) is not a statement-level one: then the whole
transaction is rolled back before the error is raised, so nothing runs on as if it had
survived.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Dialect, Engine, event, inspect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.expression import (
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)

from flowstore.errors import TRANSLATED_ERRORS, AlreadyExistsError, InvalidInputError, translate
from flowstore.repositories.bulk import insert_many

__all__ = ["STATEMENT_ATOMIC", "guarded_insert", "insert_one"]

#: Backends whose failed statement is rolled back alone, the transaction going on.
STATEMENT_ATOMIC = frozenset({"sqlite", "mysql", "mariadb"})

_SKIP = "flowstore_statement_savepoint"  # execution option: send no savepoint statements
_SAVEPOINT_CLAUSES = (SavepointClause, ReleaseSavepointClause, RollbackToSavepointClause)
_prepared: weakref.WeakSet[Dialect] = weakref.WeakSet()
_lock = threading.Lock()


def insert_one(session: Session, model: type[Any], entity: Any) -> bool:
    """``add``'s fast path: ``entity`` written by one INSERT outside the ORM's flush (as
    ``add_many``'s batches are, ``bulk.insert_many``); ``False`` (nothing done) when the flush
    must do it (listeners, relationships, a key only the database knows).

    On SQLite and InnoDB the INSERT goes alone; on PostgreSQL inside a bare SAVEPOINT, since
    any refusal there (a duplicate key, a broken reference, a CHECK) aborts the transaction.
    ``INSERT ... ON CONFLICT DO NOTHING`` would spare the SAVEPOINT for duplicates only, and
    a broken reference would then end the unit of work (see docs/web.md for what each way
    measured)."""
    dialect = session.get_bind(mapper=inspect(model)).dialect
    if dialect.name in STATEMENT_ATOMIC:
        try:
            return insert_many(session, model, [entity], guard="none")
        except TRANSLATED_ERRORS as exc:
            _lose_all_unless_statement_level(session, exc)
            raise
    return insert_many(session, model, [entity])


def _lose_all_unless_statement_level(session: Session, exc: BaseException) -> None:
    """After a failed statement sent without a SAVEPOINT: an error that ended more than the
    statement rolls the whole transaction back, so nothing goes on as if it had survived."""
    connection = session.connection()
    if type(translate(exc)) not in (AlreadyExistsError, InvalidInputError) or _transaction_lost(
        connection
    ):
        session.rollback()


@contextlib.contextmanager
def guarded_insert(session: Session, entity: Any) -> Iterator[None]:
    """Run the block (which adds ``entity``) so that its flush failing leaves ``session``
    usable: in a ``SAVEPOINT``, or where the backend allows, in a nested transaction that
    sends none."""
    session.flush()  # earlier pending work goes first, outside the guard
    connection = session.connection()
    light = connection.dialect.name in STATEMENT_ATOMIC and _one_statement(entity)
    if not light:
        with session.begin_nested():
            yield
        return
    _prepare(connection.engine)
    connection.execution_options(**{_SKIP: True})
    try:
        with session.begin_nested():
            yield
    except TRANSLATED_ERRORS as exc:
        _lose_all_unless_statement_level(session, exc)
        raise
    finally:
        connection.execution_options(**{_SKIP: False})


def _one_statement(entity: Any) -> bool:
    """Whether flushing ``entity`` (new) is exactly one INSERT."""
    mapper: Mapper[Any] | None = inspect(type(entity), raiseerr=False)
    return mapper is not None and mapper.inherits is None and not mapper.relationships


def _transaction_lost(connection: Any) -> bool:
    """SQLite ended the transaction itself (it does after some I/O errors)."""
    if connection.dialect.name != "sqlite":
        return False
    raw = connection.connection.driver_connection
    return getattr(raw, "in_transaction", True) is False


def _prepare(engine: Engine) -> None:
    dialect = engine.dialect
    if dialect in _prepared:
        return
    with _lock:
        if dialect not in _prepared:
            event.listen(engine, "do_execute", _skip_savepoint)
            event.listen(engine, "do_execute_no_params", _skip_savepoint_no_params)
            _prepared.add(dialect)


def _skipped(context: Any) -> bool:
    compiled = getattr(context, "compiled", None)
    return (
        compiled is not None
        and isinstance(compiled.statement, _SAVEPOINT_CLAUSES)
        and bool(context.execution_options.get(_SKIP))
    )


def _skip_savepoint(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    return _skipped(context)


def _skip_savepoint_no_params(cursor: Any, statement: str, context: Any) -> bool:
    return _skipped(context)
