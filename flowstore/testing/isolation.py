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

from flowstore.config import Settings
from flowstore.errors import InvalidInputError, translating
from flowstore.store import Store
from flowstore.testing.binding import using_session
from flowstore.uow import UnitOfWork

__all__ = ["isolated_unit_of_work", "migrated_store"]

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

    For the duration, ``store.unit_of_work()`` (and so ``store.run_in_transaction``) joins the
    same outer transaction, so code under test that takes the store is isolated too, and
    flowstore's factories write through this unit of work's session. The store's sessions
    share that one connection until the block ends, so only the thread that opened the block
    may use them (another gets ``InvalidInputError`` before any SQL runs); on the in-memory
    database the engine also refuses any other connection meanwhile, so nothing can end the
    outer transaction behind the test's back.
    """
    factory = store.session_factory
    if isinstance(factory.kw.get("bind"), Connection):
        raise InvalidInputError(
            "this store is already inside an isolated unit of work; nest with uow.savepoint()"
        )
    saved = {key: factory.kw[key] for key in _BOUND_KEYS if key in factory.kw}
    owner = threading.get_ident()

    def _owner_only(*_: Any) -> None:
        if threading.get_ident() != owner:
            raise InvalidInputError(
                "another thread used the store while a test's isolated unit of work held its "
                "connection; its work could not be rolled back with the test's, so it is refused"
            )

    with translating():
        connection = store.engine.connect()
    try:
        event.listen(connection, "before_cursor_execute", _owner_only)
        with translating():
            outer = connection.begin()
        factory.configure(bind=connection, join_transaction_mode="create_savepoint")
        try:
            uow = store.unit_of_work()
            uow.rollback_on_exit = True
            with uow, using_session(uow.session, uow.context.settings):
                yield uow
        finally:
            for key in _BOUND_KEYS:
                factory.kw.pop(key, None)
            factory.configure(**saved)
            with translating():
                outer.rollback()
    finally:
        connection.close()
