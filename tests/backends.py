"""Throwaway databases on the real servers, for the test suite.

Each test run creates its own database on PostgreSQL and MariaDB/MySQL (named with the pid
and a random suffix) and drops it at the end. Which backends run is chosen with
``FLOWSTORE_TEST_BACKENDS`` (comma-separated: sqlite, sqlite_file, postgresql, mysql;
default: all). A server that cannot be reached skips its tests with the reason, except under
``CI=true``, where it fails the run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import URL, create_engine, make_url, text

from flowstore.schema import table_options

ALL_BACKENDS = ("sqlite", "sqlite_file", "postgresql", "mysql")
SERVER_BACKENDS = ("postgresql", "mysql")

ADMIN_URLS = {
    "postgresql": os.environ.get(
        "FLOWSTORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("FLOWSTORE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def selected_backends() -> list[str]:
    raw = os.environ.get("FLOWSTORE_TEST_BACKENDS", ",".join(ALL_BACKENDS))
    chosen = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = set(chosen) - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(f"FLOWSTORE_TEST_BACKENDS: unknown backends {sorted(unknown)}")
    return chosen


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(check: Callable[[], None], unavailable: type[Exception]) -> None:
    """In a test: run ``check``; when it raises ``unavailable``, skip with its message, or
    under ``CI=true`` fail (what a run needs must be there)."""
    import pytest

    try:
        check()
    except unavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))


@dataclass
class ThrowawayDatabase:
    """One database created on a server for this run; ``drop()`` removes it."""

    backend: str
    admin_url: URL
    url: URL

    def drop(self) -> None:
        name = self.url.database
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if self.backend == "postgresql":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        finally:
            engine.dispose()


def create_database(backend: str, tag: str = "t") -> ThrowawayDatabase:
    """Create an empty database on ``backend``'s server; raises if the server is down."""
    admin = make_url(ADMIN_URLS[backend])
    name = f"flowstore_{tag}_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(
        admin,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                collation = table_options(conn.dialect)["mysql_collate"]
                conn.execute(
                    text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {collation}")
                )
    finally:
        engine.dispose()
    return ThrowawayDatabase(backend, admin, admin.set(database=name))
