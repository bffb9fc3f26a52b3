"""Store: zero set-up default, settings, URLs, health checks, threads, SQLite pragmas."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from flowstore import (
    ConnectionFailedError,
    InvalidInputError,
    Settings,
    Store,
)
from flowstore.engine import normalize_url
from flowstore.models import Deployment, DeploymentStatus, Template
from flowstore.schema import head_revision


def test_default_store_is_in_memory_and_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWSTORE_DATABASE_URL", raising=False)
    with Store() as store:
        assert store.is_memory and store.dialect == "sqlite"
        assert store.current_revision() == head_revision()
        with store.unit_of_work() as uow:
            uow.deployments.add(Deployment(name="a", version="1"))
        with store.unit_of_work() as uow:  # the same database for every unit of work
            assert uow.deployments.count() == 1
        with store.session_factory() as session:  # plain sessions see it too
            assert session.scalar(text("SELECT count(*) FROM deployments")) == 1
    with Store() as other, other.unit_of_work() as uow:  # each store has its own database
        assert uow.deployments.count() == 0


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    monkeypatch.setenv("FLOWSTORE_DATABASE_URL", url)
    monkeypatch.setenv("FLOWSTORE_POOL_SIZE", "3")
    monkeypatch.setenv("FLOWSTORE_ECHO", "false")
    settings = Settings()
    assert settings.database_url == url and settings.pool_size == 3
    with Store.from_settings() as store:
        assert str(store.url) == url
        assert not store.is_memory
        assert store.current_revision() is None  # a file database is migrated explicitly
        store.upgrade()
        assert store.current_revision() == head_revision()
        assert store.engine.pool.size() == 3  # type: ignore[attr-defined]


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("FLOWSTORE_POOL_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_passwords_never_shown() -> None:
    url = "postgresql://admin:hunter2-secret@127.0.0.1:5432/db"
    settings = Settings(database_url=url, api_key_secret=SecretStr("key-material-xyz"))
    for shown in (repr(settings), str(settings), settings.safe_database_url):
        assert "hunter2-secret" not in shown
        assert "key-material-xyz" not in shown
    store = Store(settings=settings)
    assert "hunter2-secret" not in repr(store) and "hunter2-secret" not in store.safe_url
    store.close()


@pytest.mark.parametrize(
    "url",
    ["not a url", "nosuchdb://x/y", "postgresql+nosuchdriver://u:pw-leak@h/db", ""],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Store(url)
    assert "pw-leak" not in str(info.value)


def test_driverless_urls_get_flowstore_drivers() -> None:
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("mysql://u@h/d").drivername == "mysql+pymysql"
    assert normalize_url("mariadb://u@h/d").drivername == "mariadb+pymysql"
    assert normalize_url("sqlite://", asynchronous=True).drivername == "sqlite+aiosqlite"
    assert normalize_url("sqlite+pysqlite:///x.db").drivername == "sqlite+pysqlite"


def test_ping(store: Store) -> None:
    store.ping()


def test_ping_failure_is_connection_failed(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "db.sqlite3"
    with Store(f"sqlite:///{missing}") as store, pytest.raises(ConnectionFailedError):
        store.ping()


def test_sqlite_file_pragmas(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'p.sqlite3'}") as store, store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_in_memory_store_is_safe_from_many_threads() -> None:
    """Threads share the one in-memory database; each unit of work is isolated from the others
    because the gate admits one transaction at a time."""
    store = Store()
    with store.unit_of_work() as uow:
        counter = uow.templates.add(
            Template(name="counter", provider_type="x", max_number=0, attributes={})
        )
    errors: list[BaseException] = []
    threads_n, per_thread = 8, 25

    def work(n: int) -> None:
        try:
            for i in range(per_thread):
                with store.unit_of_work() as uow:
                    uow.deployments.add(
                        Deployment(name=f"t{n}-{i}", version="1", status=DeploymentStatus.RUNNING)
                    )
                    tpl = uow.templates.get(counter.id)
                    tpl.max_number += 1  # read-modify-write: lost updates would show below
                    uow.templates.update(tpl)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.unit_of_work() as uow:
        assert uow.deployments.count() == threads_n * per_thread
        assert uow.templates.get(counter.id).max_number == threads_n * per_thread
        assert uow.deployments.stats().by_status[DeploymentStatus.RUNNING] == threads_n * per_thread
    store.close()


def test_run_in_transaction_returns_the_result(store: Store) -> None:
    result = store.run_in_transaction(
        lambda uow: uow.deployments.add(Deployment(name="r", version="1")).name
    )
    assert result == "r"
    with pytest.raises(InvalidInputError):
        store.run_in_transaction(lambda uow: None, attempts=0)


def test_unknown_revisions_are_invalid_input(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'r.sqlite3'}") as store:
        with pytest.raises(InvalidInputError, match="nope"):
            store.upgrade("nope")
        with pytest.raises(InvalidInputError):
            store.downgrade("nope")
        assert store.current_revision() is None  # nothing was applied


def test_the_in_memory_wait_survives_dispose() -> None:
    store = Store(settings=Settings(pool_timeout=2))
    assert store.engine.pool.gate_timeout == 2  # type: ignore[attr-defined]
    store.close()  # engine.dispose() replaces the pool
    assert store.engine.pool.gate_timeout == 2  # type: ignore[attr-defined]
