"""Where the queue's calls run: a short transaction of its own per call, or the caller's.

``store.queue(name)`` (a ``ShortTransactions`` source) runs each call on a connection of the
store's engine, with Core statements and no ``Session``: a claim or an acknowledgement is one
statement, and on PostgreSQL a call of one statement runs in autocommit, so it costs one round
trip and no BEGIN/COMMIT (the statement is its own transaction, atomic as one). MySQL/MariaDB
(where switching autocommit costs round trips of its own) and SQLite (in-process) run every call
in a transaction. ``uow.queue(name)`` (a ``CallerSession``) runs on the connection of the unit of
work's transaction, which the caller commits; any other ``SessionSource`` runs in its sessions.

``pinned()`` keeps one connection for the calls a thread makes inside the block (a worker's
loop): no pool checkout, no pre-ping and no reset per call. A connection found broken is
dropped after the failed call, and the next call takes a fresh one from the pool. SQLite is
never pinned (its in-memory database has one connection, shared by turns).

While ``flowstore.testing`` lends the test's connection to the store's sessions, a queue of the
store runs each call in a session of them: a savepoint in the test's transaction, rolled back
with it, whether the queue was made before the test began or during it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

from sqlalchemy import Connection, Engine

from flowstore.errors import TransactionFailedError, translating
from flowstore.sessions import SessionSource, ShortTransactions

__all__ = ["Execution", "execution_for"]

R = TypeVar("R")


class Execution(Protocol):
    """Runs a piece of queue work on a connection, in a transaction as described above."""

    owns_transactions: bool

    def run(self, work: Callable[[Connection], R], *, single: bool = False, retries: int = 0) -> R:
        """``work(connection)``; ``single`` says it sends one writing statement (autocommit
        may do), ``retries`` how often a deadlock of an own transaction is tried again."""
        ...

    def engine(self) -> Engine | None:
        """The engine of an own-transaction execution (``None`` for the caller's)."""
        ...

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        """Keep one connection for this thread's calls in the block (see the module)."""
        ...


class OwnTransactions:
    """Each call is a transaction of its own on the source's engine (see the module)."""

    owns_transactions = True

    def __init__(self, source: ShortTransactions) -> None:
        self._source = source
        self._engine: Engine | None = None
        self._autocommit: Engine | None = None
        self._local = threading.local()

    def engine(self) -> Engine:
        if self._engine is None:
            lent = self._source.lent_connection
            if lent is not None:
                engine = lent.engine
            else:
                with self._source.factory() as session:
                    bind = session.get_bind()
                engine = bind if isinstance(bind, Engine) else bind.engine
            if engine.dialect.name == "postgresql":
                self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._engine = engine
        return self._engine

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        engine = self.engine()
        if (
            engine.dialect.name == "sqlite"
            or getattr(self._local, "pins", False)
            or self._source.lent_connection is not None
        ):
            yield
            return
        self._local.pins = True
        try:
            yield
        finally:
            self._local.pins = False
            conn = getattr(self._local, "conn", None)
            self._local.conn = None
            if conn is not None:
                with translating():
                    conn.close()

    def _pinned_connection(self, single: bool) -> Connection | None:
        """This thread's pinned connection, if it is pinned and may run this call (on
        PostgreSQL it is in autocommit: it runs single statements only)."""
        if not getattr(self._local, "pins", False) or (self._autocommit is not None and not single):
            return None
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with translating():  # an outage is ConnectionFailedError here too
                conn = (self._autocommit or self.engine()).connect()
            self._local.conn = conn
        return conn

    def _run_pinned(self, conn: Connection, work: Callable[[Connection], R]) -> R:
        try:
            with translating():
                if self._autocommit is not None:
                    return work(conn)
                with conn.begin():
                    return work(conn)
        finally:
            if conn.invalidated or conn.closed:
                self._local.conn = None
                with contextlib.suppress(Exception):
                    conn.close()

    def run(self, work: Callable[[Connection], R], *, single: bool = False, retries: int = 0) -> R:
        if self._source.lent_connection is not None:  # a test's: a savepoint in its transaction
            with translating(), self._source.transaction() as session:
                return work(session.connection())
        engine = self.engine()
        for attempt in range(retries + 1):
            try:
                pinned = self._pinned_connection(single)
                if pinned is not None:
                    return self._run_pinned(pinned, work)
                with translating():
                    if single and self._autocommit is not None:
                        with self._autocommit.connect() as conn:
                            return work(conn)
                    with engine.begin() as conn:
                        return work(conn)
            except TransactionFailedError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")


class SourceSessions:
    """Each call runs in a session of the source: the caller's transaction (``CallerSession``)
    or whatever transactions the source gives."""

    owns_transactions = False

    def __init__(self, source: SessionSource) -> None:
        self._source = source

    def engine(self) -> Engine | None:
        return None

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        yield  # the caller's session is what it is

    def run(self, work: Callable[[Connection], R], *, single: bool = False, retries: int = 0) -> R:
        with translating(), self._source.transaction() as session:
            return work(session.connection())


def execution_for(source: SessionSource) -> Execution:
    """How a queue over ``source`` runs its calls."""
    if isinstance(source, ShortTransactions):
        return OwnTransactions(source)
    return SourceSessions(source)
