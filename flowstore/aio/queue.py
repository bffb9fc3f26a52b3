"""The job queue, awaited: :class:`flowstore.queue.JobQueue` itself, run in the greenlet.

``store.queue(name)`` wraps a sync ``JobQueue`` whose every call opens its own short
transaction; here its sessions are plain ``Session`` objects on the async engine's
``sync_engine``, which work because each call runs inside ``greenlet_spawn`` (exactly how an
``AsyncSession`` drives its own ``sync_session``). ``uow.queue(name)`` wraps
``JobQueue.in_session(uow.session.sync_session, name)`` and runs through the unit of work.
Either way the queue's logic, and its transaction boundaries, are the sync queue's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from sqlalchemy.orm import Session, sessionmaker

from flowstore.aio.proxy import AsyncProxy, async_proxy_class
from flowstore.queue import JobQueue

if TYPE_CHECKING:
    from flowstore.aio.store import AsyncStore
    from flowstore.aio.uow import AsyncUnitOfWork
    from flowstore.store import Store

__all__ = ["AsyncJobQueue", "store_queue", "unit_of_work_queue"]

AsyncJobQueue: TypeAlias = AsyncProxy[JobQueue]
"""A ``JobQueue`` with every method awaited: ``await queue.enqueue({...})``."""


@dataclass(frozen=True)
class _GreenletSessions:
    """All a store-mode ``JobQueue`` uses of its store: ``session_factory``. These sessions
    are bound to ``AsyncEngine.sync_engine`` and only work inside ``greenlet_spawn``."""

    store: AsyncStore
    session_factory: sessionmaker[Session]

    def __repr__(self) -> str:
        return repr(self.store)


def store_queue(store: AsyncStore, name: str, **options: Any) -> AsyncJobQueue:
    """The queue ``name`` whose every awaited call is its own transaction."""
    factory = sessionmaker(store.engine.sync_engine, expire_on_commit=False)
    sessions = _GreenletSessions(store, factory)
    queue = JobQueue(cast("Store", sessions), name, **options)
    return async_proxy_class(JobQueue)(queue, store._run_in_greenlet)


def unit_of_work_queue(uow: AsyncUnitOfWork, name: str, **options: Any) -> AsyncJobQueue:
    """The queue ``name`` working in ``uow``'s transaction."""
    queue = JobQueue.in_session(uow.session.sync_session, name, **options)
    return async_proxy_class(JobQueue)(queue, uow._run_call)
