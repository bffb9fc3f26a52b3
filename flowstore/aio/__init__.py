"""flowstore's async face: ``AsyncStore`` and ``AsyncUnitOfWork`` over the same repositories.

``async with store.unit_of_work() as uow: await uow.deployments.get(i)``, on
``sqlite+aiosqlite`` (the in-memory default) and ``postgresql+psycopg``; ``store.queue(name)``
and ``uow.queue(name)`` give the job queue with every method awaited.

Why the sync repositories run inside ``AsyncSession.run_sync``: the repository logic (queries,
input checks, dialect branches, error translation) then exists once, in
``flowstore.repositories``. Each awaited call runs the sync method on the unit of work's
``session.sync_session`` in SQLAlchemy's greenlet, where the driver's awaits are bridged. The
awaitable classes are generated from the sync ones (``flowstore.aio.codegen``): same method
names, signatures, docstrings and errors, and typed, so mypy checks every awaited call; a test
regenerates them, so the faces cannot drift. A service's own repositories get the same from
``python -m flowstore.aio.codegen acme.uow:AcmeUnitOfWork``. The cost is one greenlet switch
per awaited call, measured by ``scripts/bench_async.py``; ``await uow.deployments.run(lambda
repo: ...)`` runs several calls (fully typed) in one switch.
"""

from flowstore.aio.engine import build_async_engine
from flowstore.aio.proxy import AsyncProxy, proxy_class
from flowstore.aio.queue import AsyncJobQueue
from flowstore.aio.repository import AsyncRepository, async_repository_class
from flowstore.aio.store import AsyncStore
from flowstore.aio.uow import AsyncUnitOfWork

__all__ = [
    "AsyncJobQueue",
    "AsyncProxy",
    "AsyncRepository",
    "AsyncStore",
    "AsyncUnitOfWork",
    "async_repository_class",
    "build_async_engine",
    "proxy_class",
]
