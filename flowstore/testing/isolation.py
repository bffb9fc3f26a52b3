"""Test databases: a store migrated by the real revisions, and units of work that leave no trace.

``isolated_unit_of_work(store)`` is the "join an external transaction" recipe: one connection
opens an outer transaction, and every session of the store is bound to that connection with
``join_transaction_mode="create_savepoint"``. A ``commit()`` inside then only releases a
savepoint, and the outer transaction is rolled back at the end, so the next test starts from
the same empty, migrated database without re-creating anything. On SQLite this relies on
flowstore's engine emitting ``BEGIN`` itself (pysqlite's own transaction handling is off),
which is what makes ``SAVEPOINT`` usable there.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, MetaData, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import SessionTransaction, sessionmaker

from flowstore.config import Settings
from flowstore.errors import InvalidInputError, translating
from flowstore.store import Store
from flowstore.testing.binding import using_session
from flowstore.uow import UnitOfWork

__all__ = ["ConnectionTurns", "isolated_unit_of_work", "migrated_store"]

U = TypeVar("U", bound=UnitOfWork)

_BOUND_KEYS = ("bind", "join_transaction_mode")


def migrated_store(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    unit_of_work_class: type[UnitOfWork] = UnitOfWork,
    migrations: str | os.PathLike[str] | None = None,
) -> Store[Any]:
    """A store at the head revision, reached by running the Alembic revisions themselves.

    ``url=None`` is a new in-memory SQLite database (``FLOWSTORE_DATABASE_URL`` is deliberately
    not read, so a test run never lands on a configured production database). ``Store`` builds
    an in-memory schema straight from the models; here it is dropped and replayed from the
    migrations once, so tests run against exactly what ``flowstore db upgrade`` produces. A
    server or file database is upgraded to head (a no-op when it is already there).

    A service passes its ``unit_of_work_class`` and ``migrations`` folder: its tables are
    migrated after flowstore's, and units of work are of its class.
    """
    store: Store[Any] = Store(
        url if url is not None else "sqlite://",
        settings=settings,
        unit_of_work_class=unit_of_work_class,
        migrations=migrations,
    )
    try:
        if store.is_memory:
            with translating(), store.engine.begin() as conn:
                existing = MetaData()
                existing.reflect(conn)
                existing.drop_all(conn)
        store.upgrade()
    except BaseException:
        store.close()
        raise
    return store


@contextlib.contextmanager
def isolated_unit_of_work(store: Store[U]) -> Iterator[U]:
    """An active unit of work whose writes, commits included, are rolled back on exit.

    For the duration, ``store.unit_of_work()`` (and so ``store.run_in_transaction``, the
    queue, an app under test) joins the same outer transaction, from any thread: an app that
    ``TestClient`` runs in another thread writes into the test's transaction, the test sees it,
    and it is gone afterwards. The one connection is lent (``ConnectionTurns``): a session of
    another thread has it from its first statement to the end of its transaction, while the
    test's thread waits; the test's own statements take it one at a time. On the in-memory
    database the engine refuses any other connection meanwhile, so nothing can end the outer
    transaction behind the test's back; ``store.close()`` (an app's shutdown) is put off.
    """
    factory = store.session_factory
    if isinstance(factory.kw.get("bind"), Connection):
        raise InvalidInputError(
            "this store is already inside an isolated unit of work; nest with uow.savepoint()"
        )
    saved = {key: factory.kw[key] for key in _BOUND_KEYS if key in factory.kw}
    turns = ConnectionTurns(threading.get_ident(), store.settings.pool_timeout)

    with translating():
        connection = store.engine.connect()
    try:
        turns.watch(connection, factory)
        with translating():
            outer = connection.begin()
        factory.configure(bind=connection, join_transaction_mode="create_savepoint")
        setattr(store, "close", _put_off)  # noqa: B010 (an instance attribute, for the block)
        try:
            uow = store.unit_of_work()
            uow.rollback_on_exit = True
            with uow, using_session(uow.session, uow.context.settings):
                yield uow
        finally:
            vars(store).pop("close", None)
            for key in _BOUND_KEYS:
                factory.kw.pop(key, None)
            factory.configure(**saved)
            turns.unwatch(connection, factory)
            with translating():
                outer.rollback()
    finally:
        connection.close()


def _put_off() -> None:
    """``store.close()`` while a test holds the store: the store stays open for the test."""


class ConnectionTurns:
    """Who may use the test's one connection, so that sessions of several threads never mix
    their statements or savepoints on it.

    A session whose transaction begins in another thread (an app under test) takes the turn
    then and keeps it until that transaction ends, in whichever thread (a web framework may
    enter, run and leave a dependency in three worker threads): its SAVEPOINT is released or
    rolled back before anyone else's begins. The test's thread takes the turn for one
    statement at a time, so it never keeps an app waiting; sessions it opens itself nest in
    its own. Whoever finds the turn taken waits, up to ``timeout`` seconds.
    """

    def __init__(self, owner: int, timeout: float) -> None:
        self.owner = owner
        self.timeout = timeout
        self._lock = threading.Lock()
        self._holder: object = None

    def watch(self, connection: Connection, factory: sessionmaker[Any]) -> None:
        """Guard ``connection`` and the sessions ``factory`` makes."""
        event.listen(connection, "before_cursor_execute", self._before_statement)
        event.listen(connection, "after_cursor_execute", self._after_statement)
        event.listen(connection.engine, "handle_error", self._after_error)
        event.listen(factory, "after_transaction_create", self._transaction_begins)
        event.listen(factory, "after_transaction_end", self._transaction_ends)

    def unwatch(self, connection: Connection, factory: sessionmaker[Any]) -> None:
        """Stop guarding (the connection's own listeners go when it closes)."""
        event.remove(connection.engine, "handle_error", self._after_error)
        event.remove(factory, "after_transaction_create", self._transaction_begins)
        event.remove(factory, "after_transaction_end", self._transaction_ends)

    def _take(self, holder: object) -> None:
        if not self._lock.acquire(timeout=self.timeout):
            raise InvalidInputError(
                f"the test's connection stayed busy for {self.timeout:g}s: a unit of work of "
                "another thread did not end (close every unit of work; do not use the store "
                "in the test while a request is running)"
            )
        self._holder = holder

    def _give_back(self, holder: object) -> None:
        if self._holder is holder:
            self._holder = None
            self._lock.release()

    def _before_statement(self, *_: Any) -> None:
        if threading.get_ident() == self.owner:
            self._take(self)

    def _after_statement(self, *_: Any) -> None:
        if threading.get_ident() == self.owner:
            self._give_back(self)

    def _after_error(self, context: ExceptionContext) -> None:
        if context.connection is not None and threading.get_ident() == self.owner:
            self._give_back(self)

    def _transaction_begins(self, session: Any, transaction: SessionTransaction) -> None:
        if transaction.parent is None and threading.get_ident() != self.owner:
            self._take(session)

    def _transaction_ends(self, session: Any, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self._give_back(session)
