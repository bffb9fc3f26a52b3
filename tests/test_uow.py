"""UnitOfWork: commit, rollback, savepoints and error mapping, on every backend."""

from __future__ import annotations

import contextlib

import pytest

from flowstore import (
    AlreadyExistsError,
    FlowstoreError,
    InvalidInputError,
    Store,
    TransactionFailedError,
)
from flowstore.models import Deployment, Organization
from tests import builders as b


def _names(store: Store) -> set[str]:
    with store.unit_of_work() as uow:
        return {d.name for d in uow.deployments.list()}


def test_commit_on_clean_exit(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="kept", version="1"))
    assert _names(store) == {"kept"}


def test_rollback_on_exception_reraises_it(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="lost", version="1"))
        raise Boom
    assert _names(store) == set()


def test_explicit_commit_and_rollback(store: Store) -> None:
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="committed", version="1"))
        uow.commit()
        uow.deployments.add(Deployment(name="discarded", version="1"))
        uow.rollback()
        uow.deployments.add(Deployment(name="also-lost", version="1"))
        raise RuntimeError
    assert _names(store) == {"committed"}


def test_savepoint(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="outer", version="1"))
        with pytest.raises(ValueError), uow.savepoint():
            uow.deployments.add(Deployment(name="inner-failed", version="1"))
            raise ValueError
        with uow.savepoint():
            uow.deployments.add(Deployment(name="inner-kept", version="1"))
    assert _names(store) == {"outer", "inner-kept"}


def test_savepoint_translates_database_errors(store: Store) -> None:
    with store.unit_of_work() as uow:
        b.org(uow, slug="taken")
        with pytest.raises(AlreadyExistsError), uow.savepoint():
            uow.session.add(Organization(name="dup", slug="taken"))
            uow.session.flush()
        b.org(uow, slug="free")
    with store.unit_of_work() as uow:
        assert {o.slug for o in uow.organizations.list()} == {"taken", "free"}


def test_failed_batch_writes_nothing(store: Store) -> None:
    with store.unit_of_work() as uow:
        b.org(uow, slug="exists")
    with pytest.raises(AlreadyExistsError), store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="a", slug="new-1"))
        uow.organizations.add_many(
            [Organization(name="b", slug="new-2"), Organization(name="c", slug="exists")]
        )
        uow.commit()
    with store.unit_of_work() as uow:
        assert {o.slug for o in uow.organizations.list()} == {"exists"}


def test_raw_session_errors_leave_as_flowstore_errors(store: Store) -> None:
    with pytest.raises(AlreadyExistsError), store.unit_of_work() as uow:
        b.org(uow, slug="same")
        uow.session.add(Organization(name="x", slug="same"))
        uow.session.flush()
    with store.unit_of_work() as uow:
        assert uow.organizations.count() == 0


def test_commit_after_a_swallowed_flush_error_is_refused(store: Store) -> None:
    with pytest.raises(FlowstoreError), store.unit_of_work() as uow:
        b.org(uow, slug="one")
        uow.session.add(Organization(name="x", slug="one"))
        # the caller ignores the failure; the commit must not pretend it worked
        with contextlib.suppress(Exception):
            uow.session.flush()
    with store.unit_of_work() as uow:
        assert uow.organizations.count() == 0


def test_repositories_are_lazy_and_shared_within_a_unit_of_work(store: Store) -> None:
    uow = store.unit_of_work()
    with pytest.raises(InvalidInputError):
        _ = uow.session
    with uow:
        assert uow.deployments is uow.deployments
        assert uow.deployments.session is uow.session
        first = uow.deployments
    with uow:  # a unit of work can be used again, with a fresh session
        assert uow.deployments is not first
    with uow, pytest.raises(InvalidInputError):
        uow.__enter__()


def test_pending_rollback_maps_to_transaction_failed() -> None:
    from sqlalchemy.exc import PendingRollbackError

    from flowstore.errors import translate

    assert isinstance(translate(PendingRollbackError("x")), TransactionFailedError)
