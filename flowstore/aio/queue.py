"""The job queue, awaited: :class:`flowstore.queue.JobQueue` itself, run in the greenlet.

``store.queue(name)`` wraps a sync ``JobQueue`` whose every call opens its own short
transaction; here its sessions are plain ``Session`` objects on the async engine's
``sync_engine``, which work because each call runs inside ``greenlet_spawn`` (exactly how an
``AsyncSession`` drives its own ``sync_session``). ``uow.queue(name)`` wraps a queue working in
the unit of work's session and runs through the unit of work. Either way the queue's logic,
and its transaction boundaries, are the sync queue's; ``AsyncJobQueue`` (generated) types
every awaited call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowstore.aio.generated import AsyncJobQueue
from flowstore.queue import JobQueue
from flowstore.sessions import ShortTransactions, session_factory

if TYPE_CHECKING:
    from flowstore.aio.store import AsyncStore

__all__ = ["AsyncJobQueue", "store_queue"]


def store_queue(store: AsyncStore[Any], name: str, **options: Any) -> AsyncJobQueue:
    """The queue ``name`` whose every awaited call is its own transaction. Its sessions are
    bound to ``AsyncEngine.sync_engine`` and only work inside ``greenlet_spawn``."""
    sessions = ShortTransactions(session_factory(store.engine.sync_engine), repr(store))
    return AsyncJobQueue(JobQueue(sessions, name, **options), store.run_in_greenlet)
