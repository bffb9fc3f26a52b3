"""Fixtures shared by the suite: a ``store`` on every selected backend.

``store`` is parametrized over the backends in ``FLOWSTORE_TEST_BACKENDS``: ``sqlite`` (a new
in-memory store per test), ``sqlite_file`` (a migrated file per test), and ``postgresql`` /
``mysql`` (one migrated throwaway database per run, emptied before each test).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from flowstore import Store
from flowstore.models import Base
from flowstore.writes import send
from tests.backends import (
    ThrowawayDatabase,
    create_database,
    in_ci,
    selected_backends,
)
from tests.service_app import SERVICE_TABLES, AcmeUnitOfWork

BACKENDS = selected_backends()


_UNREACHABLE: dict[str, str] = {}  # backend -> why, so later tests skip at once


def server_database(request: pytest.FixtureRequest, backend: str, tag: str) -> ThrowawayDatabase:
    """A throwaway database on ``backend`` (dropped when the test session ends), or skip/fail."""
    try:
        if backend in _UNREACHABLE:
            raise ConnectionError(_UNREACHABLE[backend])
        database = create_database(backend, tag)
    except Exception as exc:  # the server is down or refuses us
        reason = _UNREACHABLE.setdefault(
            backend,
            f"{backend} server unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}",
        )
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    request.session.config.add_cleanup(database.drop)
    return database


class _ServerStores(dict[str, Store]):
    """backend -> a migrated store on that server's throwaway database, made on first use."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        super().__init__()
        self._request = request

    def __missing__(self, backend: str) -> Store:
        store = Store(server_database(self._request, backend, "suite").url)
        store.upgrade()
        self[backend] = store
        return store


@pytest.fixture(scope="session")
def server_stores(request: pytest.FixtureRequest) -> Iterator[dict[str, Store]]:
    """Migrated stores on the servers, one per backend, for the whole run."""
    stores = _ServerStores(request)
    yield stores
    for store in stores.values():
        store.close()


def empty_tables(store: Store) -> None:
    """Delete every row (children first) of the tables that have any; audit rows are
    truncated past their append-only triggers. Probing first keeps this cheap: most tests
    touch a few tables, and TRUNCATE of every table costs PostgreSQL ~0.2 s a test."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with store.engine.begin() as conn:
        existing = set(store.engine.dialect.get_table_names(conn))
        present = [t for t in tables if t in existing]
        if not present:
            return
        probe = " UNION ALL ".join(
            f"SELECT '{t}' FROM (SELECT 1 AS x FROM {t} LIMIT 1) AS probe_{i}"
            for i, t in enumerate(present)
        )
        used = {row[0] for row in conn.execute(text(probe))}
        for table in (t for t in present if t in used):
            if table == "audit_logs" and store.dialect == "postgresql":
                conn.execute(text("TRUNCATE audit_logs"))
            elif table == "audit_logs" and store.dialect in {"mysql", "mariadb"}:
                conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                conn.execute(text("TRUNCATE TABLE audit_logs"))
                conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
            else:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a ``store`` test runs on."""
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per run; ``store`` hands out copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "flowstore.sqlite3"
    with Store(f"sqlite:///{path}") as template:
        template.upgrade()
    return path


@pytest.fixture
def store(
    backend: str, server_stores: dict[str, Store], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Store]:
    """A ready, empty store on ``backend``."""
    if backend == "sqlite":
        with Store("sqlite://") as memory:
            yield memory
    elif backend == "sqlite_file":
        path = tmp_path / "flowstore.sqlite3"
        template = request.getfixturevalue("migrated_sqlite_file")
        shutil.copyfile(template, path)  # far faster than migrating each time
        with Store(f"sqlite:///{path}") as file_store:
            yield file_store
    else:
        shared = server_stores[backend]
        empty_tables(shared)
        yield shared


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The COPY statements ``add_many``'s bulk path sends during the test (it still sends them)."""
    sent: list[str] = []
    copy_rows = send.copy_rows

    def spy(connection: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        sent.append(statement)
        copy_rows(connection, statement, rows)

    monkeypatch.setattr(send, "copy_rows", spy)
    return sent


@pytest.fixture
def acme_store(store: Store) -> Iterator[Store[AcmeUnitOfWork]]:
    """A store of the service in ``tests.service_app`` on the same database as ``store``: its
    unit-of-work class, and its tables created beside flowstore's (emptied with them)."""
    service: Store[AcmeUnitOfWork] = (
        Store("sqlite://", unit_of_work_class=AcmeUnitOfWork)
        if store.is_memory
        else Store(store.url, unit_of_work_class=AcmeUnitOfWork)
    )
    tables = [Base.metadata.tables[name] for name in SERVICE_TABLES]
    with service.engine.begin() as conn:
        Base.metadata.create_all(conn, tables=tables, checkfirst=True)
    try:
        yield service
    finally:
        service.close()
