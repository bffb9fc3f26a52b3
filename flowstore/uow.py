"""``UnitOfWork``: one session, one transaction, repositories as attributes.

``with store.unit_of_work() as uow:`` commits on a clean exit and rolls back on an exception,
which is re-raised (a SQLAlchemy/DBAPI error as its flowstore error). Repositories are made on
first access and share the unit of work's session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

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
    from flowstore.queue import JobQueue

__all__ = ["UnitOfWork"]

RepoT = TypeVar("RepoT", bound=Repository[Any])


class _RepositoryAttribute(Generic[RepoT]):
    """A lazily created, per-unit-of-work repository."""

    def __init__(self, repository_class: type[RepoT]) -> None:
        self.repository_class = repository_class
        self.name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, uow: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, uow: UnitOfWork, owner: type[Any]) -> RepoT: ...
    def __get__(self, uow: UnitOfWork | None, owner: type[Any]) -> RepoT | Self:
        if uow is None:
            return self
        repository = uow._repositories.get(self.name)
        if repository is None:
            repository = self.repository_class(uow.session, uow.context)
            uow._repositories[self.name] = repository
        return repository  # type: ignore[return-value]


class UnitOfWork:
    """One session and one transaction; use it as a context manager."""

    deployments = _RepositoryAttribute(DeploymentRepository)
    templates = _RepositoryAttribute(TemplateRepository)
    requests = _RepositoryAttribute(RequestRepository)
    machines = _RepositoryAttribute(MachineRepository)
    organizations = _RepositoryAttribute(OrganizationRepository)
    applications = _RepositoryAttribute(ApplicationRepository)
    users = _RepositoryAttribute(UserRepository)
    policies = _RepositoryAttribute(PolicyRepository)
    audit_logs = _RepositoryAttribute(AuditLogRepository)
    inference_requests = _RepositoryAttribute(InferenceRequestRepository)

    def __init__(
        self, session_factory: sessionmaker[Session], context: RepositoryContext | None = None
    ) -> None:
        self._session_factory = session_factory
        self.context = context or RepositoryContext()
        self._session: Session | None = None
        self._repositories: dict[str, Repository[Any]] = {}

    @property
    def session(self) -> Session:
        """The unit of work's session (only inside the ``with`` block)."""
        if self._session is None:
            raise InvalidInputError("the unit of work is not active: use it in a `with` block")
        return self._session

    def __enter__(self) -> Self:
        if self._session is not None:
            raise InvalidInputError("this unit of work is already active")
        session = self._session_factory()
        if self.context.org_id is not None:
            try:
                scope_session(session, self.context.org_id)
            except BaseException:
                session.close()
                raise
        self._session = session
        self._repositories = {}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc is None:
                self.commit()
            else:
                self._rollback_quietly(session)
                if isinstance(exc, sa_exc.SQLAlchemyError):
                    raise translate(exc) from exc
        finally:
            session.close()
            self._session = None
            self._repositories = {}

    def commit(self) -> None:
        """Commit the work so far; the unit of work stays usable for more."""
        session = self.session
        try:
            with translating():
                session.commit()
        except FlowstoreError:
            self._rollback_quietly(session)
            raise

    def rollback(self) -> None:
        """Discard the work since the last commit."""
        with translating():
            self.session.rollback()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an exception inside rolls back only the block, then re-raises."""
        with translating():
            nested = self.session.begin_nested()
        try:
            yield
        except BaseException as exc:
            # also after a failed flush, which leaves the savepoint inactive but not rolled back
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                nested.rollback()
            if isinstance(exc, sa_exc.SQLAlchemyError):
                raise translate(exc) from exc
            raise
        else:
            with translating():
                nested.commit()

    def queue(self, name: str = "default") -> JobQueue:
        """The job queue ``name`` inside this transaction: enqueued jobs commit with it."""
        from flowstore.queue import JobQueue

        return JobQueue.in_session(self.session, name)

    @staticmethod
    def _rollback_quietly(session: Session) -> None:
        with contextlib.suppress(sa_exc.SQLAlchemyError):
            session.rollback()
