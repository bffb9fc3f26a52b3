"""``Store``: the engine, the session factory, and the factories of units of work and queues."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, cast, overload

from sqlalchemy import URL, Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from typing_extensions import TypeVar

from flowstore import schema
from flowstore.config import Settings
from flowstore.engine import build_engine, is_memory_sqlite, normalize_url
from flowstore.errors import (
    ConcurrencyError,
    ConnectionFailedError,
    FlowstoreError,
    InvalidInputError,
    TransactionFailedError,
    mask_secrets,
    translate,
    translating,
)
from flowstore.read_only import READ_ONLY, read_only_engine
from flowstore.recording import attach
from flowstore.replicas import REPLICAS, Replica, ReplicaSet
from flowstore.replicas import replica_urls as replica_urls_of
from flowstore.repositories import RepositoryContext
from flowstore.sessions import ShortTransactions, lent_connection, session_factory
from flowstore.startup import report_configuration
from flowstore.timeouts import check_timeout, prepare_engine, timeout_info
from flowstore.uow import UnitOfWork

if TYPE_CHECKING:
    from flowstore.queue import JobQueue

__all__ = ["Store"]

R = TypeVar("R")
U = TypeVar("U", bound=UnitOfWork, default=UnitOfWork)

RETRYABLE_ERRORS: tuple[type[FlowstoreError], ...] = (TransactionFailedError, ConcurrencyError)


def check_attempts(attempts: Any) -> int:
    """``run_in_transaction``'s ``attempts``: an integer of at least 1, else InvalidInputError."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidInputError(f"attempts must be an integer of at least 1, got {attempts!r}")
    return attempts


