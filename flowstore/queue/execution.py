"""Where the queue's calls run: a short transaction of its own per call, or the caller's.

``store.queue(name)`` (a ``ShortTransactions`` source) runs each call on a connection of the
store's engine, with Core statements and no ``Session``: a claim or an acknowledgement is one
statement, and on PostgreSQL a call of one statement runs in autocommit, so it costs one round
trip and no BEGIN/COMMIT (the statement is its own transaction, atomic as one). MySQL/MariaDB
(where switching autocommit costs round trips of its own) and SQLite (in-process) run every call
in a transaction. ``uow.queue(name)`` (a ``CallerSession``) runs on the connection of the unit of
work's transaction, which the caller commits; any other ``SessionSource`` runs in its sessions.
"""

from __future__ import annotations

from collections.abc import Callable
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


class OwnTransactions:
    """Each call is a transaction of its own on the source's engine (see the module)."""

    owns_transactions = True

    def __init__(self, source: ShortTransactions) -> None:
        self._source = source
        self._engine: Engine | None = None
        self._autocommit: Engine | None = None

    def engine(self) -> Engine:
        if self._engine is None:
            with self._source.factory() as session:
                bind = session.get_bind()
            engine = bind if isinstance(bind, Engine) else bind.engine
            if engine.dialect.name == "postgresql":
                self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._engine = engine
        return self._engine

    def run(self, work: Callable[[Connection], R], *, single: bool = False, retries: int = 0) -> R:
        engine = self.engine()
        for attempt in range(retries + 1):
            try:
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

    def run(self, work: Callable[[Connection], R], *, single: bool = False, retries: int = 0) -> R:
        with translating(), self._source.transaction() as session:
            return work(session.connection())


def execution_for(source: SessionSource) -> Execution:
    """How a queue over ``source`` runs its calls."""
    if isinstance(source, ShortTransactions):
        return OwnTransactions(source)
    return SourceSessions(source)
