"""``Repository.add`` pays for its guarantee (a refused row leaves the unit of work usable) only
where the backend needs it: one INSERT on SQLite and MariaDB (which roll back just a failed
statement), SAVEPOINT + INSERT + RELEASE on PostgreSQL (where a failed statement aborts the
transaction), through the fast path and through the ORM's flush (a tenant-scoped unit of work)
alike. A duplicate is ``AlreadyExistsError`` and the unit of work goes on with its earlier
work intact, scoped or not.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from flowstore import AlreadyExistsError, InvalidInputError, Store
from flowstore.models import Organization, Policy, PolicyType

EVENT_LOG = re.compile(r"\bevents\b|event_writer_lock|pg_advisory_xact_lock|^\s*PRAGMA", re.I)


@contextmanager
def statements(store: Store[Any]) -> Iterator[list[str]]:
    """The statements handed to the driver (a skipped one goes no further than flowstore's
    own ``do_execute`` listener, which comes first), but for the change-event log's own
    (its lock, its INSERT at commit, SQLite's look at whether the table is there)."""
    sent: list[str] = []

    def note(_cursor: Any, statement: str, *_: Any) -> bool:
        if not EVENT_LOG.search(statement):
            sent.append(statement.split()[0].upper())
        return False

    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        event.listen(store.engine, name, note)
    try:
        yield sent
    finally:
        for name in ("do_execute", "do_execute_no_params", "do_executemany"):
            event.remove(store.engine, name, note)


def test_add_sends_a_savepoint_only_where_the_backend_needs_one(store: Store[Any]) -> None:
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="First", slug="first"))  # sets things up
        with statements(store) as sent:
            uow.organizations.add(Organization(name="Acme", slug="acme"))
    if store.dialect == "postgresql":
        assert sent == ["SAVEPOINT", "INSERT", "RELEASE"]
    else:
        assert sent == ["INSERT"]


def test_a_scoped_add_sends_a_savepoint_only_where_the_backend_needs_one(
    store: Store[Any],
) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="First", slug="first"))
    with store.unit_of_work(org_id=org.id) as uow:
        uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.BUDGET))  # sets things up
        with statements(store) as sent:
            uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.RATE_LIMIT))
    if store.dialect == "postgresql":
        assert sent == ["SAVEPOINT", "INSERT", "RELEASE"]
    else:
        assert sent == ["INSERT"]


@pytest.mark.parametrize("scoped", [False, True])
def test_a_duplicate_leaves_the_unit_of_work_and_its_earlier_work_intact(
    store: Store[Any], scoped: bool
) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
    with store.unit_of_work(org_id=org.id if scoped else None) as uow:
        kept = uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.BUDGET, config={}))
        with pytest.raises(AlreadyExistsError):
            uow.policies.add(Policy(id=kept.id, org_id=org.id, policy_type=PolicyType.BUDGET))
        if not scoped:
            with pytest.raises(AlreadyExistsError):
                uow.organizations.add(Organization(name="Again", slug="acme"))
        later = uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.RATE_LIMIT))
    with store.unit_of_work() as uow:
        assert {p.id for p in uow.policies.list()} == {kept.id, later.id}


def test_a_broken_reference_is_invalid_input_and_the_work_goes_on(store: Store[Any]) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
    with store.unit_of_work() as uow:
        uow.organizations.count()
        with pytest.raises(InvalidInputError, match="constraint"):
            uow.policies.add(Policy(org_id=uuid.uuid4(), policy_type=PolicyType.BUDGET))
        uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.BUDGET))
    with store.unit_of_work() as uow:
        assert uow.organizations.count() == 1 and uow.policies.count() == 1


def test_the_fast_path_writes_what_the_flush_writes(store: Store[Any]) -> None:
    with statements(store) as sent, store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
        org.name = "Acme Corp"  # persistent: an ordinary update follows
    assert sent.count("INSERT") == 1 and sent.count("UPDATE") == 1
    with store.unit_of_work() as uow:
        stored = uow.organizations.get(org.id)
        assert (stored.name, stored.lock_version) == ("Acme Corp", 2)
