"""``AsyncUnitOfWork``: one ``AsyncSession``, one transaction, awaitable repositories.

``async with store.unit_of_work() as uow:`` commits on a clean exit and rolls back on an
exception (then re-raises it, a SQLAlchemy error as its flowstore error). The repositories are
the sync ones, bound to ``session.sync_session`` and awaited through ``AsyncSession.run_sync``.

Cancellation: the clean-up (rollback, close) always runs to its end, even when the task is
cancelled again meanwhile, so the connection goes back to the pool. On PostgreSQL a
cancellation that lands mid-statement interrupts it (SQLAlchemy then discards that
connection). On SQLite each step is shielded instead and finishes before the cancellation takes
effect: aiosqlite runs the statement to its end in its thread anyway, a connection discarded
meanwhile would keep its write lock until garbage collection, and discarding the in-memory
database's only connection would discard the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from flowstore.aio.engine import spawn_step
from flowstore.aio.proxy import AsyncProxy, async_proxy_class
from flowstore.errors import FlowstoreError, InvalidInputError, translate, translating
from flowstore.repositories import (
    ApplicationRepository,
    AuditLogRepository,
    DeploymentRepository,
    InferenceRequestRepository,
    MachineRepository,
    OrganizationRepository,
    PolicyRepository,
    Repository,
    RepositoryContext,
    RequestRepository,
    TemplateRepository,
    UserRepository,
)
from flowstore.tenancy import scope_session

if TYPE_CHECKING:
    from flowstore.aio.queue import AsyncJobQueue

__all__ = ["AsyncRepository", "AsyncUnitOfWork", "finish_uninterrupted"]

R = TypeVar("R")
RepoT = TypeVar("RepoT", bound=Repository[Any])

AsyncRepository = AsyncProxy
"""``AsyncRepository[DeploymentRepository]``: the awaitable face of a sync repository."""


async def finish_uninterrupted(step: Awaitable[R]) -> R:
    """Await ``step`` to its end even if the caller is cancelled meanwhile; then re-raise the
    cancellation. Used for clean-up that must not stop halfway (rollback, close)."""
    task = spawn_step(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # a cancelled wait leaves the task running
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise asyncio.CancelledError
    return task.result()


class _AsyncRepositoryAttribute(Generic[RepoT]):
    """A lazily created, per-unit-of-work awaitable repository."""

    def __init__(self, repository_class: type[RepoT]) -> None:
        self.repository_class = repository_class
        self.name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, uow: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, uow: AsyncUnitOfWork, owner: type[Any]) -> AsyncProxy[RepoT]: ...
    def __get__(self, uow: AsyncUnitOfWork | None, owner: type[Any]) -> AsyncProxy[RepoT] | Self:
        if uow is None:
            return self
        proxy = uow._repositories.get(self.name)
        if proxy is None:
            repository = self.repository_class(uow.session.sync_session, uow.context)
            proxy = async_proxy_class(self.repository_class)(repository, uow._run_call)
            uow._repositories[self.name] = proxy
        return proxy


class AsyncUnitOfWork:
    """One ``AsyncSession`` and one transaction; use it as an async context manager.

    Like a session, a unit of work belongs to one task at a time: run concurrent work in
    separate units of work.
    """

    deployments = _AsyncRepositoryAttribute(DeploymentRepository)
    templates = _AsyncRepositoryAttribute(TemplateRepository)
    requests = _AsyncRepositoryAttribute(RequestRepository)
    machines = _AsyncRepositoryAttribute(MachineRepository)
    organizations = _AsyncRepositoryAttribute(OrganizationRepository)
    applications = _AsyncRepositoryAttribute(ApplicationRepository)
    users = _AsyncRepositoryAttribute(UserRepository)
    policies = _AsyncRepositoryAttribute(PolicyRepository)
    audit_logs = _AsyncRepositoryAttribute(AuditLogRepository)
    inference_requests = _AsyncRepositoryAttribute(InferenceRequestRepository)

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        context: RepositoryContext | None = None,
        *,
        shield_steps: bool = False,
        connect_early: bool = False,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``shield_steps``: finish each database step even if cancelled (SQLite);
        ``connect_early``: take the connection on entry (the in-memory database, whose one
        connection is waited for); ``prepare``: awaited before the session opens."""
        self._session_factory = session_factory
        self.context = context or RepositoryContext()
        self._shield = shield_steps
        self._connect_early = connect_early
        self._prepare = prepare
        self._session: AsyncSession | None = None
        self._repositories: dict[str, AsyncProxy[Any]] = {}
        self._in_flight: asyncio.Future[Any] | None = None

    @property
    def session(self) -> AsyncSession:
        """The unit of work's ``AsyncSession`` (only inside the ``async with`` block)."""
        if self._session is None:
            raise InvalidInputError(
                "the unit of work is not active: use it in an `async with` block"
            )
        return self._session

    # -- running sync code -----------------------------------------------------------------

    async def run(self, work: Callable[[Session], R]) -> R:
        """``work(sync_session)`` in the greenlet, where blocking SQLAlchemy calls are allowed;
        its SQLAlchemy errors come out as flowstore errors."""
        session = self.session
        return await self._step(session.run_sync(work))

    async def _run_call(self, call: Callable[[], R]) -> R:
        """The proxies' runner: ``call()`` as :meth:`run` runs work."""
        return await self.run(lambda _sync_session: call())

    async def _step(self, step: Awaitable[R]) -> R:
        """Await one database step: shielded if so configured, errors translated."""
        try:
            if not self._shield:
                return await step
            task = spawn_step(step)
            self._in_flight = task
            return await asyncio.shield(task)
        except FlowstoreError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    async def _settle(self) -> None:
        """Wait for a shielded step that a cancellation left running."""
        task, self._in_flight = self._in_flight, None
        if task is not None and not task.done():
            with contextlib.suppress(BaseException):
                await task

    # -- the transaction -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise InvalidInputError("this unit of work is already active")
        if self._prepare is not None:
            await self._prepare()
        session = self._session_factory()
        if self.context.org_id is not None:
            scope_session(session.sync_session, self.context.org_id)
        self._session, self._repositories = session, {}
        if self._connect_early:
            # Take the single connection now, while waiting for it can still be cancelled.
            try:
                with translating():
                    await session.connection()
            except BaseException:
                self._session = None
                await finish_uninterrupted(session.close())
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc is None:
                await self.commit()
            else:
                await finish_uninterrupted(self._discard(session))
                if isinstance(exc, sa_exc.SQLAlchemyError):
                    raise translate(exc) from exc
        finally:
            self._session, self._repositories = None, {}
            await finish_uninterrupted(self._close(session))

    async def commit(self) -> None:
        """Commit the work so far; the unit of work stays usable for more."""
        session = self.session
        try:
            await self._step(session.commit())
        except FlowstoreError:
            await finish_uninterrupted(self._discard(session))
            raise

    async def rollback(self) -> None:
        """Discard the work since the last commit."""
        await self._step(self.session.rollback())

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: an exception inside rolls back only the block, then re-raises."""
        session = self.session
        nested = await self._step(session.begin_nested())
        try:
            yield
        except BaseException as exc:
            # also after a failed flush, which leaves the savepoint inactive but not rolled back
            await finish_uninterrupted(self._quietly(nested.rollback()))
            if isinstance(exc, sa_exc.SQLAlchemyError):
                raise translate(exc) from exc
            raise
        else:
            await self._step(nested.commit())

    def queue(self, name: str = "default") -> AsyncJobQueue:
        """The job queue ``name`` inside this transaction: enqueued jobs commit with it."""
        from flowstore.aio.queue import unit_of_work_queue

        return unit_of_work_queue(self, name)

    # -- clean-up --------------------------------------------------------------------------

    async def _quietly(self, step: Awaitable[Any]) -> None:
        await self._settle()
        with contextlib.suppress(sa_exc.SQLAlchemyError, FlowstoreError):
            await step

    async def _discard(self, session: AsyncSession) -> None:
        await self._quietly(session.rollback())

    async def _close(self, session: AsyncSession) -> None:
        await self._settle()
        with translating():
            await session.close()
