"""Statement timeouts: the per-dialect mechanics behind ``statement_timeout`` and
``store.unit_of_work(timeout=...)``.

A session carries its timeout (seconds) in ``session.info``; when its transaction begins on a
connection the dialect's limit is put in place for that transaction only, so nothing outlives
it in the pool (and PgBouncer's transaction pooling keeps working):

- PostgreSQL: ``SET LOCAL statement_timeout`` (ends with the transaction; one round trip).
- MariaDB: each statement is sent as ``SET STATEMENT max_statement_time=N FOR ...``; MySQL
  gets the ``MAX_EXECUTION_TIME`` optimizer hint, which covers ``SELECT`` only. No session
  variable is set, so a pooled connection keeps nothing.
- SQLite: a progress handler interrupts a statement past its deadline, and the busy timeout is
  lowered to the limit for the transaction (a statement waiting for a lock runs no code).

A statement cut off raises ``StatementTimeoutError``. Its transaction is then *doomed* on every
backend alike (PostgreSQL aborts it, SQLite rolls back an interrupted write by itself, MariaDB
would go on): every later statement and the commit raise ``TransactionFailedError`` until it is
rolled back. The engine listeners are installed on an engine the first time one of its
sessions asks for a timeout, so a store that never uses one pays nothing per statement.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, SessionTransaction

from flowstore.errors import (
    InvalidInputError,
    StatementTimeoutError,
    TransactionFailedError,
    describe,
    translate,
)
from flowstore.sessions import FlowstoreSession

__all__ = ["SESSION_KEY", "check_timeout", "prepare_engine", "timeout_info"]

#: ``session.info`` key of a session's statement timeout, in seconds.
SESSION_KEY = "flowstore_statement_timeout"

_LIMIT = "flowstore_timeout"  # execution option: the transaction's limit, seconds
_DOOMED = "flowstore_timed_out"  # execution option: a statement of this transaction timed out
_DEADLINE = "flowstore_deadline"  # execution option (SQLite): the running statement's deadline
_BUSY = "flowstore_busy_ms"  # execution option (SQLite): the busy timeout to restore
_PROGRESS_STEPS = 1000  # SQLite VM steps between two looks at the clock

_prepared: weakref.WeakSet[Engine] = weakref.WeakSet()
_prepare_lock = threading.Lock()


def check_timeout(value: Any, name: str = "timeout") -> float | None:
    """A timeout in seconds: a positive finite number, or ``None`` for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInputError(
            f"{name} must be a positive number of seconds, got {describe(value)}"
        )
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number of seconds")
    return float(value)


def timeout_info(timeout: float | None) -> dict[str, Any]:
    """The ``session.info`` entries that give a session ``timeout`` (none for ``None``)."""
    return {} if timeout is None else {SESSION_KEY: timeout}


def prepare_engine(engine: Engine) -> None:
    """Install the statement listeners on ``engine`` (the sync engine of an async one), once.
    Called before a session with a timeout opens its connection."""
    if engine in _prepared:
        return
    with _prepare_lock:
        if engine in _prepared:
            return
        backend = engine.dialect.name
        if backend in {"mysql", "mariadb"}:
            event.listen(engine, "before_cursor_execute", _limit_mysql_statement, retval=True)
        else:
            event.listen(engine, "before_cursor_execute", _refuse_if_doomed)
        if backend == "sqlite":
            event.listen(engine, "commit", _end_sqlite)
            event.listen(engine, "rollback", _end_sqlite)
        event.listen(engine, "handle_error", _note_timeout)
        event.listen(engine, "commit", _refuse_commit_if_doomed)
        event.listen(engine, "rollback", _forgive)
        _prepared.add(engine)


@event.listens_for(FlowstoreSession, "after_begin")
def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    limit = session.info.get(SESSION_KEY)
    if limit is None or transaction.nested:  # a SAVEPOINT keeps its transaction's limit
        return
    connection.execution_options(**{_LIMIT: limit, _DOOMED: False})
    backend = connection.dialect.name
    if backend == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(limit * 1000))}")
    elif backend == "sqlite":
        _begin_sqlite(connection, limit)


