"""Read replicas against a real PostgreSQL streaming replica (tests/pg_replication.py): every
read-only unit of work sees the commits its store made before it began; a replica whose replay
is paused, or that is stopped, is left out and the primary serves; it serves again once back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from flowstore import ReadOnlyError, Settings, Store
from flowstore.aio import AsyncStore
from flowstore.models import Organization
from tests.backends import selected_backends
from tests.pg_replication import ReplicationPair, require_replication

pytestmark = pytest.mark.skipif(
    "postgresql" not in selected_backends(), reason="PostgreSQL is not among the backends"
)

#: Quick to give up on a paused replica and to try it again, so the tests run in seconds.
SETTINGS = Settings(replica_max_lag=0.3, replica_retry_after=0.5)


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicationPair]:
    require_replication()
    with ReplicationPair() as built:
        with Store(built.primary_url) as store:
            store.upgrade()
        built.wait_for_replay()
        yield built


@pytest.fixture
def store(pair: ReplicationPair) -> Iterator[Store]:
    primary = pair.primary_url.render_as_string(hide_password=False)
    replica = pair.replica_url.render_as_string(hide_password=False)
    with Store(primary, settings=SETTINGS, replica_urls=[replica]) as made:
        yield made
        with made.unit_of_work() as uow:
            uow.session.execute(text("DELETE FROM organizations"))


def _served_by_replica(store: Store, uow: object) -> bool:
    assert store.replicas is not None
    return uow.session.get_bind() is store.replicas.replicas[0].bind  # type: ignore[attr-defined]


def test_every_read_sees_the_commit_before_it_from_the_replica(store: Store) -> None:
    for n in range(50):
        with store.unit_of_work() as uow:
            org = uow.organizations.add(Organization(name=f"O{n}", slug=f"o{n}"))
        with store.unit_of_work(read_only=True) as uow:
            assert _served_by_replica(store, uow)
            assert uow.organizations.get(org.id).name == f"O{n}"
            assert uow.session.scalar(text("SELECT pg_is_in_recovery()")) is True


def test_a_write_on_the_replica_is_refused_before_it_is_sent(store: Store) -> None:
    with pytest.raises(ReadOnlyError), store.unit_of_work(read_only=True) as uow:
        assert _served_by_replica(store, uow)
        uow.organizations.add(Organization(name="No", slug="no"))
    with pytest.raises(ReadOnlyError), store.unit_of_work(read_only=True) as uow:
        uow.session.execute(text("SELECT 1; DELETE FROM organizations"))


def test_a_paused_replica_is_left_out_then_serves_again(
    pair: ReplicationPair, store: Store
) -> None:
    assert store.replicas is not None
    replica = store.replicas.replicas[0]
    pair.pause_replay()
    try:
        with store.unit_of_work() as uow:
            org = uow.organizations.add(Organization(name="Late", slug="late"))
        started = time.monotonic()
        with store.unit_of_work(read_only=True) as uow:  # the replica cannot have it
            assert not _served_by_replica(store, uow)
            assert uow.organizations.get(org.id).name == "Late"
        assert time.monotonic() - started < SETTINGS.replica_max_lag + 0.5
        assert replica.resting_until > time.monotonic()
        with store.unit_of_work(read_only=True) as uow:  # resting: the primary, at once
            assert not _served_by_replica(store, uow)
    finally:
        pair.resume_replay()
    time.sleep(SETTINGS.replica_retry_after)
    with store.unit_of_work(read_only=True) as uow:
        assert _served_by_replica(store, uow)
        assert uow.organizations.get(org.id).name == "Late"


def test_a_stopped_replica_is_left_out_then_serves_again(
    pair: ReplicationPair, store: Store
) -> None:
    with store.unit_of_work(read_only=True) as uow:
        assert _served_by_replica(store, uow)
    pair.stop_replica()
    try:
        with store.unit_of_work() as uow:
            uow.organizations.add(Organization(name="During", slug="during"))
        for _ in range(3):
            with store.unit_of_work(read_only=True) as uow:
                assert not _served_by_replica(store, uow)
                assert uow.organizations.get_by_slug("during") is not None
    finally:
        pair.start_replica()
    time.sleep(SETTINGS.replica_retry_after)
    with store.unit_of_work(read_only=True) as uow:
        assert _served_by_replica(store, uow)
        assert uow.organizations.get_by_slug("during") is not None


def test_the_async_face_reads_its_writes_from_the_replica(pair: ReplicationPair) -> None:
    primary = pair.primary_url.render_as_string(hide_password=False)
    replica = pair.replica_url.render_as_string(hide_password=False)

    async def main() -> None:
        async with AsyncStore(primary, settings=SETTINGS, replica_urls=[replica]) as store:
            assert store.replicas is not None
            bind = store.replicas.replicas[0].bind
            for n in range(20):
                async with store.unit_of_work() as uow:
                    org = await uow.organizations.add(Organization(name=f"A{n}", slug=f"a{n}"))
                async with store.unit_of_work(read_only=True) as uow:
                    assert uow.session.bind is bind
                    assert (await uow.organizations.get(org.id)).name == f"A{n}"
            async with store.unit_of_work() as uow:
                await uow.run(lambda s: s.execute(text("DELETE FROM organizations")))

    asyncio.run(main())
