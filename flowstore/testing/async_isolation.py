"""Test isolation for the async face: ``isolated_async_unit_of_work(store)``, the ``AsyncStore``
twin of :func:`flowstore.testing.isolated_unit_of_work`.

One ``AsyncConnection`` opens an outer transaction and the store's session factory is bound to
it with ``join_transaction_mode="create_savepoint"``: every unit of work of the store (an app
under test driven through httpx's ``ASGITransport`` included) joins it, a commit releases a
savepoint, and the outer transaction is rolled back at the end.

Who may use it: the test's task and the tasks it starts (their context carries the test's
mark: an ASGI app called by ``ASGITransport`` runs in the test's task, a middleware's task
group in children of it). Anything else (a task started before the test, another thread) is
refused before its statement runs, since its work could not be rolled back with the test's.
One connection runs one statement at a time, so send requests one after another, not
gathered.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from flowstore.aio.store import AsyncStore
from flowstore.aio.uow import AsyncUnitOfWork
from flowstore.errors import InvalidInputError, translating
from flowstore.testing.binding import using_session

__all__ = ["isolated_async_unit_of_work"]

AU = TypeVar("AU", bound=AsyncUnitOfWork)

_BOUND_KEYS = ("bind", "join_transaction_mode")
_TEST: ContextVar[object] = ContextVar("flowstore_isolated_test", default=None)


@contextlib.asynccontextmanager
async def isolated_async_unit_of_work(store: AsyncStore[AU]) -> AsyncIterator[AU]:
    """An active async unit of work whose writes, commits included, are rolled back on exit;
    meanwhile ``store.unit_of_work()`` joins the same transaction (see the module)."""
    factory = store.session_factory
    if isinstance(factory.kw.get("bind"), AsyncConnection):
        raise InvalidInputError(
            "this store is already inside an isolated unit of work; nest with uow.savepoint()"
        )
    saved = {key: factory.kw[key] for key in _BOUND_KEYS if key in factory.kw}
    mark = object()
    token = _TEST.set(mark)

    def _test_only(*_: Any) -> None:
        if _TEST.get() is not mark:
            raise InvalidInputError(
                "a task or thread outside the test used the store while its isolated unit of "
                "work held the connection; its work could not be rolled back, so it is refused"
            )

    try:
        async with contextlib.AsyncExitStack() as stack:
            with translating():
                await store.ping()  # the in-memory database gets its schema first
                connection = await stack.enter_async_context(store.engine.connect())
            event.listen(connection.sync_connection, "before_cursor_execute", _test_only)
            with translating():
                outer = await connection.begin()
            factory.configure(bind=connection, join_transaction_mode="create_savepoint")
            setattr(store, "close", _put_off)  # noqa: B010 (an instance attribute, for the block)
            try:
                uow = store.unit_of_work()
                uow.rollback_on_exit = True
                async with uow:
                    with using_session(uow.session.sync_session, uow.context.settings):
                        yield uow
            finally:
                vars(store).pop("close", None)
                for key in _BOUND_KEYS:
                    factory.kw.pop(key, None)
                factory.configure(**saved)
                with translating():
                    await outer.rollback()
    finally:
        _TEST.reset(token)


async def _put_off() -> None:
    """``await store.close()`` while a test holds the store: it stays open for the test."""
