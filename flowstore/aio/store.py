"""``AsyncStore``: the async engine, the async session factory, units of work and queues."""

from __future__ import annotations

import asyncio
import functools
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, overload

from sqlalchemy import URL, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.util import greenlet_spawn
from typing_extensions import TypeVar

from flowstore import schema
from flowstore.aio.engine import build_async_engine
from flowstore.aio.events import AsyncEventLog
from flowstore.aio.uow import AsyncServiceUnitOfWork, AsyncUnitOfWork, finish_uninterrupted
from flowstore.config import Settings
from flowstore.engine import is_memory_sqlite, normalize_url
from flowstore.errors import (
    ConnectionFailedError,
    FlowstoreError,
    mask_secrets,
    translate,
    translating,
)
from flowstore.read_only import READ_ONLY, read_only_async_engine
from flowstore.recording import attach
from flowstore.replicas import REPLICAS, Replica, ReplicaSet
from flowstore.replicas import replica_urls as replica_urls_of
from flowstore.repositories import RepositoryContext
from flowstore.sessions import FlowstoreSession, lent_connection
from flowstore.startup import report_configuration
from flowstore.store import RETRYABLE_ERRORS, check_attempts
from flowstore.timeouts import check_timeout, prepare_engine, timeout_info
from flowstore.uow import UnitOfWork

if TYPE_CHECKING:
    from flowstore.aio.queue import AsyncJobQueue

__all__ = ["AsyncStore"]

R = TypeVar("R")
AU = TypeVar("AU", bound=AsyncUnitOfWork, default=AsyncUnitOfWork)


def _async_class(given: type[Any] | None) -> type[AsyncUnitOfWork]:
    """The async unit-of-work class for ``unit_of_work_class``."""
    if given is None:
        return AsyncUnitOfWork
    if isinstance(given, type) and issubclass(given, AsyncUnitOfWork):
        return given
    return AsyncUnitOfWork.for_sync_class(given)


