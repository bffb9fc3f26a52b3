"""A service's own models, repositories and unit of work on flowstore (tests/service_app.py),
on every backend: the contract methods for integer, string and UUID keys, the declaration
of repositories, and the methods an API needs (list_and_count, upsert, update_many,
delete_many, the case-insensitive operators)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from flowstore import AlreadyExistsError, InvalidInputError, NotFoundError, Store, UnitOfWork, where
from flowstore.models import Organization
from tests.service_app import AcmeUnitOfWork, Note, Project, Tag


def org(store: Store[AcmeUnitOfWork], slug: str = "acme") -> uuid.UUID:
    with store.unit_of_work() as uow:
        return uow.organizations.add(Organization(name=slug.title(), slug=slug)).id


def test_the_declaration_lists_flowstores_and_the_services_repositories() -> None:
    assert set(AcmeUnitOfWork.repositories) == set(UnitOfWork.repositories) | {
        "projects",
        "notes",
        "tags",
    }
    assert AcmeUnitOfWork.repositories["notes"].model is Note
    with pytest.raises(TypeError, match="model"):

        class Broken(UnitOfWork):
            nothing = __import__("flowstore").repository(__import__("flowstore").Repository)


def test_store_hands_out_the_services_unit_of_work(acme_store: Store[AcmeUnitOfWork]) -> None:
    with acme_store.unit_of_work() as uow:
        assert isinstance(uow, AcmeUnitOfWork)
        assert uow.notes is uow.notes  # one repository per unit of work
        assert uow.deployments.model.__name__ == "Deployment"
    with pytest.raises(InvalidInputError, match="UnitOfWork subclass"):
        Store("sqlite://", unit_of_work_class=dict)


def test_an_integer_key_works_with_every_contract_method(acme_store: Store[AcmeUnitOfWork]) -> None:
    owner = org(acme_store)
    with acme_store.unit_of_work() as uow:
        first = uow.notes.add(Note(org_id=owner, title="first"))
        second = uow.notes.add(Note(org_id=owner, title="second", body={"tags": ["a"]}))
        assert isinstance(first.id, int) and second.id != first.id
    with acme_store.unit_of_work() as uow:
        assert uow.notes.get(first.id).title == "first"
        assert uow.notes.get(str(second.id)).title == "second"  # ids often arrive as text
        assert uow.notes.get_or_none(10**6) is None
        assert uow.notes.get_or_none("not a number") is None
        with pytest.raises(NotFoundError):
            uow.notes.get(10**6)
        assert uow.notes.exists(first.id) and not uow.notes.exists(10**6)
        assert [n.title for n in uow.notes.list()] == ["first", "second"]
        assert uow.notes.count(title="second") == 1
        page = uow.notes.page(limit=1)
        assert [n.id for n in page.items] == [first.id]
        assert page.next_cursor is not None
        assert [n.id for n in uow.notes.page(limit=1, after=page.next_cursor).items] == [second.id]
        note = uow.notes.get(first.id)
        note.title = "renamed"
        uow.notes.update(note)
        uow.notes.delete(second.id)
        with pytest.raises(NotFoundError):
            uow.notes.delete(second.id)
    with acme_store.unit_of_work() as uow:
        assert [n.title for n in uow.notes.list()] == ["renamed"]


def test_a_string_key_without_created_at_lists_in_key_order(
    acme_store: Store[AcmeUnitOfWork],
) -> None:
    with acme_store.unit_of_work() as uow:
        uow.tags.add_many([Tag(name=n, label=n.upper()) for n in ("gpu", "cpu", "arm")])
        with pytest.raises(AlreadyExistsError):
            uow.tags.add(Tag(name="gpu", label="again"))
        assert uow.tags.count() == 3  # the failed add left the unit of work usable
    with acme_store.unit_of_work() as uow:
        assert [t.name for t in uow.tags.list()] == ["arm", "cpu", "gpu"]
        first = uow.tags.page(limit=2)
        assert [t.name for t in first.items] == ["arm", "cpu"]
        assert first.next_cursor is not None
        assert [t.name for t in uow.tags.page(limit=2, after=first.next_cursor).items] == ["gpu"]
        assert uow.tags.get("cpu").label == "CPU"
        assert uow.tags.get_or_none(7) is None
    detached = Tag(name="cpu", label="Central")
    with acme_store.unit_of_work() as uow:
        uow.tags.update(detached)  # no version counter: the row is simply written
    with acme_store.unit_of_work() as uow:
        assert uow.tags.get("cpu").label == "Central"


def test_list_and_count_gives_one_page_and_the_total(acme_store: Store[AcmeUnitOfWork]) -> None:
    owner = org(acme_store)
    with acme_store.unit_of_work() as uow:
        uow.notes.add_many([Note(org_id=owner, title=f"n{i}") for i in range(7)])
    with acme_store.unit_of_work() as uow:
        items, total = uow.notes.list_and_count(limit=3, offset=3)
        assert total == 7 and [n.title for n in items] == ["n3", "n4", "n5"]
        items, total = uow.notes.list_and_count(where("title", ">", "n4"), limit=10)
        assert total == 2 and len(items) == 2
        assert uow.notes.list_and_count(limit=5, offset=50) == ([], 7)
        assert uow.notes.list_and_count(title="none") == ([], 0)


def test_upsert_inserts_then_updates_on_a_unique_key(acme_store: Store[AcmeUnitOfWork]) -> None:
    owner = org(acme_store)
    with acme_store.unit_of_work() as uow:
        created = uow.projects.upsert(
            Project(org_id=owner, name="Web", slug="web", settings={"a": 1}),
            on=["org_id", "slug"],
        )
        assert created.lock_version == 1
        again = uow.projects.upsert(
            Project(org_id=owner, name="Website", slug="web", budget=Decimal("12.5")),
            on=["org_id", "slug"],
        )
        assert again.id == created.id and again.name == "Website"
        assert again.lock_version == 2
        assert again.settings == {"a": 1}  # a field the entity did not set is left alone
        assert again.created_at == created.created_at
        assert uow.projects.count() == 1
        with pytest.raises(InvalidInputError, match="unique key"):
            uow.projects.upsert(Project(org_id=owner, name="X", slug="x"), on="name")
    with acme_store.unit_of_work() as uow:
        stored = uow.projects.get(created.id)
        assert (stored.name, stored.budget, stored.lock_version) == ("Website", Decimal("12.5"), 2)
        by_key = uow.tags.upsert(Tag(name="gpu", label="GPU"))
        assert uow.tags.upsert(Tag(name="gpu", label="Graphics")).label == "Graphics"
        assert by_key.name == "gpu" and uow.tags.count() == 1


def test_update_many_and_delete_many_work_by_specification(
    acme_store: Store[AcmeUnitOfWork],
) -> None:
    owner = org(acme_store)
    with acme_store.unit_of_work() as uow:
        projects = uow.projects.add_many(
            [Project(org_id=owner, name=f"p{i}", slug=f"p{i}") for i in range(5)]
        )
    with acme_store.unit_of_work() as uow:
        changed = uow.projects.update_many(where("slug", "in", ["p0", "p1", "p2"]), name="bulk")
        assert changed == 3
        assert uow.projects.update_many(where("slug", "==", "p3"), {"budget": Decimal(3)}) == 1
        with pytest.raises(InvalidInputError, match="cannot be set"):
            uow.projects.update_many(where("slug", "==", "p3"), id=uuid.uuid4())
        with pytest.raises(InvalidInputError, match="decimal places"):
            uow.projects.update_many(where("slug", "==", "p3"), budget=Decimal("0.1234567"))
        with pytest.raises(InvalidInputError, match="no field"):
            uow.projects.update_many(where("slug", "==", "p3"), colour="red")
    with acme_store.unit_of_work() as uow:
        bulk = uow.projects.list(name="bulk")
        assert len(bulk) == 3 and {p.lock_version for p in bulk} == {2}  # versions bumped
        assert all(p.updated_at > p.created_at for p in bulk)
        stale = projects[0]
        stale.name = "stale write"
        from flowstore import ConcurrencyError

        with pytest.raises(ConcurrencyError):
            uow.projects.update(stale)  # the bulk update made the old copy stale
    with acme_store.unit_of_work() as uow:
        assert uow.projects.delete_many(name="bulk") == 3
        assert uow.projects.delete_many(where("slug", "startswith", "nothing")) == 0
        assert sorted(p.slug for p in uow.projects.list()) == ["p3", "p4"]


def test_an_amount_with_more_decimals_than_kept_is_refused(
    acme_store: Store[AcmeUnitOfWork],
) -> None:
    owner = org(acme_store)
    with acme_store.unit_of_work() as uow:
        with pytest.raises(InvalidInputError, match="6 decimal places"):
            uow.projects.add(Project(org_id=owner, name="p", slug="p", budget=Decimal("0.1234567")))
        with pytest.raises(InvalidInputError, match="6 decimal places"):
            uow.projects.add_many(
                [Project(org_id=owner, name="q", slug="q", budget=Decimal("1.0000001"))]
            )
        kept = uow.projects.add(
            Project(org_id=owner, name="r", slug="r", budget=Decimal("0.1234560000"))
        )
        assert kept.budget == Decimal("0.123456")
        assert uow.projects.count() == 1


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("contains", "ALP", []),
        ("contains", "lph", ["alpha", "Alphabet"]),
        ("startswith", "al", ["alpha"]),
        ("startswith", "Al", ["Alphabet"]),
        ("icontains", "ALP", ["alpha", "Alphabet"]),
        ("icontains", "ÉCO", ["école", "ÉCOLE 2"]),
        ("istartswith", "ÉC", ["école", "ÉCOLE 2"]),
        ("istartswith", "al", ["alpha", "Alphabet"]),
        ("icontains", "100%", ["100% real"]),
        ("icontains", "_", []),
    ],
)
def test_text_operators_match_alike_on_every_backend(
    acme_store: Store[AcmeUnitOfWork], op: str, value: str, expected: list[str]
) -> None:
    labels = ["alpha", "Alphabet", "école", "ÉCOLE 2", "100% real"]
    with acme_store.unit_of_work() as uow:
        uow.tags.add_many([Tag(name=f"t{i}", label=label) for i, label in enumerate(labels)])
    with acme_store.unit_of_work() as uow:
        found = sorted(t.label for t in uow.tags.list(where("label", op, value)))
    assert found == sorted(expected)
