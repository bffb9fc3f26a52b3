"""flowstore's sessions, and "a session to work in" for code that does not own one.

``FlowstoreSession`` is the ``Session`` class of every store's ``session_factory`` (and the
sync session of every ``AsyncSession`` of an ``AsyncStore``). flowstore's session-wide
listeners are installed on it, never on SQLAlchemy's ``Session``, so importing flowstore
changes nothing in an application's other sessions.

``SessionSource`` is what the queue, the worker and other helpers take instead of a store or a
unit of work: ``with source.transaction() as session:`` gives either a short transaction of
its own, committed when the block ends (``ShortTransactions``), or the caller's session, left
for the caller to commit (``CallerSession``). Code written against it runs unchanged in both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "CallerSession",
    "FlowstoreSession",
    "SessionSource",
    "ShortTransactions",
    "lent_connection",
    "session_factory",
]


class FlowstoreSession(Session):
    """The session class of flowstore's stores; its class-level listeners concern flowstore's
    sessions only."""


def session_factory(bind: Engine | None = None, **options: Any) -> sessionmaker[Session]:
    """A ``sessionmaker`` of ``FlowstoreSession`` (``expire_on_commit=False``: entities stay
    readable after their unit of work ends)."""
    options.setdefault("expire_on_commit", False)
    return sessionmaker(bind, class_=FlowstoreSession, **options)


def lent_connection(factory: Any) -> Any:
    """The one connection a (sync or async) session factory is bound to meanwhile, or
    ``None``: ``flowstore.testing`` binds a store's factory to the test's connection, so that
    every session of the store is a savepoint in the test's transaction."""
    bind = factory.kw.get("bind")
    return bind if isinstance(bind, Connection | AsyncConnection) else None


class SessionSource(Protocol):
    """Where a piece of work gets the session it runs in."""

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        """A session in a transaction, for the length of the block."""
        ...

    def describe(self) -> str:
        """What the sessions are, for reprs and messages."""
        ...


class ShortTransactions:
    """Each block is a transaction of its own on a new session: committed when it ends,
    rolled back when it raises."""

    def __init__(self, factory: sessionmaker[Session], label: str = "") -> None:
        self.factory = factory
        self.label = label

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.factory() as session, session.begin():
            yield session

    def describe(self) -> str:
        return self.label or "its own transactions"

    @property
    def lent_connection(self) -> Connection | None:
        """The connection the factory is bound to meanwhile (see :func:`lent_connection`)."""
        lent = lent_connection(self.factory)
        return lent if isinstance(lent, Connection) else None


class CallerSession:
    """Every block works in the caller's session and transaction, which the caller commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        yield self.session

    def describe(self) -> str:
        return "the caller's transaction"
