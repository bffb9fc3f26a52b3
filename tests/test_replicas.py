"""Read-only units of work and read replicas without a replication pair: a replica URL that is
the primary itself (it is not in recovery, so it counts as caught up), one that does not answer,
and the writes a read-only unit of work refuses, on every backend and on the async face.
A real streaming replica is tests/test_replication.py's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from flowstore import InvalidInputError, ReadOnlyError, Settings, Store
from flowstore.aio import AsyncStore
from flowstore.models import Job, Organization
from flowstore.testing import isolated_unit_of_work
from tests.test_cli import closed_port


def _url(store: Store) -> str:
    if store.is_memory:
        pytest.skip("the in-memory database has no replicas")
    return store.url.render_as_string(hide_password=False)


def _silent(store: Store) -> str:
    """A replica URL of the store's backend that nothing answers on."""
    if store.dialect == "sqlite":
        return "sqlite:////nonexistent-directory/replica.sqlite3"
    url = store.url.set(host="127.0.0.1", port=closed_port())
    return url.render_as_string(hide_password=False)


def _orgs(store: Store) -> int:
    with store.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Organization)) or 0)


WRITES: list[tuple[str, Any]] = [
    ("add", lambda uow: uow.organizations.add(Organization(name="W", slug="w-add"))),
    (
        "add_many",
        lambda uow: uow.organizations.add_many(
            [Organization(name="W", slug=f"w-many-{i}") for i in range(3)]
        ),
    ),
    ("session.add", lambda uow: uow.session.add(Organization(name="W", slug="w-session"))),
    ("update", lambda uow: uow.organizations.update_many({"name": "renamed"})),
    ("delete", lambda uow: uow.organizations.delete_many()),
    ("core", lambda uow: uow.session.execute(update(Organization).values(name="core"))),
    ("text", lambda uow: uow.session.execute(text("DELETE FROM organizations"))),
    ("queue", lambda uow: uow.queue("emails").enqueue({"to": "x"})),
]


@pytest.mark.parametrize(("kind", "write"), WRITES, ids=[kind for kind, _ in WRITES])
def test_a_read_only_unit_of_work_refuses_every_write_and_writes_nothing(
    store: Store, kind: str, write: Any
) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Kept", slug="kept"))
    with pytest.raises(ReadOnlyError, match="read-only"), store.unit_of_work(read_only=True) as uow:
        assert uow.organizations.get(org.id).name == "Kept"  # reads work
        write(uow)
    with store.unit_of_work() as uow:
        assert [o.name for o in uow.organizations.list()] == ["Kept"]
        assert uow.session.scalar(select(func.count()).select_from(Job)) == 0
    assert _orgs(store) == 1


def test_pending_changes_at_the_end_are_refused_not_dropped(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Before", slug="before"))
    with pytest.raises(ReadOnlyError), store.unit_of_work(read_only=True) as uow:
        uow.organizations.get(org.id).name = "After"  # never flushed inside the block
    with store.unit_of_work() as uow:
        assert uow.organizations.get(org.id).name == "Before"


def test_a_replica_that_is_the_primary_serves_reads_and_sees_every_commit(store: Store) -> None:
    url = _url(store)
    with Store(url, replica_urls=[url]) as replicated:
        assert replicated.replicas is not None
        for n in range(5):  # each read begins after a commit: it must see it
            with replicated.unit_of_work() as uow:
                uow.organizations.add(Organization(name=f"O{n}", slug=f"o{n}"))
            with replicated.unit_of_work(read_only=True) as uow:
                replica = replicated.replicas.replicas[0].bind
                # PostgreSQL: the replica serves (it has replayed the commit); elsewhere no
                # replay position can be read, so after a write the primary serves
                assert (uow.session.get_bind() is replica) is (store.dialect == "postgresql")
                assert uow.organizations.count() == n + 1


def test_a_silent_replica_is_skipped_and_the_primary_serves(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    url = _url(store)
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="A", slug="a"))
    settings = Settings(replica_retry_after=60, connect_timeout=2)
    with Store(url, settings=settings, replica_urls=[_silent(store)]) as replicated:
        assert replicated.replicas is not None
        replica = replicated.replicas.replicas[0]
        with (
            caplog.at_level(logging.WARNING, "flowstore.replicas"),
            replicated.unit_of_work(read_only=True) as uow,
        ):
            assert uow.organizations.count() == 1
        assert "skipped for 60 s" in caplog.text
        resting = replica.resting_until
        assert resting > 0
        with replicated.unit_of_work(read_only=True) as uow:  # not tried again meanwhile
            assert uow.organizations.count() == 1
            with pytest.raises(ReadOnlyError):
                uow.organizations.add(Organization(name="B", slug="b"))
        assert replica.resting_until == resting


def test_replicas_take_turns(store: Store) -> None:
    url = _url(store)
    with Store(url, replica_urls=[url, url]) as replicated:
        assert replicated.replicas is not None
        binds = []
        for _ in range(4):
            with replicated.unit_of_work(read_only=True) as uow:
                binds.append(uow.session.get_bind())
        first, second = (r.bind for r in replicated.replicas.replicas)
        assert binds.count(first) == 2 and binds.count(second) == 2


def test_replica_urls_come_from_the_environment_and_are_checked(
    monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    url = _url(store)
    monkeypatch.setenv("FLOWSTORE_REPLICA_URLS", f" {url} ,{url},")
    assert Settings().replica_urls == [url, url]
    with Store(url) as configured:
        assert configured.replicas is not None and len(configured.replicas.replicas) == 2
    with pytest.raises(InvalidInputError, match="list of URLs"):
        Store(url, replica_urls=url)
    with pytest.raises(InvalidInputError, match="in-memory database has no replicas"):
        Store("sqlite://", replica_urls=[url])


def test_the_test_kit_reads_its_own_writes_read_only(store: Store) -> None:
    with isolated_unit_of_work(store) as outer:
        outer.organizations.add(Organization(name="Test", slug="test"))
        with store.unit_of_work(read_only=True) as uow:
            assert uow.organizations.get_by_slug("test") is not None
            with pytest.raises(ReadOnlyError):
                uow.organizations.add(Organization(name="No", slug="no"))
    assert _orgs(store) == 0


def test_the_async_face_reads_from_replicas_and_refuses_writes(store: Store) -> None:
    if store.dialect == "mysql":
        pytest.skip("the async face runs on SQLite and PostgreSQL")
    url = _url(store)

    async def main() -> None:
        async with AsyncStore(url, replica_urls=[url, _silent(store)]) as replicated:
            assert replicated.replicas is not None
            for n in range(3):
                async with replicated.unit_of_work() as uow:
                    await uow.organizations.add(Organization(name=f"A{n}", slug=f"a{n}"))
                async with replicated.unit_of_work(read_only=True) as uow:
                    assert await uow.organizations.count() == n + 1
            with pytest.raises(ReadOnlyError):
                async with replicated.unit_of_work(read_only=True) as uow:
                    await uow.organizations.add(Organization(name="No", slug="no"))
            with pytest.raises(ReadOnlyError):
                async with replicated.unit_of_work(read_only=True) as uow:
                    found = await uow.organizations.get_by_slug("a0")
                    assert found is not None
                    found.name = "changed"
            silent = replicated.replicas.replicas[1]
            if store.dialect == "postgresql":
                assert silent.resting_until > 0  # tried once, then resting
            else:  # no replay position to wait for: after a write, the primary serves
                assert silent.resting_until == 0

    asyncio.run(main())
    assert _orgs(store) == 3