class Store(Generic[U]):
    """Entry point to one database.

    ``Store()`` with no URL uses ``FLOWSTORE_DATABASE_URL``, whose default is an in-memory
    SQLite database; that one is ready at once (its schema is created here) and shared by
    every unit of work of this store, from any thread.

    ``unit_of_work_class`` is a service's ``UnitOfWork`` subclass, with its own repositories
    (``flowstore.repository``); ``migrations`` its Alembic folder (``flowstore db init``),
    applied and checked after flowstore's own revisions.

    ``events`` (default: ``FLOWSTORE_EVENTS``, on) records change events (``store.events``,
    docs/events.md); ``cache_url`` (default: ``FLOWSTORE_CACHE_URL``) reads through a Redis
    cache (``store.cache``, docs/cache.md).
    """

    @overload
    def __init__(
        self: Store[U],
        url: str | URL | None = None,
        *,
        settings: Settings | None = None,
        unit_of_work_class: type[U],
        migrations: str | os.PathLike[str] | None = None,
        events: bool | None = None,
        cache_url: str | None = None,
        replica_urls: Sequence[str | URL] | None = None,
        **engine_options: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: Store[UnitOfWork],
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
        unit_of_work_class: type[Any] = UnitOfWork,
        migrations: str | os.PathLike[str] | None = None,
        events: bool | None = None,
        cache_url: str | None = None,
        replica_urls: Sequence[str | URL] | None = None,
        **engine_options: Any,
    ) -> None:
        if not (
            isinstance(unit_of_work_class, type) and issubclass(unit_of_work_class, UnitOfWork)
        ):
            raise InvalidInputError(
                "unit_of_work_class takes a flowstore.UnitOfWork subclass, "
                f"got {unit_of_work_class!r}"
            )
        self.unit_of_work_class: type[U] = cast("type[U]", unit_of_work_class)
        self.settings = settings or Settings()
        self.migrations = migrations if migrations is not None else self.settings.migrations
        self.url = normalize_url(url if url is not None else self.settings.database_url)
        self.engine: Engine = build_engine(self.url, self.settings, **engine_options)
        self.statement_timeout = check_timeout(
            getattr(self.settings, "statement_timeout", None), "statement_timeout"
        )
        if self.statement_timeout is not None:
            prepare_engine(self.engine)
        # change events (store.events) and the read cache (store.cache): flowstore.recording
        self.events, self.cache, recording = attach(
            self.engine, self.settings, events=events, cache_url=cache_url
        )
        # read replicas (flowstore.replicas): read-only units of work read there
        urls = replica_urls_of(replica_urls, self.settings.replica_urls, self.url)
        self.replicas = self._open_replicas(urls, engine_options) if urls else None
        replicas = {REPLICAS: self.replicas} if self.replicas is not None else {}
        self.session_factory: sessionmaker[Session] = session_factory(
            self.engine, info={**timeout_info(self.statement_timeout), **recording, **replicas}
        )
        self._read_only_primary: Engine | None = None
        self._context = RepositoryContext(settings=self.settings)
        self.is_memory = is_memory_sqlite(self.url)
        report_configuration(self.settings, url_given=url is not None, memory=self.is_memory)
        if self.is_memory:
            with translating():
                schema.create_schema(self.engine, migrations=self.migrations)

    def _open_replicas(self, urls: list[str | URL], options: dict[str, Any]) -> ReplicaSet:
        replicas = []
        for url in urls:
            engine = build_engine(normalize_url(url), self.settings, **options)
            label = mask_secrets(engine.url.render_as_string(hide_password=True))
            replicas.append(Replica(label, engine, read_only_engine(engine)))
        return ReplicaSet(
            replicas,
            self.engine,
            max_lag=self.settings.replica_max_lag,
            retry_after=self.settings.replica_retry_after,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """A store configured from ``settings`` (default: the ``FLOWSTORE_`` environment)."""
        return cls(settings=settings or Settings())

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL with its password masked."""
        return mask_secrets(self.url.render_as_string(hide_password=True))

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``."""
        return self.engine.dialect.name

    # -- units of work and queues ----------------------------------------------------------

    def unit_of_work(
        self, *, org_id: Any = None, timeout: float | None = None, read_only: bool = False
    ) -> U:
        """A new unit of work (use it as a context manager).

        With ``org_id`` it is confined to that organization: its repositories see, change and
        delete only that organization's rows and refuse others (``TenantScopeError``); see
        ``flowstore.tenancy``. ``timeout`` (seconds) cuts off any of its statements that runs
        longer (``StatementTimeoutError``), instead of the store's ``statement_timeout``.
        ``read_only=True``: it reads from a replica that has every commit this store made
        before it began (else from the primary), and refuses any write (``ReadOnlyError``)
        before it is sent (``flowstore.replicas``, ``flowstore.read_only``).
        """
        context = self._context if org_id is None else self._context.for_org(org_id)
        factory: Callable[[], Session] = self.session_factory
        if read_only:
            factory = self._read_only_session
        if timeout is None:
            return self.unit_of_work_class(factory, context, rollback_on_exit=read_only)
        limit = check_timeout(timeout)
        prepare_engine(self.engine)
        return self.unit_of_work_class(factory, context, timeout=limit, rollback_on_exit=read_only)

    def _read_only_session(self) -> Session:
        """A read-only unit of work's session, on the replica it reads from (or the primary)."""
        info = {READ_ONLY: True}
        if lent_connection(self.session_factory) is not None:
            return self.session_factory(info=info)  # a test's connection (flowstore.testing)
        replica = self.replicas.choose() if self.replicas is not None else None
        if replica is not None:
            return self.session_factory(bind=replica.bind, info=info)
        if self._read_only_primary is None:
            self._read_only_primary = read_only_engine(self.engine)
        return self.session_factory(bind=self._read_only_primary, info=info)

    def run_in_transaction(
        self,
        work: Callable[[U], R],
        *,
        attempts: int = 3,
        backoff: float = 0.05,
        retry_on: tuple[type[FlowstoreError], ...] = RETRYABLE_ERRORS,
    ) -> R:
        """Run ``work(uow)`` in a unit of work, again on a retryable failure.

        Deadlocks, serialization failures and lock timeouts (``TransactionFailedError``) and
        stale optimistic-lock checks (``ConcurrencyError``) re-run the whole unit of work, up to
        ``attempts`` times in all, with jittered exponential backoff; the last error is raised.
        ``work`` must be safe to run again: everything it read is read anew.
        """
        check_attempts(attempts)
        for attempt in range(1, attempts + 1):
            try:
                with self.unit_of_work() as uow:
                    return work(uow)
            except retry_on:
                if attempt == attempts:
                    raise
                time.sleep(backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def queue(self, name: str = "default", *, lease_seconds: float = 30) -> JobQueue:
        """The job queue ``name`` for workers: every call is its own short transaction."""
        from flowstore.queue import JobQueue

        sessions = ShortTransactions(self.session_factory, repr(self))
        return JobQueue(sessions, name, lease_seconds=lease_seconds)

    # -- schema ----------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision`` (Alembic, from the installed package)."""
        with translating():
            schema.upgrade(self.engine, revision, migrations=self.migrations)

    def downgrade(self, revision: str) -> None:
        """Revert the migrations down to ``revision`` (``"base"``: drop everything)."""
        with translating():
            schema.downgrade(self.engine, revision, migrations=self.migrations)

    def current_revision(self) -> str | None:
        """The applied revision id, or ``None`` for a database never migrated."""
        with translating():
            return schema.current_revision(self.engine, migrations=self.migrations)

    # -- lifecycle -------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the database answers; ``ConnectionFailedError`` if it does not."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except sa_exc.SQLAlchemyError as exc:
            error = translate(exc)
            if not isinstance(error, ConnectionFailedError):
                error = ConnectionFailedError(f"database {self.safe_url} did not answer: {error}")
            raise error from exc

    def close(self) -> None:
        """Close every pooled connection (an in-memory database is gone afterwards)."""
        self.engine.dispose()
        if self.replicas is not None:
            self.replicas.dispose()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
