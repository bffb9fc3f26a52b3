"""flowstore's async face: ``AsyncStore`` and ``AsyncUnitOfWork`` over the same repositories.

``async with store.unit_of_work() as uow: await uow.deployments.get(i)``, on
``sqlite+aiosqlite`` (the in-memory default) and ``postgresql+psycopg``; ``store.queue(name)``
and ``uow.queue(name)`` give the job queue with every method awaited.

Why the sync repositories run inside ``AsyncSession.run_sync``: the repository logic (queries,
input checks, dialect branches, error translation) then exists once, in
``flowstore.repositories``. Each awaited call runs the sync method on the unit of work's
``session.sync_session`` in SQLAlchemy's greenlet, where the driver's awaits are bridged, and
the awaitable repository classes are built from the sync classes at import (same method names,
signatures, docstrings and errors: flowstore errors only, commit included). A second set of
async repositories, or one query layer with two executors, would split every repository in
two. The cost is one greenlet switch per awaited call, measured by ``scripts/bench_async.py``;
``await uow.deployments.run(lambda repo: ...)`` runs several calls (fully typed) in one switch.
"""

from flowstore.aio.engine import build_async_engine
from flowstore.aio.proxy import AsyncProxy, async_proxy_class
from flowstore.aio.queue import AsyncJobQueue
from flowstore.aio.store import AsyncStore
from flowstore.aio.uow import AsyncRepository, AsyncUnitOfWork

__all__ = [
    "AsyncJobQueue",
    "AsyncProxy",
    "AsyncRepository",
    "AsyncStore",
    "AsyncUnitOfWork",
    "async_proxy_class",
    "build_async_engine",
]
