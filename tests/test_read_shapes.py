"""Reads run a statement kept per shape with their values bound (``repositories.shapes``).

What a ``list()`` or an audit ``query()`` sends must be what the statement built with the
values in place sends (as both were built before statements were kept): the same SQL,
parameter types and values on every dialect, and the same error for bad arguments (the first
bad one, in the order they were always checked). Limits and offsets past 32 bits, bound as
BIGINT, take the built statement. A repository that builds its own reads keeps them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Select, create_engine, event, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import ORMExecuteState, Session

from flowstore import Store
from flowstore.errors import FlowstoreError, InvalidInputError
from flowstore.models import AuditLog, Deployment, DeploymentStatus
from flowstore.repositories import AuditLogRepository, DeploymentRepository, Repository
from flowstore.repositories.pagination import after_clause, check_page, encode_cursor
from flowstore.repositories.queries import criteria, paged
from flowstore.validation import coerce_value
from tests.service_app import Note, NoteRepository, Project, ProjectRepository, Tag, TagRepository

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ORG = uuid.UUID(int=7)

DIALECTS: dict[str, Dialect] = {
    url.split(":")[0]: create_engine(url).dialect
    for url in ("sqlite://", "postgresql+psycopg://", "mysql+pymysql://")
}
REPOSITORIES: dict[type[Any], type[Repository[Any]]] = {
    Deployment: DeploymentRepository,
    Project: ProjectRepository,
    Note: NoteRepository,
    Tag: TagRepository,
}


@pytest.fixture(scope="module")
def memory() -> Iterator[Store]:
    with Store("sqlite://") as store:
        yield store


def rendered(stmt: Any, params: Mapping[str, Any], dialect: Dialect) -> Any:
    """``stmt`` as ``dialect`` sends it: its SQL with the parameters' names taken out, and
    each parameter's type and value, in order."""
    compiled = stmt.compile(dialect=dialect)
    values = compiled.construct_params(dict(params))
    names = list(compiled.positiontup or re.findall(r"%\((\w+)\)s", compiled.string))
    sql = re.sub(r"%\((\w+)\)s", "%s", compiled.string)
    return sql, [(type(compiled.binds[n].type), values[n]) for n in names]


def outcome(build: Callable[[], tuple[Any, Mapping[str, Any]]]) -> Any:
    """What ``build`` makes, rendered on every dialect, or the error it raises."""
    try:
        stmt, params = build()
    except FlowstoreError as exc:
        return type(exc), str(exc)
    return {name: rendered(stmt, params, dialect) for name, dialect in DIALECTS.items()}


def sent(store: Store, read: Callable[[Session], object]) -> Callable[[], tuple[Any, Any]]:
    """A ``build`` for ``outcome``: the statement and parameters ``read(session)`` runs."""

    def build() -> tuple[Any, Any]:
        seen: list[tuple[Any, Any]] = []

        def capture(state: ORMExecuteState) -> None:
            seen.append((state.statement, state.parameters or {}))

        with store.session_factory() as session:
            event.listen(session, "do_orm_execute", capture)
            read(session)
        assert len(seen) == 1
        return seen[0]

    return build


def cursor(model: type[Any], **values: Any) -> str:
    return encode_cursor(model(**values))


# model, filters, limit, offset, order_by, after
LISTS: list[tuple[type[Any], dict[str, Any], Any, Any, Any, Any]] = [
    (Deployment, {"status": DeploymentStatus.RUNNING}, 50, None, None, None),
    (Deployment, {"status": "running", "name": None}, 10, 5, None, None),
    (Deployment, {}, 3, 0, "-name", None),
    (Deployment, {"version": "1.2"}, None, None, ["version", "-name"], None),
    (Deployment, {"status": "failed"}, 0, None, None, cursor(Deployment, id=ORG, created_at=T0)),
    (Deployment, {}, 2**31, None, None, None),
    (Deployment, {}, 5, 2**31, None, None),
    (Deployment, {}, 2**31 - 1, 2**31 - 1, None, None),
    (Project, {"org_id": str(ORG), "budget": Decimal("1.5")}, 1, None, "slug", None),
    (Note, {"title": "x"}, 20, None, None, cursor(Note, id=4, created_at=T0)),
    (Tag, {"weight": 2**40, "label": "é"}, 5, None, None, cursor(Tag, name="t")),
    # refused, each with the error of its first bad argument
    (Tag, {"weight": True}, None, None, None, None),
    (Deployment, {"nope": 1, "status": "bogus"}, 1, None, None, None),
    (Deployment, {"status": "bogus", "nope": 1}, 1, None, None, None),
    (Deployment, {"status": "bogus"}, "ten", None, "zzz", None),
    (Deployment, {}, 5, None, "zzz", "garbage"),
    (Deployment, {}, 5, None, None, "garbage"),
    (Deployment, {}, 5, 2, None, cursor(Deployment, id=ORG, created_at=T0)),
    (Deployment, {}, 5, None, None, cursor(Tag, name="t")),
    (Deployment, {}, -1, None, "zzz", None),
    (Deployment, {}, 5, None, ["name", 3], None),
    (Deployment, {}, True, False, None, None),
    (Deployment, {"config": {}}, 5, None, None, None),
]


