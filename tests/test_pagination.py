"""Keyset pagination: ``list(after=)``, ``page()`` and audit ``query(after=)`` / ``query_page()``.

Pages must never overlap or skip a row, also when many rows share one ``created_at`` (ties
are broken by id), with filters, and while rows are being added. Every test runs on every
backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from flowstore import Store
from flowstore.errors import InvalidInputError
from flowstore.models import AuditLog, Deployment, DeploymentStatus, Organization
from flowstore.repositories.pagination import Page

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def add_deployments(store: Store, n: int, distinct_times: int) -> list[uuid.UUID]:
    """``n`` deployments over only ``distinct_times`` creation times (many ties)."""
    items = [
        Deployment(
            name=f"svc-{i}",
            version="1",
            status=DeploymentStatus.RUNNING if i % 3 else DeploymentStatus.FAILED,
            created_at=T0 + timedelta(seconds=i % distinct_times),
        )
        for i in range(n)
    ]
    with store.unit_of_work() as uow:
        uow.deployments.add_many(items)
    return [item.id for item in items]


def walk(fetch: Callable[[str | None], Page[Any]]) -> Iterator[list[Any]]:
    """Every page, following next_cursor until it is None."""
    cursor: str | None = None
    for _ in range(1000):
        page = fetch(cursor)
        yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


def test_pages_cover_the_list_exactly_with_equal_created_at(store: Store) -> None:
    add_deployments(store, 47, distinct_times=4)
    with store.unit_of_work() as uow:
        everything = [d.id for d in uow.deployments.list()]
        pages = [
            [d.id for d in items]
            for items in walk(lambda after: uow.deployments.page(limit=5, after=after))
        ]
    assert [len(p) for p in pages] == [5] * 9 + [2]
    assert [i for p in pages for i in p] == everything  # same order, nothing twice or lost


def test_pages_with_a_filter_and_a_page_size_that_divides_exactly(store: Store) -> None:
    add_deployments(store, 30, distinct_times=2)
    with store.unit_of_work() as uow:
        failed = [d.id for d in uow.deployments.list(status=DeploymentStatus.FAILED)]
        assert len(failed) == 10
        pages = list(
            walk(
                lambda after: uow.deployments.page(
                    limit=5, after=after, status=DeploymentStatus.FAILED
                )
            )
        )
    assert [len(p) for p in pages] == [5, 5]  # the second page knows it is the last
    assert [d.id for p in pages for d in p] == failed


def test_list_after_a_cursor_continues_just_after_that_entity(store: Store) -> None:
    add_deployments(store, 12, distinct_times=3)
    with store.unit_of_work() as uow:
        everything = uow.deployments.list()
        for k in (0, 4, 10, 11):
            cursor = uow.deployments.cursor_for(everything[k])
            rest = uow.deployments.list(after=cursor)
            assert [d.id for d in rest] == [d.id for d in everything[k + 1 :]]
        assert uow.deployments.list(after=cursor, limit=3) == []


def test_rows_added_meanwhile_show_up_on_later_pages(store: Store) -> None:
    add_deployments(store, 6, distinct_times=6)
    with store.unit_of_work() as uow:
        first = uow.deployments.page(limit=3)
        assert first.next_cursor is not None
    with store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="late", version="1", created_at=T0 + timedelta(1)))
    rest: list[str] = []
    cursor: str | None = first.next_cursor
    with store.unit_of_work() as uow:
        while cursor is not None:
            page = uow.deployments.page(limit=3, after=cursor)
            rest += [d.name for d in page.items]
            cursor = page.next_cursor
    assert len(rest) == 4 and rest[-1] == "late"


def test_one_statement_per_page_and_count(store: Store) -> None:
    add_deployments(store, 8, distinct_times=2)
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    with store.unit_of_work() as uow:
        uow.deployments.count()  # the transaction is open before counting statements
        event.listen(store.engine, "before_cursor_execute", record)
        try:
            page = uow.deployments.page(limit=3)
            uow.deployments.page(limit=3, after=page.next_cursor)
            uow.deployments.list(status=DeploymentStatus.FAILED, limit=2, offset=1)
            uow.deployments.count(status=DeploymentStatus.FAILED)
        finally:
            event.remove(store.engine, "before_cursor_execute", record)
    assert len(sent) == 4


def test_bad_cursors_and_combinations_are_refused(store: Store) -> None:
    add_deployments(store, 3, distinct_times=1)
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="o", slug="o"))
        cursor = uow.deployments.page(limit=1).next_cursor
        assert cursor is not None
        for bad in ("", "nonsense", "eyJhIjoxfQ", cursor[:-3], 42, "x" * 300):
            with pytest.raises(InvalidInputError):
                uow.deployments.list(after=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="belongs to"):
            uow.organizations.list(after=cursor)
        with pytest.raises(InvalidInputError):
            uow.deployments.list(after=cursor, order_by="name")
        with pytest.raises(InvalidInputError):
            uow.deployments.list(after=cursor, offset=2)
        with pytest.raises(InvalidInputError):
            uow.deployments.page(limit=0)
        with pytest.raises(InvalidInputError):
            uow.deployments.cursor_for(org)  # type: ignore[arg-type]


# -- the audit log: newest first ------------------------------------------------------------


def add_audit(store: Store, org: uuid.UUID, n: int, distinct_times: int) -> None:
    app = uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.audit_logs.add_many(
            AuditLog(
                org_id=org,
                action="update" if i % 2 else "create",
                resource_type="deployment",
                application_id=app if i % 4 == 0 else None,
                details={"i": i},
                created_at=T0 + timedelta(minutes=i % distinct_times),
            )
            for i in range(n)
        )


def test_audit_pages_newest_first_without_overlap(store: Store) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    add_audit(store, org, 33, distinct_times=5)
    add_audit(store, other, 7, distinct_times=2)
    with store.unit_of_work() as uow:
        everything = uow.audit_logs.query(org, limit=1000)
        assert len(everything) == 33
        pages = list(walk(lambda after: uow.audit_logs.query_page(org, limit=4, after=after)))
        assert [e.id for p in pages for e in p] == [e.id for e in everything]
        stamps = [e.created_at for p in pages for e in p]
        assert stamps == sorted(stamps, reverse=True)

        since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=4)
        narrowed = uow.audit_logs.query(org, action="update", since=since, until=until)
        pages = list(
            walk(
                lambda after: uow.audit_logs.query_page(
                    org, limit=2, after=after, action="update", since=since, until=until
                )
            )
        )
        assert [e.id for p in pages for e in p] == [e.id for e in narrowed]
        assert narrowed

        middle = everything[10]
        rest = uow.audit_logs.query(org, after=uow.audit_logs.cursor_for(middle), limit=1000)
        assert [e.id for e in rest] == [e.id for e in everything[11:]]
        with pytest.raises(InvalidInputError):
            uow.audit_logs.query(org, after=uow.audit_logs.cursor_for(middle), offset=1)
        with pytest.raises(InvalidInputError):
            uow.audit_logs.query_page(org, offset=3)
