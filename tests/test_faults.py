"""Faults: the server kills connections, the database is read-only, the disk is full.

* A connection killed by the server (``pg_terminate_backend``, MariaDB ``KILL``) in the middle
  of a unit of work fails it with ``ConnectionFailedError`` and nothing of it is written; the
  next unit of work gets a fresh connection and succeeds. A pooled connection killed while
  idle is noticed by ``pool_pre_ping`` before it is used.
* A read-only database (a SQLite file opened ``mode=ro``, a PostgreSQL or MariaDB session in
  read-only mode) answers reads and refuses writes with a clear flowstore error.
* A full disk (SQLite with a small ``max_page_count``) is a clear flowstore error, the unit of
  work is rolled back, and what was committed before is intact.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, make_url, text

from flowstore import Settings, Store
from flowstore.engine import engine_options
from flowstore.errors import ConnectionFailedError, FlowstoreError
from flowstore.models import Organization
from flowstore.uow import UnitOfWork
from tests.backends import ADMIN_URLS, SERVER_BACKENDS


def _slug(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _count(store: Store, slug: str) -> int:
    with store.unit_of_work() as uow:
        return uow.organizations.count(slug=slug)


# -- the server kills connections ------------------------------------------------------------


@pytest.fixture
def server(backend: str, server_stores: dict[str, Store]) -> Iterator[tuple[str, Store, Engine]]:
    """The backend name, a store with its own pool on the suite's database, and an admin
    engine on the same server that can kill its connections."""
    if backend not in SERVER_BACKENDS:
        pytest.skip("only a server can kill a connection")
    shared = server_stores[backend]
    own = Store(shared.url)
    admin = create_engine(make_url(ADMIN_URLS[backend]), isolation_level="AUTOCOMMIT")
    try:
        yield backend, own, admin
    finally:
        own.close()
        admin.dispose()


def _connection_id(uow: UnitOfWork, backend: str) -> int:
    query = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    return int(uow.session.execute(text(query)).scalar_one())


def _kill(admin: Engine, backend: str, connection_id: int) -> None:
    """Kill a session from another connection, and wait until the server has dropped it."""
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": connection_id})
            alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        else:
            conn.execute(text(f"KILL {int(connection_id)}"))
            alive = text("SELECT count(*) FROM information_schema.processlist WHERE id = :pid")
        for _ in range(500):  # the kill is asynchronous: poll until the session is gone
            if not conn.execute(alive, {"pid": connection_id}).scalar_one():
                return
            conn.execute(
                text("SELECT pg_sleep(0.01)" if backend == "postgresql" else "DO SLEEP(0.01)")
            )
    raise AssertionError(f"connection {connection_id} was not killed")


def test_a_connection_killed_mid_unit_of_work_fails_it_and_writes_nothing(
    server: tuple[str, Store, Engine],
) -> None:
    backend, store, admin = server
    first, second = _slug("killed-a"), _slug("killed-b")
    with pytest.raises(ConnectionFailedError), store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="written before the kill", slug=first))
        _kill(admin, backend, _connection_id(uow, backend))
        uow.organizations.add(Organization(name="after the kill", slug=second))
    # nothing of the failed unit of work is there, and the next one works
    assert _count(store, first) == 0
    assert _count(store, second) == 0
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="next", slug=second))
    assert _count(store, second) == 1


def test_a_connection_killed_at_commit_fails_the_commit(server: tuple[str, Store, Engine]) -> None:
    backend, store, admin = server
    slug = _slug("commit")
    with pytest.raises(ConnectionFailedError), store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="never committed", slug=slug))
        _kill(admin, backend, _connection_id(uow, backend))
    assert _count(store, slug) == 0


def test_an_idle_pooled_connection_killed_is_replaced_by_pre_ping(
    server: tuple[str, Store, Engine],
) -> None:
    backend, store, admin = server
    with store.unit_of_work() as uow:
        pooled = _connection_id(uow, backend)
    _kill(admin, backend, pooled)  # the connection now sits dead in the pool
    slug = _slug("after-idle-kill")
    with store.unit_of_work() as uow:
        assert _connection_id(uow, backend) != pooled
        uow.organizations.add(Organization(name="fine", slug=slug))
    assert _count(store, slug) == 1


def test_without_pre_ping_one_unit_of_work_fails_then_the_pool_recovers(
    server: tuple[str, Store, Engine],
) -> None:
    backend, store, admin = server
    with Store(store.url, pool_pre_ping=False) as unpinged:
        with unpinged.unit_of_work() as uow:
            pooled = _connection_id(uow, backend)
        _kill(admin, backend, pooled)
        with pytest.raises(ConnectionFailedError), unpinged.unit_of_work() as uow:
            uow.organizations.count()
        with unpinged.unit_of_work() as uow:
            assert _connection_id(uow, backend) != pooled


# -- a read-only database --------------------------------------------------------------------


@pytest.fixture
def read_only(backend: str, server_stores: dict[str, Store], tmp_path: Path) -> Iterator[Store]:
    """A store whose database refuses writes, with one organization in it."""
    slug = _slug("existing")
    if backend in SERVER_BACKENDS:
        writable = server_stores[backend]
        with writable.unit_of_work() as uow:
            uow.organizations.add(Organization(name="existing", slug=slug))
        connect_args: dict[str, Any] = dict(
            engine_options(writable.url, Settings())["connect_args"]
        )
        if backend == "postgresql":
            connect_args["options"] = "-c default_transaction_read_only=on"
            store = Store(writable.url, connect_args=connect_args)
        else:
            store = Store(writable.url, connect_args=connect_args)

            @event.listens_for(store.engine, "connect")
            def _read_only(dbapi_connection: Any, record: Any) -> None:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SET SESSION TRANSACTION READ ONLY")

    else:
        path = tmp_path / "read-only.sqlite3"
        with Store(f"sqlite:///{path}") as writable:
            writable.upgrade()
            with writable.unit_of_work() as uow:
                uow.organizations.add(Organization(name="existing", slug=slug))
        store = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    with store:
        yield store


def test_a_read_only_database_reads_and_refuses_writes_clearly(read_only: Store) -> None:
    with read_only.unit_of_work() as uow:
        assert uow.organizations.count() >= 1
    with (
        pytest.raises(FlowstoreError, match="read-only") as refused,
        read_only.unit_of_work() as uow,
    ):
        uow.organizations.add(Organization(name="new", slug=_slug("refused")))
    assert not isinstance(refused.value, ConnectionFailedError)
    with read_only.unit_of_work() as uow:  # still usable for reads
        assert uow.organizations.count() >= 1


# -- a full disk -----------------------------------------------------------------------------


def test_a_full_disk_is_a_clear_error_and_loses_nothing_committed(
    backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite_file":
        pytest.skip("simulated with SQLite's max_page_count on a file")
    path = tmp_path / "full.sqlite3"
    with Store(f"sqlite:///{path}") as setup:
        setup.upgrade()
        with setup.unit_of_work() as uow:
            uow.organizations.add(Organization(name="kept", slug="kept"))
        with setup.engine.connect() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    store = Store(f"sqlite:///{path}")

    @event.listens_for(store.engine, "connect")
    def _small_disk(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

    with store:
        with pytest.raises(FlowstoreError, match="out of space"), store.unit_of_work() as uow:
            uow.organizations.add_many(
                Organization(name="x" * 250, slug=f"bulk-{i}") for i in range(400)
            )
        with pytest.raises(FlowstoreError, match="out of space"), store.unit_of_work() as uow:
            for i in range(400):  # one flush at a time, each in its own SAVEPOINT
                uow.organizations.add(Organization(name="y" * 250, slug=f"one-{i}"))
        with store.unit_of_work() as uow:
            assert [o.slug for o in uow.organizations.list()] == ["kept"]
            uow.organizations.add(Organization(name="small", slug="small"))
        with store.unit_of_work() as uow:
            assert uow.organizations.count() == 2