@pytest.mark.parametrize(("model", "filters", "limit", "offset", "order_by", "after"), LISTS)
def test_a_list_sends_what_its_built_statement_sends(
    memory: Store,
    model: type[Any],
    filters: dict[str, Any],
    limit: Any,
    offset: Any,
    order_by: Any,
    after: Any,
) -> None:
    def built() -> tuple[Select[Any], Mapping[str, Any]]:
        stmt = select(model).where(*criteria(model, (), filters))
        return paged(model, stmt, limit, offset, order_by, after), {}

    def read(session: Session) -> object:
        repository = REPOSITORIES[model](session)
        return repository.list(
            limit=limit, offset=offset, order_by=order_by, after=after, **filters
        )

    expected = outcome(built)
    for _ in range(2):  # the shape's first call, then its kept statement
        assert outcome(sent(memory, read)) == expected


# filters besides org_id, since, until, limit, offset, after
QUERIES: list[tuple[dict[str, Any], Any, Any, Any, Any, Any]] = [
    ({}, T0, T0 + timedelta(days=10), 100, 0, None),
    ({"action": "key.rotate", "user_id": str(ORG)}, None, T0, 10, 30, None),
    ({"request_id": "r-1"}, T0, None, 5, 0, cursor(AuditLog, id=ORG, created_at=T0)),
    ({}, None, None, None, 2**31, None),
    ({}, None, None, 2**40, None, None),
    ({}, None, None, 0, None, None),
    # refused, each with the error of its first bad argument
    ({"application_id": "not a uuid"}, T0, None, 5, 0, None),
    ({}, datetime(2025, 1, 1), "tomorrow", 5, 0, None),
    ({}, None, "tomorrow", "5", 0, None),
    ({}, None, None, 5, 1, cursor(AuditLog, id=ORG, created_at=T0)),
    ({}, None, None, 5, 0, cursor(Deployment, id=ORG, created_at=T0)),
    ({}, None, None, True, 0, None),
    ({}, None, None, 5, -3, None),
]


def built_query(
    filters: dict[str, Any], since: Any, until: Any, limit: Any, offset: Any, after: Any
) -> tuple[Select[Any], Mapping[str, Any]]:
    """``AuditLogRepository.query``'s statement as it was built before statements were kept."""
    named = {"org_id": ORG}  # in query()'s order
    named |= {
        n: filters[n] for n in ("application_id", "user_id", "action", "request_id") if n in filters
    }
    clauses: list[ColumnElement[bool]] = criteria(AuditLog, (), named)
    if since is not None:
        clauses.append(AuditLog.created_at >= coerce_value(AuditLog.created_at, "since", since))
    if until is not None:
        clauses.append(AuditLog.created_at < coerce_value(AuditLog.created_at, "until", until))
    if after is not None:
        if offset:
            raise InvalidInputError("use either after or offset, not both")
        clauses.append(after_clause(AuditLog, after, descending=True))
    stmt = (
        select(AuditLog)
        .where(*clauses)
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        .limit(check_page("limit", limit))
        .offset(check_page("offset", offset) or None)
    )
    return stmt, {}


@pytest.mark.parametrize(("filters", "since", "until", "limit", "offset", "after"), QUERIES)
def test_an_audit_query_sends_what_its_built_statement_sends(
    memory: Store,
    filters: dict[str, Any],
    since: Any,
    until: Any,
    limit: Any,
    offset: Any,
    after: Any,
) -> None:
    def read(session: Session) -> object:
        return AuditLogRepository(session).query(
            ORG, since=since, until=until, limit=limit, offset=offset, after=after, **filters
        )

    expected = outcome(lambda: built_query(filters, since, until, limit, offset, after))
    for _ in range(2):
        assert outcome(sent(memory, read)) == expected


def test_deep_pages_past_32_bits_are_answered(store: Store) -> None:
    """Bound as BIGINT, as SQLAlchemy binds them (an INTEGER would overflow on PostgreSQL)."""
    with store.unit_of_work() as uow:
        uow.audit_logs.record(ORG, "a", "b")
        assert uow.deployments.list(limit=2**40, offset=2**31) == []
        assert uow.audit_logs.query(ORG, limit=2**31, offset=2**40) == []
        assert len(uow.audit_logs.query(ORG, limit=2**31)) == 1


class OnlyRunning(DeploymentRepository):
    """Builds its reads its own way: only running deployments, whatever the filters."""

    def _select(self, specs: Any, filters: Mapping[str, Any]) -> Select[Any]:
        return super()._select(specs, filters).where(Deployment.status == "running")


def test_a_repository_that_builds_its_own_reads_keeps_them(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="a", version="1", status=DeploymentStatus.RUNNING))
        uow.deployments.add(Deployment(name="b", version="1", status=DeploymentStatus.STOPPED))
        assert len(uow.deployments.list(version="1")) == 2
        assert [d.name for d in OnlyRunning(uow.session).list(version="1")] == ["a"]


class OnlyRotations(AuditLogRepository):
    """Narrows its reads its own way: key rotations only."""

    def _criteria(self, specs: Any, filters: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        return [*super()._criteria(specs, filters), AuditLog.action == "key.rotate"]


def test_an_audit_repository_with_criteria_of_its_own_keeps_them(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.audit_logs.record(ORG, "key.rotate", "key")
        uow.audit_logs.record(ORG, "policy.change", "policy")
        assert len(uow.audit_logs.query(ORG)) == 2
        assert [e.action for e in OnlyRotations(uow.session).query(ORG)] == ["key.rotate"]
        assert OnlyRotations(uow.session).query(ORG, offset=1) == []
