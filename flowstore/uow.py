"""``UnitOfWork``: one session, one transaction, repositories as attributes.

``with store.unit_of_work() as uow:`` commits on a clean exit and rolls back on an exception,
which is re-raised (a SQLAlchemy/DBAPI error as its flowstore error). Repositories are made on
first access and share the unit of work's session.

A service adds its own repositories by declaring them on a subclass, and hands that class to
its store; the async face (``flowstore.aio``) builds its awaitable attributes from the same
declaration::

    class AcmeUnitOfWork(UnitOfWork):
        projects = repository(ProjectRepository)

    store = Store(url, unit_of_work_class=AcmeUnitOfWork)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from flowstore.errors import FlowstoreError, InvalidInputError, translate, translating
from flowstore.events.log import EventPublisher
from flowstore.read_only import READ_ONLY
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
from flowstore.sessions import CallerSession
from flowstore.tenancy import scope_session
from flowstore.timeouts import SESSION_KEY as TIMEOUT_KEY

if TYPE_CHECKING:
    import uuid

    from flowstore.queue import JobQueue

__all__ = ["RepositoryAttribute", "UnitOfWork", "repository"]

RepoT = TypeVar("RepoT", bound=Repository[Any])


class RepositoryAttribute(Generic[RepoT]):
    """A repository declared on a unit-of-work class: made on first access, one per unit of
    work, on its session."""

    def __init__(self, repository_class: type[RepoT]) -> None:
        if not (isinstance(repository_class, type) and issubclass(repository_class, Repository)):
            raise TypeError(f"repository() takes a Repository subclass, got {repository_class!r}")
        if not isinstance(getattr(repository_class, "model", None), type):
            raise TypeError(f"{repository_class.__name__} must set `model = <its model class>`")
        self.repository_class = repository_class
        self.name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"repository({self.repository_class.__name__})"

    @overload
    def __get__(self, uow: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, uow: UnitOfWork, owner: type[Any]) -> RepoT: ...
    def __get__(self, uow: UnitOfWork | None, owner: type[Any]) -> RepoT | Self:
        if uow is None:
            return self
        return uow.get_repository(self.name)  # type: ignore[return-value]


def repository(repository_class: type[RepoT]) -> RepositoryAttribute[RepoT]:
    """Declare a repository attribute on a ``UnitOfWork`` subclass:
    ``projects = repository(ProjectRepository)``."""
    return RepositoryAttribute(repository_class)


class UnitOfWork:
    """One session and one transaction; use it as a context manager.

    ``repositories`` maps each declared attribute name to its repository class (the
    declaration the async face builds from).
    """

    repositories: ClassVar[MappingProxyType[str, type[Repository[Any]]]]

    deployments = repository(DeploymentRepository)
    templates = repository(TemplateRepository)
    requests = repository(RequestRepository)
    machines = repository(MachineRepository)
    organizations = repository(OrganizationRepository)
    applications = repository(ApplicationRepository)
    users = repository(UserRepository)
    policies = repository(PolicyRepository)
    audit_logs = repository(AuditLogRepository)
    inference_requests = repository(InferenceRequestRepository)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.repositories = _declared(cls)

    def __init__(
        self,
        session_factory: Callable[[], Session],
        context: RepositoryContext | None = None,
        *,
        rollback_on_exit: bool = False,
        timeout: float | None = None,
    ) -> None:
        """``rollback_on_exit``: a clean exit rolls back instead of committing (for tests
        and dry runs; an explicit ``commit()`` still commits). ``timeout``: seconds each
        statement may run (``flowstore.timeouts``; default: the store's ``statement_timeout``)."""
        self._session_factory = session_factory
        self.context = context or RepositoryContext()
        self.rollback_on_exit = rollback_on_exit
        self.timeout = timeout
        self._session: Session | None = None
        self._repositories: dict[str, Repository[Any]] = {}

    @property
    def session(self) -> Session:
        """The unit of work's session (only inside the ``with`` block)."""
        if self._session is None:
            raise InvalidInputError("the unit of work is not active: use it in a `with` block")
        return self._session

    @property
    def events(self) -> EventPublisher:
        """``uow.events.publish(type, data, *, entity_id=None)``: a domain event that commits
        with this unit of work (flowstore.events)."""
        return EventPublisher(self.session)

    @property
    def org_id(self) -> uuid.UUID | None:
        """The organization this unit of work is confined to, or ``None``."""
        return self.context.org_id

    def get_repository(self, name: str) -> Repository[Any]:
        """The declared repository ``name`` of this unit of work (made on first use)."""
        found = self._repositories.get(name)
        if found is None:
            repository_class = type(self).repositories.get(name)
            if repository_class is None:
                raise InvalidInputError(f"{type(self).__name__} declares no repository {name!r}")
            found = self._repositories[name] = repository_class(self.session, self.context)
        return found

    def __enter__(self) -> Self:
        if self._session is not None:
            raise InvalidInputError("this unit of work is already active")
        session = self._session_factory()
        if self.timeout is not None:
            session.info[TIMEOUT_KEY] = self.timeout
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
            if exc is None and not self.rollback_on_exit:
                self.commit()
            elif exc is None and session.info.get(READ_ONLY):
                with translating():
                    session.flush()  # changes left pending are refused, not dropped unsaid
                self._rollback_quietly(session)
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

    def scope_to(self, org_id: Any) -> None:
        """Confine this unit of work to one organization from now on (say, once a request's
        API key is known): what it already holds of other organizations is dropped from the
        session. Never widened: another organization afterwards is ``TenantScopeError``."""
        with translating():
            org = scope_session(self.session, org_id)
        if self.context.org_id != org:
            self.context = self.context.for_org(org)
            self._repositories = {}

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

        return JobQueue(CallerSession(self.session), name)

    @staticmethod
    def _rollback_quietly(session: Session) -> None:
        with contextlib.suppress(sa_exc.SQLAlchemyError):
            session.rollback()


def _declared(cls: type[Any]) -> MappingProxyType[str, type[Repository[Any]]]:
    """The repository attributes of ``cls`` and its bases, by name (a subclass's win)."""
    found: dict[str, type[Repository[Any]]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, RepositoryAttribute):
                found[name] = value.repository_class
            elif name in found:
                del found[name]  # a subclass replaced the attribute with something else
    return MappingProxyType(found)


UnitOfWork.repositories = _declared(UnitOfWork)