class AsyncStore(Generic[AU]):
    """Entry point to one database, for asyncio code; mirrors :class:`flowstore.Store`.

    ``AsyncStore()`` with no URL uses ``FLOWSTORE_DATABASE_URL``, whose default is an in-memory
    SQLite database (through aiosqlite), shared by every unit of work of this store and safe
    to use from many tasks (they take turns on its one connection). Its schema is created on
    first use: the first unit of work, ``await store.ping()`` or ``async with store``.
    An ``AsyncStore`` belongs to one event loop, like its connections.

    ``unit_of_work_class`` is a service's ``flowstore.UnitOfWork`` subclass (its repositories
    are awaited here), or the typed async class ``python -m flowstore.aio.codegen`` wrote for
    it, which also makes every repository call type-checked.
    """

    @overload
    def __init__(
        self: AsyncStore[AU],
        url: str | URL | None = None,
        *,
        settings: Settings | None = None,
        unit_of_work_class: type[AU],
        migrations: str | os.PathLike[str] | None = None,
        events: bool | None = None,
        cache_url: str | None = None,
        replica_urls: Sequence[str | URL] | None = None,
        **engine_options: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: AsyncStore[AsyncServiceUnitOfWork],
        url: str | URL | None = None,
        *,
        settings: Settings | None = None,
        unit_of_work_class: type[UnitOfWork],
        migrations: str | os.PathLike[str] | None = None,
        events: bool | None = None,
        cache_url: str | None = None,
        replica_urls: Sequence[str | URL] | None = None,
        **engine_options: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: AsyncStore[AsyncUnitOfWork],
        url: str | URL | None = None,
        *,
        settings: Settings | None = None,
        migrations: str | os.PathLike[str] | None = None,
        events: bool | None = None,
        cache_url: str | None = None,
        replica_urls: Sequence[str | URL] | None = None,
        **engine_options: Any,
    ) -> None: ...
    def __init__(
        self,
        url: str | URL | None = None,
        *,
        settings: Settings | None = None,
        unit_of_work_class: type[Any] | None = None,
        migrations: str | os.PathLike[str] | None = None,
        events: bool | None = None,
        cache_url: str | None = None,
        replica_urls: Sequence[str | URL] | None = None,
        **engine_options: Any,
    ) -> None:
        self.unit_of_work_class: type[AU] = _async_class(unit_of_work_class)  # type: ignore[assignment]
        self.settings = settings or Settings()
        self.migrations = migrations if migrations is not None else self.settings.migrations
        raw = url if url is not None else self.settings.database_url
        self.url = normalize_url(raw, asynchronous=True)
        self.engine: AsyncEngine = build_async_engine(self.url, self.settings, **engine_options)
        self.statement_timeout = check_timeout(
            getattr(self.settings, "statement_timeout", None), "statement_timeout"
        )
        if self.statement_timeout is not None:
            prepare_engine(self.engine.sync_engine)
        # change events and the read cache, as on Store (flowstore.recording)
        log, self.cache, recording = attach(
            self.engine.sync_engine,
            self.settings,
            events=events,
            cache_url=cache_url,
            asynchronous=True,
        )
        # read replicas, as on Store (flowstore.replicas)
        urls = replica_urls_of(replica_urls, self.settings.replica_urls, self.url)
        self._replica_engines = [
            build_async_engine(url, self.settings, **engine_options) for url in urls
        ]
        self.replicas = self._replica_set() if urls else None
        replicas = {REPLICAS: self.replicas} if self.replicas is not None else {}
        self.session_factory: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine,
            expire_on_commit=False,
            sync_session_class=FlowstoreSession,
            info={**timeout_info(self.statement_timeout), **recording, **replicas},
        )
        self._read_only_primary: AsyncEngine | None = None
        self._context = RepositoryContext(settings=self.settings)
        self.events = AsyncEventLog(self.engine, enabled=log.enabled)
        self.is_memory = is_memory_sqlite(self.url)
        report_configuration(self.settings, url_given=url is not None, memory=self.is_memory)
        self._schema_pending = self.is_memory
        self._shield_steps = self.engine.dialect.name == "sqlite"  # see flowstore.aio.uow

    def _replica_set(self) -> ReplicaSet:
        replicas = [
            Replica(
                mask_secrets(engine.url.render_as_string(hide_password=True)),
                engine.sync_engine,
                read_only_async_engine(engine),
            )
            for engine in self._replica_engines
        ]
        return ReplicaSet(
            replicas,
            self.engine.sync_engine,
            max_lag=self.settings.replica_max_lag,
            retry_after=self.settings.replica_retry_after,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """A store configured from ``settings`` (default: the ``FLOWSTORE_`` environment)."""
        return cls(settings=settings or Settings())

    def __repr__(self) -> str:
        return f"AsyncStore({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL with its password masked."""
        return mask_secrets(self.url.render_as_string(hide_password=True))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    # -- units of work and queues ----------------------------------------------------------

    def unit_of_work(
        self, *, org_id: Any = None, timeout: float | None = None, read_only: bool = False
    ) -> AU:
        """A new unit of work (use it with ``async with``); ``org_id`` confines it to one
        organization, ``timeout`` limits each statement and ``read_only=True`` reads from a
        replica that has this store's commits and refuses writes, as ``Store.unit_of_work``
        does."""
        context = self._context if org_id is None else self._context.for_org(org_id)
        limit = check_timeout(timeout)
        if limit is not None:
            prepare_engine(self.engine.sync_engine)
        factory: Callable[[], AsyncSession] = self.session_factory
        prepare = self._ensure_schema if self.is_memory else None
        if read_only:
            reads = _ReadOnlySessions(self)
            factory, prepare = reads, reads.prepare
        return self.unit_of_work_class(
            factory,
            context,
            shield_steps=self._shield_steps,
            connect_early=self.is_memory,
            prepare=prepare,
            timeout=limit,
            rollback_on_exit=read_only,
        )

    def read_only_primary(self) -> AsyncEngine:
        """The primary's engine for read-only units of work (writes refused)."""
        if self._read_only_primary is None:
            self._read_only_primary = read_only_async_engine(self.engine)
        return self._read_only_primary

    async def run_in_transaction(
        self,
        work: Callable[[AU], Awaitable[R]],
        *,
        attempts: int = 3,
        backoff: float = 0.05,
        retry_on: tuple[type[FlowstoreError], ...] = RETRYABLE_ERRORS,
    ) -> R:
        """``await work(uow)`` in a unit of work, again on a retryable failure (as
        :meth:`flowstore.Store.run_in_transaction`: jittered exponential backoff, the last
        error raised; ``work`` must be safe to run again)."""
        check_attempts(attempts)
        for attempt in range(1, attempts + 1):
            try:
                async with self.unit_of_work() as uow:
                    return await work(uow)
            except retry_on:
                if attempt == attempts:
                    raise
                await asyncio.sleep(backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def queue(self, name: str = "default", *, lease_seconds: float = 30) -> AsyncJobQueue:
        """The job queue ``name`` for workers: every awaited call is its own transaction."""
        from flowstore.aio.queue import store_queue

        return store_queue(self, name, lease_seconds=lease_seconds)

    async def run_in_greenlet(self, call: Callable[[], R]) -> R:
        """``call()`` (sync code) in a greenlet of its own, where it may open sync sessions on
        ``engine.sync_engine``; errors translated, and finished even if cancelled on SQLite
        (as a unit of work's steps are)."""
        await self._ensure_schema()
        step = greenlet_spawn(call)
        try:
            if self._shield_steps:
                return await finish_uninterrupted(step)
            return await step
        except FlowstoreError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    # -- schema ----------------------------------------------------------------------------

    async def _ensure_schema(self) -> None:
        """Create the in-memory database's tables, once (the gate serialises the check)."""
        if not self._schema_pending:
            return
        with translating():
            async with self.engine.begin() as conn:
                if self._schema_pending:
                    await conn.run_sync(
                        functools.partial(schema.create_schema_on, migrations=self.migrations)
                    )
                    self._schema_pending = False

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision`` (Alembic, from the installed package)."""
        await self._migrate(schema.upgrade_on, revision)

    async def downgrade(self, revision: str) -> None:
        """Revert the migrations down to ``revision`` (``"base"``: drop everything)."""
        await self._migrate(schema.downgrade_on, revision)

    async def _migrate(self, step: Callable[..., None], revision: str) -> None:
        """One Alembic command in one transaction; an unknown revision is ``InvalidInputError``."""
        await self._ensure_schema()
        with translating():
            async with self.engine.begin() as conn:
                await conn.run_sync(functools.partial(step, migrations=self.migrations), revision)

    async def current_revision(self) -> str | None:
        """The applied revision id, or ``None`` for a database never migrated."""
        await self._ensure_schema()
        with translating():
            async with self.engine.connect() as conn:
                return await conn.run_sync(
                    functools.partial(schema.current_revision_on, migrations=self.migrations)
                )

    # -- lifecycle -------------------------------------------------------------------------

    async def ping(self) -> None:
        """Check that the database answers; ``ConnectionFailedError`` if it does not."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            error = translate(exc)
            if not isinstance(error, ConnectionFailedError):
                error = ConnectionFailedError(f"database {self.safe_url} did not answer: {error}")
            raise error from exc
        await self._ensure_schema()

    async def close(self) -> None:
        """Close every pooled connection (an in-memory database is gone afterwards; used
        again, the store starts a new, empty one)."""
        with translating():
            await self.engine.dispose()
            for engine in self._replica_engines:
                await engine.dispose()
        if self.cache is not None:
            await self.cache.aclose()
        self._schema_pending = self.is_memory

    async def __aenter__(self) -> Self:
        await self._ensure_schema()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _ReadOnlySessions:
    """The session of one read-only unit of work: on the replica chosen (awaited) as the unit
    of work begins, else on the primary; writes refused (``flowstore.read_only``)."""

    def __init__(self, store: AsyncStore[Any]) -> None:
        self._store = store
        self._bind: Any = None

    async def prepare(self) -> None:
        store = self._store
        if store.is_memory:
            await store._ensure_schema()
        if lent_connection(store.session_factory) is not None:
            self._bind = None  # a test's connection (flowstore.testing): stay on it
            return
        replica = await store.replicas.choose_async() if store.replicas is not None else None
        self._bind = replica.bind if replica is not None else store.read_only_primary()

    def __call__(self) -> AsyncSession:
        info = {READ_ONLY: True}
        factory = self._store.session_factory
        if self._bind is None:
            return factory(info=info)
        return factory(bind=self._bind, info=info)
