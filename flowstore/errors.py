"""The flowstore error hierarchy, and the one place where DBAPI/SQLAlchemy errors are mapped to it.

Every public call raises only these types. Messages never carry a password: URLs are masked
before they reach a message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

__all__ = [
    "AlreadyExistsError",
    "ConcurrencyError",
    "ConnectionFailedError",
    "FlowstoreError",
    "InvalidInputError",
    "NotFoundError",
    "ReadOnlyError",
    "StatementTimeoutError",
    "TenantScopeError",
    "TransactionFailedError",
    "describe",
    "mask_secrets",
    "translate",
    "translating",
]


class FlowstoreError(Exception):
    """Base class of every error a public flowstore call raises."""


class NotFoundError(FlowstoreError):
    """The entity (or mapping, or job) asked for does not exist."""


class AlreadyExistsError(FlowstoreError):
    """A unique key (primary key or unique constraint) is taken."""


class InvalidInputError(FlowstoreError):
    """The input is wrong: unknown field, bad value, broken foreign key, NOT NULL or CHECK."""


class TenantScopeError(InvalidInputError):
    """A tenant-scoped unit of work was asked to touch another organization's rows, or data
    that belongs to no organization (see docs/security.md)."""


class ConnectionFailedError(FlowstoreError):
    """The database cannot be reached, or the connection was lost mid-call."""


class TransactionFailedError(FlowstoreError):
    """The transaction could not complete (deadlock, serialization failure, lock timeout);
    running the unit of work again may succeed."""


class ConcurrencyError(FlowstoreError):
    """An optimistic-lock check failed: the row changed (or vanished) since it was read."""


class ReadOnlyError(FlowstoreError):
    """A write was asked of a read-only unit of work (``unit_of_work(read_only=True)``) or a
    read-only database (a replica, a server in read-only mode); nothing was written."""


class StatementTimeoutError(TransactionFailedError):
    """A statement ran past its time limit (``statement_timeout``, a unit of work's
    ``timeout=``, or the server-side limit just under ``network_timeout``) and was cut off.
    The unit of work's transaction is then doomed: every later statement in it is refused
    until it is rolled back (leaving the ``with`` block does). Being a
    ``TransactionFailedError``, ``run_in_transaction`` runs the unit of work again."""


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
_KV_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|\S+)", re.I
)


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs (``user:secret@``) and ``password=...`` pairs with ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)


def describe(value: object, limit: int = 80) -> str:
    """A short repr of a caller's value for a message; never fails (huge ints, hostile reprs).
    UUIDs are shown as their text, the form a client sent (no ``UUID('...')``)."""
    try:
        text = str(value) if isinstance(value, uuid.UUID) else repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return mask_secrets(text if len(text) <= limit else text[: limit - 3] + "...")


# SQLSTATE classes and vendor codes that mean "try the transaction again".
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
# lock wait timeout, deadlock, table definition changed, too many transactions
_RETRYABLE_MYSQL = {1205, 1213, 1412, 1637}
_UNIQUE_SQLSTATE = "23505"
_MYSQL_DUPLICATE = {1062, 1586}
# ... 1053: "server shutdown in progress", answered to the statements that meet a stopping server
_MYSQL_CONNECTION = {2002, 2003, 2005, 2006, 2013, 2014, 2026, 2055, 1040, 1045, 1049, 1053, 1927}
# the server cancelled a statement at its time limit (MariaDB max_statement_time, MySQL
# max_execution_time; flowstore sets them just under network_timeout, see flowstore.engine)
_MYSQL_STATEMENT_TIMEOUT = {1969, 3024}
_SQLITE_UNIQUE_CODES = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_MYSQL_SIGNAL = 1644  # a trigger's SIGNAL (the audit log's append-only guard)
# incorrect value (e.g. a UUID MariaDB's UUID type will not store), incorrect string, bad JSON
_MYSQL_BAD_VALUE = {1292, 1366, 1367, 3140}
_MYSQL_CHECK_FAILED = {3819, 4025}  # a failed CHECK (MySQL 8, MariaDB): an OperationalError
_READ_ONLY_SQLSTATES = {"25006"}  # read_only_sql_transaction
_READ_ONLY_MYSQL = {1290, 1792, 1836}  # --read-only server, READ ONLY transaction, read-only mode
_DISK_FULL_SQLSTATES = {"53100"}  # disk_full
_DISK_FULL_MYSQL = {1021, 1114}  # disk full, table is full
_SQLITE_INTERRUPT = 9  # SQLITE_INTERRUPT: flowstore's progress handler cut the statement off
_ABORTED_SQLSTATE = "25P02"  # in_failed_sql_transaction: an earlier statement failed


def _orig_message(exc: sa_exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return mask_secrets(first)


def _sqlstate(orig: Any) -> str | None:
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(state) if state else None


def _mysql_code(orig: Any) -> int | None:
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and type(orig).__module__.startswith("pymysql"):
        return args[0]
    return None


def _is_unique_violation(orig: Any) -> bool:
    if _sqlstate(orig) == _UNIQUE_SQLSTATE or _mysql_code(orig) in _MYSQL_DUPLICATE:
        return True
    if getattr(orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE_CODES:
        return True
    text = str(orig)
    return "UNIQUE constraint failed" in text or "Duplicate entry" in text


def _is_statement_timeout(orig: Any) -> bool:
    if _sqlstate(orig) == "57014":  # query_canceled: by statement_timeout, or by a user
        return "statement timeout" in str(orig)
    if _mysql_code(orig) in _MYSQL_STATEMENT_TIMEOUT:
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    return code == _SQLITE_INTERRUPT or str(orig) == "interrupted"


def _is_retryable(orig: Any) -> bool:
    if _sqlstate(orig) in _RETRYABLE_SQLSTATES or _mysql_code(orig) in _RETRYABLE_MYSQL:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text or "deadlock" in text


def _is_connection_problem(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
        return True
    orig = exc.orig
    state = _sqlstate(orig)
    if state is not None and (state.startswith("08") or state in {"57P01", "57P02", "57P03"}):
        return True
    if _mysql_code(orig) in _MYSQL_CONNECTION:
        return True
    text = str(orig).lower()
    return any(
        marker in text
        for marker in (
            "connection refused",
            "could not connect",
            "connection failed",
            "server closed the connection",
            "lost connection",
            "unable to open database file",
            "the connection is closed",
            "can't connect",
            "name or service not known",
            "timeout expired",
        )
    )


def translate(exc: BaseException) -> FlowstoreError:
    """Return the flowstore error for ``exc`` (which is returned as is when it already is one)."""
    if isinstance(exc, FlowstoreError):
        return exc
    if isinstance(exc, orm_exc.StaleDataError):
        return ConcurrencyError(
            "the row was changed or deleted by another transaction since it was read"
        )
    if isinstance(exc, sa_exc.IntegrityError):
        if _is_unique_violation(exc.orig):
            return AlreadyExistsError(f"duplicate key: {_orig_message(exc)}")
        if "no partition of relation" in str(exc.orig):  # a month not created yet
            return InvalidInputError(
                f"{_orig_message(exc)}: no partition holds the row's created_at; "
                "`flowstore db maintain` creates the months ahead (docs/scaling.md)"
            )
        return InvalidInputError(f"constraint violated: {_orig_message(exc)}")
    if isinstance(exc, sa_exc.DBAPIError):
        earlier = getattr(exc.orig, "__context__", None) or exc.__context__
        if "no such savepoint" in str(exc.orig) and isinstance(earlier, sa_exc.DBAPIError):
            # SQLite rolled the whole transaction back itself (disk full, I/O error), so the
            # SAVEPOINT's rollback failed too: the earlier error is the one that matters.
            return translate(earlier)
        if _is_statement_timeout(exc.orig):
            return StatementTimeoutError(
                "a statement ran past its time limit (the statement timeout, or the one "
                "flowstore sets just under network_timeout) and was cut off; the unit of "
                "work's transaction is rolled back (run it again, or allow it more time)"
            )
        if _sqlstate(exc.orig) == _ABORTED_SQLSTATE:
            return TransactionFailedError(
                "an earlier statement of this transaction failed, so the database refuses "
                "the rest of it; roll the unit of work back and run it again"
            )
        if _is_retryable(exc.orig):
            return TransactionFailedError(f"transaction failed, retry it: {_orig_message(exc)}")
        if _is_connection_problem(exc):
            return ConnectionFailedError(f"database connection failed: {_orig_message(exc)}")
        orig, code = exc.orig, _mysql_code(exc.orig)
        if code == _MYSQL_SIGNAL:
            return InvalidInputError(f"refused by the database: {_orig_message(exc)}")
        if code in _MYSQL_BAD_VALUE:
            return InvalidInputError(f"invalid value: {_orig_message(exc)}")
        if code in _MYSQL_CHECK_FAILED:
            return InvalidInputError(f"constraint violated: {_orig_message(exc)}")
        if (
            _sqlstate(orig) in _READ_ONLY_SQLSTATES
            or code in _READ_ONLY_MYSQL
            or ("readonly database" in str(orig))
        ):
            return ReadOnlyError(f"the database is read-only: {_orig_message(exc)}")
        if (
            _sqlstate(orig) in _DISK_FULL_SQLSTATES
            or code in _DISK_FULL_MYSQL
            or ("database or disk is full" in str(orig))
        ):
            return FlowstoreError(f"the database is out of space: {_orig_message(exc)}")
        if isinstance(exc, sa_exc.DataError):
            return InvalidInputError(f"invalid value: {_orig_message(exc)}")
        return FlowstoreError(f"database error: {_orig_message(exc)}")
    if isinstance(exc, sa_exc.PendingRollbackError):
        return TransactionFailedError(
            "the unit of work failed earlier and was rolled back; run it again: "
            + mask_secrets(str(exc).splitlines()[0])
        )
    if isinstance(exc, sa_exc.StatementError):
        # Raised before the statement reached the driver: a value its column type refused.
        cause: BaseException | None = exc.orig
        return InvalidInputError(f"invalid value: {mask_secrets(str(cause or exc))}")
    if isinstance(exc, sa_exc.TimeoutError):
        # Every pooled connection stayed checked out for pool_timeout: none could be had.
        first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ConnectionFailedError(f"no database connection available: {mask_secrets(first)}")
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.InvalidRequestError):
        return InvalidInputError(mask_secrets(str(exc).splitlines()[0]))
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return FlowstoreError(mask_secrets(str(exc).splitlines()[0]))
    return FlowstoreError(mask_secrets(f"{type(exc).__name__}: {exc}"))


#: What :func:`translating` turns into flowstore errors: SQLAlchemy's and the drivers' errors,
#: and values a driver could not encode or fit (lone surrogates, huge integers).
TRANSLATED_ERRORS = (sa_exc.SQLAlchemyError, UnicodeError, OverflowError)


def translated_error(exc: BaseException) -> FlowstoreError:
    """The flowstore error to raise (``from exc``) for one of ``TRANSLATED_ERRORS``."""
    if isinstance(exc, UnicodeError | OverflowError):
        return InvalidInputError(f"invalid value: {mask_secrets(str(exc))}")
    return translate(exc)


@contextmanager
def translating() -> Iterator[None]:
    """Run a block and re-raise any SQLAlchemy/DBAPI error as its flowstore error."""
    try:
        yield
    except TRANSLATED_ERRORS as exc:
        raise translated_error(exc) from exc
