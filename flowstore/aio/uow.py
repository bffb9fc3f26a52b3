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
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from flowstore.aio.engine import spawn_step
from flowstore.aio.generated import AsyncJobQueue, FlowstoreAsyncRepositories
from flowstore.aio.repository import (
    AsyncRepository,
    LooseAsyncRepository,
    async_repository_class,
)
from flowstore.errors import FlowstoreError, InvalidInputError, translate, translating
from flowstore.events.log import EventPublisher
from flowstore.queue import JobQueue
from flowstore.read_only import READ_ONLY
from flowstore.repositories import Repository, RepositoryContext
from flowstore.sessions import CallerSession
from flowstore.tenancy import scope_session
from flowstore.timeouts import SESSION_KEY as TIMEOUT_KEY
from flowstore.uow import UnitOfWork

__all__ = [
    "AsyncRepository",
    "AsyncServiceUnitOfWork",
    "AsyncUnitOfWork",
    "finish_uninterrupted",
]

R = TypeVar("R")
RepoT = TypeVar("RepoT", bound=Repository[Any])


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
    """A lazily created, per-unit-of-work awaitable repository (built from the sync
    declaration of the unit of work's ``sync_class``)."""

    def __init__(self, name: str, repository_class: type[RepoT]) -> None:
        self.name = name
        self.repository_class = repository_class

    @overload
    def __get__(self, uow: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, uow: AsyncUnitOfWork, owner: type[Any]) -> AsyncRepository[RepoT]: ...
    def __get__(
        self, uow: AsyncUnitOfWork | None, owner: type[Any]
    ) -> AsyncRepository[RepoT] | Self:
        if uow is None:
            return self
        return uow.get_repository(self.name)


_ASYNC_CLASSES: dict[type[UnitOfWork], type[AsyncUnitOfWork]] = {}  # declared
_MADE: dict[type[UnitOfWork], type[AsyncUnitOfWork]] = {}  # made for a class without one


class AsyncUnitOfWork(FlowstoreAsyncRepositories):
    """One ``AsyncSession`` and one transaction; use it as an async context manager.

    Its repository attributes are those ``sync_class`` (a ``flowstore.UnitOfWork`` subclass)
    declares, each the awaitable face of the sync repository. Like a session, a unit of work
    belongs to one task at a time: run concurrent work in separate units of work.
    """

    sync_class: ClassVar[type[UnitOfWork]] = UnitOfWork

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _install_attributes(cls)
        if "sync_class" in cls.__dict__ and not cls.__dict__.get("made_at_run_time"):
            _ASYNC_CLASSES[cls.sync_class] = cls  # a declared (generated, typed) class

    @classmethod
    def for_sync_class(cls, sync_class: type[UnitOfWork]) -> type[AsyncUnitOfWork]:
        """The async unit of work of ``sync_class``: a subclass declaring it (a generated,
        typed one, when imported), else one made now with the same repositories."""
        if not (isinstance(sync_class, type) and issubclass(sync_class, UnitOfWork)):
            raise InvalidInputError(
                f"unit_of_work_class takes a flowstore.UnitOfWork subclass, got {sync_class!r}"
            )
        known = _ASYNC_CLASSES.get(sync_class) or _MADE.get(sync_class)
        if known is None:
            namespace = {"sync_class": sync_class, "made_at_run_time": True, "__module__": __name__}
            base = AsyncServiceUnitOfWork if cls is AsyncUnitOfWork else cls
            known = _MADE[sync_class] = type(f"Async{sync_class.__name__}", (base,), namespace)
        return known

    def __init__(
        self,
        session_factory: Callable[[], AsyncSession],
        context: RepositoryContext | None = None,
        *,
        shield_steps: bool = False,
        connect_early: bool = False,
        prepare: Callable[[], Awaitable[None]] | None = None,
        rollback_on_exit: bool = False,
        timeout: float | None = None,
    ) -> None:
        """``shield_steps``: finish each database step even if cancelled (SQLite);
        ``connect_early``: take the connection on entry (the in-memory database, whose one
        connection is waited for); ``prepare``: awaited before the session opens;
        ``rollback_on_exit``: a clean exit rolls back instead of committing; ``timeout``:
        seconds each statement may run (default: the store's ``statement_timeout``)."""
        self._session_factory = session_factory
        self.context = context or RepositoryContext()
        self.rollback_on_exit = rollback_on_exit
        self.timeout = timeout
        self._shield = shield_steps
        self._connect_early = connect_early
        self._prepare = prepare
        self._session: AsyncSession | None = None
        self._repositories: dict[str, AsyncRepository[Any]] = {}
        self._in_flight: asyncio.Future[Any] | None = None

    @property
    def session(self) -> AsyncSession:
        """The unit of work's ``AsyncSession`` (only inside the ``async with`` block)."""
        if self._session is None:
            raise InvalidInputError(
                "the unit of work is not active: use it in an `async with` block"
            )
        return self._session

    @property
    def events(self) -> EventPublisher:
        """``uow.events.publish(type, data, *, entity_id=None)`` (not awaited: it only records
        the event, which commits with this unit of work)."""
        return EventPublisher(self.session.sync_session)

    @property
    def org_id(self) -> Any:
        """The organization this unit of work is confined to, or ``None``."""
        return self.context.org_id

    def get_repository(self, name: str) -> AsyncRepository[Any]:
        """The declared repository ``name`` of this unit of work, awaitable."""
        found = self._repositories.get(name)
        if found is None:
            repository_class = type(self).sync_class.repositories.get(name)
            if repository_class is None:
                raise InvalidInputError(f"{type(self).__name__} declares no repository {name!r}")
            sync = repository_class(self.session.sync_session, self.context)
            found = async_repository_class(repository_class)(sync, self._run_call)
            self._repositories[name] = found
        return found

    async def scope_to(self, org_id: Any) -> None:
        """Confine this unit of work to one organization from now on (see
        ``flowstore.UnitOfWork.scope_to``); never widened."""
        org = await self.run(lambda sync_session: scope_session(sync_session, org_id))
        if self.context.org_id != org:
            self.context = self.context.for_org(org)
            self._repositories = {}

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
        if self.timeout is not None:
            session.sync_session.info[TIMEOUT_KEY] = self.timeout
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
            if exc is None and not self.rollback_on_exit:
                await self.commit()
            elif exc is None and session.info.get(READ_ONLY):
                await self._step(session.flush())  # changes left pending are refused
                await finish_uninterrupted(self._discard(session))
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
        queue = JobQueue(CallerSession(self.session.sync_session), name)
        return AsyncJobQueue(queue, self._run_call)

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


def _install_attributes(cls: type[AsyncUnitOfWork]) -> None:
    """Give ``cls`` an awaitable attribute per repository its ``sync_class`` declares."""
    for name, repository_class in cls.sync_class.repositories.items():
        setattr(cls, name, _AsyncRepositoryAttribute(name, repository_class))


_install_attributes(AsyncUnitOfWork)


class AsyncServiceUnitOfWork(AsyncUnitOfWork):
    """The async unit of work made at run time for a service's ``UnitOfWork`` subclass that
    has no generated face: its repositories are there, known to type checkers only as
    awaitable calls. ``python -m flowstore.aio.codegen`` writes the fully typed class."""

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> LooseAsyncRepository[Any]: ...
