"""Tenant scope over a service's own models, failing closed on what it cannot inspect, and
flowstore's listeners confined to flowstore's own sessions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import String, Table, Uuid, insert, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from flowstore import InvalidInputError, Store, TenantScopeError, tenancy
from flowstore.models import AuditLog, Organization, tenant_column
from flowstore.sessions import FlowstoreSession
from tests.service_app import AcmeUnitOfWork, Note, Project, Tag


class Elsewhere(DeclarativeBase):
    """A declarative base of the service's that is not flowstore's."""

    type_annotation_map = {uuid.UUID: Uuid()}


class Alien(Elsewhere):
    __tablename__ = "svc_aliens"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(String(50))


class OwnAudit(Elsewhere):
    """An application's own ``audit_logs`` table, in another database schema of its own."""

    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(String(50))


def two_orgs(store: Store[AcmeUnitOfWork]) -> tuple[uuid.UUID, uuid.UUID]:
    with store.unit_of_work() as uow:
        a = uow.organizations.add(Organization(name="A", slug="a")).id
        b = uow.organizations.add(Organization(name="B", slug="b")).id
        for owner in (a, b):
            uow.notes.add_many([Note(org_id=owner, title=f"{owner.hex[:4]}-{i}") for i in (1, 2)])
            uow.projects.add(Project(org_id=owner, name="p", slug="p"))
        uow.tags.add(Tag(name="t", label="T"))
    return a, b


def test_the_tenant_column_is_declared_on_the_model() -> None:
    assert tenant_column(Note) == "org_id"
    assert tenant_column(Project) == "org_id"
    assert tenant_column(Organization) == "id"
    assert tenant_column(Tag) is None  # platform-level
    assert tenant_column(Alien) is None  # not flowstore's: unknown


def test_a_scope_filters_the_services_models_everywhere(acme_store: Store[AcmeUnitOfWork]) -> None:
    a, b = two_orgs(acme_store)
    foreign = acme_store_ids(acme_store, Note, b)[0]
    with acme_store.unit_of_work(org_id=a) as uow:
        assert {n.org_id for n in uow.notes.list()} == {a}
        assert {n.org_id for n in uow.session.scalars(select(Note))} == {a}
        assert uow.projects.count() == 1
        assert uow.notes.get_or_none(foreign) is None
        with pytest.raises(TenantScopeError):
            uow.notes.add(Note(org_id=b, title="planted"))
        mine = uow.notes.add(Note(title="filled in"))  # no org given: the scope's
        assert mine.org_id == a
        assert uow.notes.update_many(title="mine now") == 3
        assert uow.notes.delete_many() == 3
    with acme_store.unit_of_work() as uow:
        assert uow.notes.count(org_id=b) == 2
        assert {n.title for n in uow.notes.list(org_id=b)} != {"mine now"}


def acme_store_ids(store: Store[AcmeUnitOfWork], model: Any, owner: uuid.UUID) -> list[Any]:
    with store.unit_of_work() as uow:
        return [row.id for row in uow.session.scalars(select(model).where(model.org_id == owner))]


def test_a_scope_refuses_platform_tables_and_what_it_cannot_inspect(
    acme_store: Store[AcmeUnitOfWork],
) -> None:
    a, _b = two_orgs(acme_store)
    with acme_store.engine.begin() as conn:
        Elsewhere.metadata.create_all(conn, tables=[Alien.__table__])  # type: ignore[list-item]
    try:
        with acme_store.unit_of_work(org_id=a) as uow:
            refused: list[Callable[[], object]] = [
                lambda: uow.tags.list(),  # platform-level
                lambda: uow.session.scalars(select(Alien)).all(),  # another declarative base
                lambda: add_and_flush(uow.session, Alien(org_id=a, name="x")),
                lambda: uow.session.execute(select(Note).where(text("1 = 1"))).all(),
                lambda: uow.session.execute(text("SELECT 1")),
                lambda: uow.session.execute(update(Note).values(org_id=_b)),
                lambda: uow.session.execute(insert(Note).values(org_id=a, title="raw")),
                lambda: uow.session.execute(select(Note.__table__)).all(),
            ]
            for attempt in refused:
                with pytest.raises(TenantScopeError), uow.savepoint():
                    attempt()
            uow.session.expunge_all()
    finally:
        with acme_store.engine.begin() as conn:
            Elsewhere.metadata.drop_all(conn, tables=[Alien.__table__])  # type: ignore[list-item]


def add_and_flush(session: Session, instance: object) -> None:
    session.add(instance)
    session.flush()


def test_a_unit_of_work_is_narrowed_once_the_caller_is_known(
    acme_store: Store[AcmeUnitOfWork],
) -> None:
    a, b = two_orgs(acme_store)
    with acme_store.unit_of_work() as uow:
        everyone = uow.notes.list()
        assert {n.org_id for n in everyone} == {a, b}
        uow.scope_to(a)
        assert uow.org_id == a
        assert {n.org_id for n in uow.notes.list()} == {a}
        foreign = next(n for n in everyone if n.org_id == b)
        assert uow.notes.get_or_none(foreign.id) is None  # not even from the identity map
        with pytest.raises(TenantScopeError):
            uow.scope_to(b)  # never widened, never moved
        uow.scope_to(a)  # the same organization again is fine


def test_flowstore_changes_nothing_in_other_sessions(acme_store: Store[AcmeUnitOfWork]) -> None:
    """An application session updating its own ``audit_logs`` table is not flowstore's: no
    append-only refusal there (flowstore's own sessions refuse it, before any SQL)."""
    own = OwnAudit.__table__
    assert isinstance(own, Table)
    other = sessionmaker(acme_store.engine)  # a plain SQLAlchemy session, not flowstore's
    with other() as session:
        assert not isinstance(session, FlowstoreSession)
        assert not session.dispatch.do_orm_execute  # no flowstore listener on it
        statement = update(OwnAudit).values(note="x").where(OwnAudit.id == -1)
        assert "audit_logs" in str(statement.compile(dialect=acme_store.engine.dialect))
        session.execute(select(Organization).limit(1)).all()
    with acme_store.unit_of_work() as uow, pytest.raises(InvalidInputError):
        uow.session.execute(update(AuditLog).values(action="x"))


def test_an_update_whose_set_clause_cannot_be_read_is_refused(
    acme_store: Store[AcmeUnitOfWork], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a SQLAlchemy release hid the SET clause, the scope fails closed."""
    a, _b = two_orgs(acme_store)
    monkeypatch.setattr(tenancy, "update_set_keys", lambda statement: None)
    with acme_store.unit_of_work(org_id=a) as uow, pytest.raises(TenantScopeError, match="read"):
        uow.notes.update_many(title="x")
