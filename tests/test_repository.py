"""The Repository[T] contract, run over every repository on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert

from flowstore import (
    AlreadyExistsError,
    ConcurrencyError,
    InvalidInputError,
    NotFoundError,
    Store,
    where,
)
from flowstore.models import Application, Deployment, Organization
from tests.builders import BUILDERS

REPOS = sorted(BUILDERS)
MUTABLE = [name for name in REPOS if name != "audit_logs"]


def _build(uow: Any, repo: str, **kw: Any) -> Any:
    return BUILDERS[repo][0](uow, **kw)


@pytest.mark.parametrize("repo", REPOS)
def test_add_get_exists(store: Store, repo: str) -> None:
    before = datetime.now(UTC)
    with store.unit_of_work() as uow:
        entity = _build(uow, repo)
        assert isinstance(entity.id, uuid.UUID)
        assert entity.lock_version == 1
        ident = entity.id
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        loaded = repository.get(ident)
        assert loaded.id == ident
        assert repository.get(str(ident)).id == ident
        assert repository.exists(ident) and repository.exists(str(ident))
        assert loaded.created_at.tzinfo is not None
        assert loaded.created_at.utcoffset().total_seconds() == 0
        assert before <= loaded.created_at <= datetime.now(UTC)
        assert loaded.updated_at == loaded.created_at  # a new record: updated when created


def test_updated_at_starts_as_created_at_on_every_insert_path(store: Store) -> None:
    """A flush, a flush with a given ``created_at`` (an import), and a Core executemany all
    store ``updated_at == created_at``; an update then moves ``updated_at`` on alone."""
    imported = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    with store.unit_of_work() as uow:
        fresh = uow.deployments.add(Deployment(name="fresh", version="1"))
        uow.deployments.add(Deployment(name="imported", version="1", created_at=imported))
    rows = [{"name": f"core-{i}", "version": "1", "lock_version": 1} for i in range(3)]
    with store.engine.begin() as conn:
        conn.execute(insert(Deployment), rows)
    with store.unit_of_work() as uow:
        stored = {d.name: d for d in uow.deployments.list()}
        assert len(stored) == 5
        for deployment in stored.values():
            assert deployment.updated_at == deployment.created_at, deployment.name
        assert stored["imported"].updated_at == imported
        stored["fresh"].version = "2"
    with store.unit_of_work() as uow:
        updated = uow.deployments.get(fresh.id)
        assert updated.created_at == fresh.created_at < updated.updated_at


@pytest.mark.parametrize("repo", REPOS)
@pytest.mark.parametrize("missing", [uuid.uuid4(), "not-a-uuid", 12345, None])
def test_missing_ids(store: Store, repo: str, missing: Any) -> None:
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        assert repository.get_or_none(missing) is None
        assert repository.exists(missing) is False
        with pytest.raises(NotFoundError):
            repository.get(missing)


@pytest.mark.parametrize("repo", REPOS)
def test_list_count_and_paging(store: Store, repo: str) -> None:
    with store.unit_of_work() as uow:
        made = [_build(uow, repo) for _ in range(5)]
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        own = [e.id for e in made]
        listed = [e.id for e in repository.list(where("id", "in", own))]
        # the default order is creation time, then id
        assert listed == [e.id for e in sorted(made, key=lambda e: (e.created_at, e.id))]
        assert repository.count(where("id", "in", own)) == 5
        pages = [
            [e.id for e in repository.list(where("id", "in", own), limit=2, offset=o)]
            for o in (0, 2, 4)
        ]
        assert [len(p) for p in pages] == [2, 2, 1]
        assert sum(pages, []) == listed
        newest_first = repository.list(where("id", "in", own), order_by="-created_at")
        expected = sorted(made, key=lambda e: e.id)
        expected.sort(key=lambda e: e.created_at, reverse=True)  # stable: id breaks ties
        assert [e.id for e in newest_first] == [e.id for e in expected]
        first = made[0]
        field = BUILDERS[repo][2]
        value = getattr(first, field)
        matching = repository.list(**{field: value})
        assert first.id in [e.id for e in matching]
        assert all(getattr(e, field) == value for e in matching)
        assert repository.count(**{field: value}) == len(matching)


@pytest.mark.parametrize("repo", REPOS)
def test_unknown_filter_and_bad_paging(store: Store, repo: str) -> None:
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        with pytest.raises(InvalidInputError):
            repository.list(no_such_field=1)
        with pytest.raises(InvalidInputError):
            repository.count(no_such_field=1)
        with pytest.raises(InvalidInputError):
            repository.list(limit=-1)
        with pytest.raises(InvalidInputError):
            repository.list(offset="3")
        with pytest.raises(InvalidInputError):
            repository.list(order_by="no_such_field")
        with pytest.raises(InvalidInputError):
            repository.list("not a spec")


@pytest.mark.parametrize("repo", MUTABLE)
def test_update_and_delete(store: Store, repo: str) -> None:
    field = BUILDERS[repo][1]
    with store.unit_of_work() as uow:
        entity = _build(uow, repo)
    new_value: Any = 42 if field == "priority" else None
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        loaded = repository.get(entity.id)
        if new_value is None:
            current = getattr(loaded, field)
            members = getattr(type(current), "__members__", None)  # an enum's
            new_value = [*members.values()][-1] if members else f"{current}-changed"
        setattr(loaded, field, new_value)
        updated = repository.update(loaded)
        assert updated.lock_version == 2
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        assert getattr(repository.get(entity.id), field) == new_value
        repository.delete(entity.id)
        assert repository.get_or_none(entity.id) is None
        with pytest.raises(NotFoundError):
            repository.delete(entity.id)
    with store.unit_of_work() as uow:
        assert getattr(uow, repo).exists(entity.id) is False


@pytest.mark.parametrize("repo", MUTABLE)
def test_update_of_detached_entity_and_stale_version(store: Store, repo: str) -> None:
    field = BUILDERS[repo][1]
    with store.unit_of_work() as uow:
        entity = _build(uow, repo)
    with store.unit_of_work() as uow:
        first_read = getattr(uow, repo).get(entity.id)
    with store.unit_of_work() as uow:
        second_read = getattr(uow, repo).get(entity.id)
        if field == "priority":
            second_read.priority = 7
        elif field == "status":
            second_read.status = [*type(second_read.status).__members__.values()][1]
        else:
            setattr(second_read, field, f"{getattr(second_read, field)}-x")
        getattr(uow, repo).update(second_read)
    # first_read is detached and one version behind: the update must be refused
    with pytest.raises(ConcurrencyError), store.unit_of_work() as uow:
        if field == "priority":
            first_read.priority = 99
        else:
            setattr(first_read, field, getattr(second_read, field))
        getattr(uow, repo).update(first_read)
    with store.unit_of_work() as uow:
        assert getattr(uow, repo).get(entity.id).lock_version == 2


@pytest.mark.parametrize("repo", MUTABLE)
def test_update_missing_entity(store: Store, repo: str) -> None:
    with store.unit_of_work() as uow:
        entity = _build(uow, repo)
        uow.rollback()
    with pytest.raises(NotFoundError), store.unit_of_work() as uow:
        getattr(uow, repo).update(entity)


@pytest.mark.parametrize("repo", REPOS)
def test_duplicate_id_is_already_exists_and_uow_stays_usable(store: Store, repo: str) -> None:
    with store.unit_of_work() as uow:
        first = _build(uow, repo)
        model = type(first)
        clone_values = {
            c.key: getattr(first, c.key) for c in model.__table__.columns if c.key != "lock_version"
        }
        with pytest.raises(AlreadyExistsError):
            getattr(uow, repo).add(model(**clone_values))
        # the failed add rolled back only itself: the unit of work goes on and commits
        second = _build(uow, repo)
    with store.unit_of_work() as uow:
        assert getattr(uow, repo).exists(first.id)
        assert getattr(uow, repo).exists(second.id)


@pytest.mark.parametrize("repo", REPOS)
def test_add_many_all_or_nothing(store: Store, repo: str) -> None:
    with store.unit_of_work() as uow:
        existing = _build(uow, repo)
    model = type(existing)
    values = {c.key: getattr(existing, c.key) for c in model.__table__.columns}
    del values["lock_version"]
    # a new session, so that the duplicate id is found by the database, not the identity map
    with store.unit_of_work() as uow:
        repository = getattr(uow, repo)
        copies = [model(**{**values, "id": uuid.uuid4()}), model(**values)]
        for n, copy in enumerate(copies):  # the only clash left is the second copy's id
            for column in ("slug", "instance_id", "external_id", "api_key_hash"):
                if getattr(copy, column, None) is not None:
                    setattr(copy, column, f"{getattr(copy, column)[:50]}-copy{n}")
            if hasattr(copy, "email"):
                copy.email = f"copy{n}-{uuid.uuid4().hex[:6]}@example.com"
        with pytest.raises(AlreadyExistsError):
            repository.add_many(copies)
        assert repository.get_or_none(copies[0].id) is None  # nothing of the batch was written
        assert repository.add_many([]) == []


@pytest.mark.parametrize("repo", REPOS)
def test_add_refuses_other_types(store: Store, repo: str) -> None:
    other = Organization(name="x", slug="x") if repo != "organizations" else Deployment(name="d")
    with store.unit_of_work() as uow:
        with pytest.raises(InvalidInputError):
            getattr(uow, repo).add(other)
        with pytest.raises(InvalidInputError):
            getattr(uow, repo).add_many([other])


def test_stable_order_with_equal_created_at(store: Store) -> None:
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    with store.unit_of_work() as uow:
        made = uow.deployments.add_many(
            [Deployment(name=f"d{i}", version="1", created_at=stamp) for i in range(7)]
        )
    with store.unit_of_work() as uow:
        pages = [[d.id for d in uow.deployments.list(limit=3, offset=o)] for o in range(0, 9, 3)]
    flat = sum(pages, [])
    assert flat == sorted(d.id for d in made)  # ties on created_at are broken by id
    assert len(set(flat)) == 7


def test_order_by_list_and_descending(store: Store) -> None:
    with store.unit_of_work() as uow:
        for name, version in [("b", "2"), ("a", "2"), ("c", "1"), ("a", "1")]:
            uow.deployments.add(Deployment(name=name, version=version))
    with store.unit_of_work() as uow:
        rows = uow.deployments.list(order_by=["-version", "name"])
        assert [(d.version, d.name) for d in rows] == [
            ("2", "a"),
            ("2", "b"),
            ("1", "a"),
            ("1", "c"),
        ]
        rows = uow.deployments.list(order_by="-name", limit=2)
        assert [d.name for d in rows] == ["c", "b"]
        with pytest.raises(InvalidInputError):
            uow.deployments.list(order_by=["-"])


def test_uuid_fields_accept_their_string_form(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="o", slug="o"))
        app = uow.applications.add(Application(org_id=str(org.id), name="a"))
        assert app.org_id == org.id and isinstance(app.org_id, uuid.UUID)
        with pytest.raises(InvalidInputError):
            uow.applications.add(Application(org_id="not-a-uuid", name="b"))
    with store.unit_of_work() as uow:
        assert [a.id for a in uow.applications.list(org_id=str(org.id))] == [app.id]