# -- every backend: a timed-out transaction is doomed ------------------------------------------


def _note_timeout(context: ExceptionContext) -> None:
    connection, error = context.connection, context.sqlalchemy_exception
    if (
        connection is not None
        and error is not None
        and isinstance(translate(error), StatementTimeoutError)
    ):
        connection.execution_options(**{_DOOMED: True})


def _doomed(connection: Connection) -> bool:
    return bool(connection.get_execution_options().get(_DOOMED))


def _refusal() -> TransactionFailedError:
    return TransactionFailedError(
        "a statement of this unit of work ran past its timeout, so the rest of its "
        "transaction is refused; roll it back (leaving the `with` block does) and run it again"
    )


def _refuse_if_doomed(
    connection: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    if _doomed(connection):
        raise _refusal()
    deadline = connection.get_execution_options().get(_DEADLINE)
    if deadline is not None:
        deadline[0] = time.monotonic() + connection.get_execution_options()[_LIMIT]


def _refuse_commit_if_doomed(connection: Connection) -> None:
    if _doomed(connection):
        raise _refusal()


def _forgive(connection: Connection) -> None:
    if _doomed(connection):
        connection.execution_options(**{_DOOMED: False})


# -- MariaDB / MySQL: the limit rides on each statement -----------------------------------------

_LIMITED_VERBS = ("select", "insert", "update", "delete", "replace", "with")


def _limit_mysql_statement(
    connection: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> tuple[str, Any]:
    options = connection.get_execution_options()
    if options.get(_DOOMED):
        raise _refusal()
    limit = options.get(_LIMIT)
    if limit is None:
        return statement, parameters
    head = statement.lstrip()[:7].lower()
    if not head.startswith(_LIMITED_VERBS):
        return statement, parameters
    if connection.dialect.name == "mariadb" or getattr(connection.dialect, "is_mariadb", False):
        return f"SET STATEMENT max_statement_time={limit:.6f} FOR {statement}", parameters
    if head.startswith("select"):  # MySQL's hint goes right after SELECT
        stripped = statement.lstrip()
        hint = f"SELECT /*+ MAX_EXECUTION_TIME({max(1, round(limit * 1000))}) */"
        return hint + stripped[6:], parameters
    return statement, parameters


# -- SQLite: interrupt past the deadline; lock waits bounded by the busy timeout ----------------


def _begin_sqlite(connection: Connection, limit: float) -> None:
    deadline = [math.inf]  # set as each statement starts (``_refuse_if_doomed``)

    def past_deadline() -> int:
        return 1 if time.monotonic() > deadline[0] else 0

    raw = connection.connection.driver_connection
    _set_progress_handler(connection, raw, past_deadline)
    busy = int(connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one())
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {min(busy, max(1, round(limit * 1000)))}")
    connection.execution_options(**{_DEADLINE: deadline, _BUSY: busy})


def _end_sqlite(connection: Connection) -> None:
    options = connection.get_execution_options()
    deadline = options.get(_DEADLINE)
    if deadline is None:
        return
    deadline[0] = math.inf  # COMMIT itself is never cut off
    connection.execution_options(**{_DEADLINE: None})
    raw = connection.connection.driver_connection
    _set_progress_handler(connection, raw, None)
    _pragma(connection, raw, f"PRAGMA busy_timeout = {int(options[_BUSY])}")


def _set_progress_handler(connection: Connection, raw: Any, handler: Any) -> None:
    """On pysqlite's connection directly; on aiosqlite's, awaited from the greenlet."""
    if connection.dialect.is_async:
        from flowstore.sa_compat import await_in_greenlet

        await_in_greenlet(raw.set_progress_handler(handler, _PROGRESS_STEPS))
    else:
        raw.set_progress_handler(handler, _PROGRESS_STEPS)


def _pragma(connection: Connection, raw: Any, sql: str) -> None:
    """A PRAGMA outside SQLAlchemy's statement events (it runs inside COMMIT's own event)."""
    if connection.dialect.is_async:
        from flowstore.sa_compat import await_in_greenlet

        await_in_greenlet(raw.execute(sql))
    else:
        raw.execute(sql)
