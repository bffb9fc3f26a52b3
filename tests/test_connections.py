"""Connections: pool settings reach the engine, unreachable servers and pool exhaustion are
``ConnectionFailedError`` with the password masked, and a connection the server dropped is
replaced on the next unit of work.

Only 127.0.0.1 is ever contacted; the "unreachable server" is a closed or silent local port.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection, create_engine, text
from sqlalchemy.pool import QueuePool

from flowstore import ConnectionFailedError, FlowstoreError, Settings, Store
from flowstore.engine import engine_options, normalize_url
from flowstore.errors import TransactionFailedError
from flowstore.models import Template
from tests.backends import ADMIN_URLS, SERVER_BACKENDS
from tests.conftest import BACKENDS
from tests.pgbouncer import DROP_HIDDEN, skip_behind_pgbouncer

SECRET = "S3cret-pw_4711"
DRIVER_SCHEMES = {"postgresql": "postgresql", "mysql": "mysql"}
POOLED_BACKENDS = [b for b in BACKENDS if b != "sqlite"]  # in-memory SQLite is one connection
DROPPABLE_BACKENDS = [b for b in BACKENDS if b in SERVER_BACKENDS]


@pytest.fixture
def database_url(backend: str, store: Store) -> URL:
    """The URL of a ready database on ``backend`` (a file or a server, not in-memory)."""
    if store.is_memory:
        pytest.skip("the in-memory database has a single static connection")
    return store.url


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A local TCP port nobody listens on (bound, then closed, so it is free right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    yield port


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A local port that completes the TCP handshake and then never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def unreachable_url(scheme: str, port: int) -> str:
    return f"{scheme}://flowstore:{SECRET}@127.0.0.1:{port}/flowstore"


def assert_masked(error: BaseException) -> None:
    """Neither the error nor anything it was raised from shows the password."""
    seen: BaseException | None = error
    while seen is not None:
        assert SECRET not in str(seen), f"password in {type(seen).__name__}: {seen}"
        assert SECRET not in repr(seen)
        seen = seen.__cause__ or seen.__context__


def raised_by(call: Callable[[], Any]) -> BaseException:
    """Run ``call`` in a thread and return what it raised (a hang guard, not a timing check)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the call never gave up connecting"
    assert outcome, "the call succeeded against an unreachable server"
    return outcome[0]


# -- pool settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", POOLED_BACKENDS, indirect=True)
def test_pool_settings_reach_the_engine(database_url: URL) -> None:
    settings = Settings(pool_size=3, max_overflow=2, pool_timeout=7.5, pool_recycle=600,
                        pool_pre_ping=False)  # fmt: skip
    with Store(database_url, settings=settings) as store:
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool.timeout()) == (3, 7.5)
        assert pool._max_overflow == 2
        assert pool._recycle == (600 if store.dialect != "sqlite" else -1)
        assert pool._pre_ping is False
    with Store(database_url, settings=Settings(pool_pre_ping=True)) as store:
        assert store.engine.pool._pre_ping is False  # flowstore.liveness pings idle ones


@pytest.mark.parametrize("backend", POOLED_BACKENDS, indirect=True)
def test_pool_settings_come_from_the_environment(
    database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSTORE_DATABASE_URL", database_url.render_as_string(False))
    monkeypatch.setenv("FLOWSTORE_POOL_SIZE", "4")
    monkeypatch.setenv("FLOWSTORE_MAX_OVERFLOW", "0")
    monkeypatch.setenv("FLOWSTORE_POOL_TIMEOUT", "2.5")
    monkeypatch.setenv("FLOWSTORE_POOL_PRE_PING", "false")
    with Store.from_settings() as store:
        assert store.url == database_url
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool.timeout()) == (4, 0, 2.5)
        assert pool._pre_ping is False
        store.ping()


@pytest.mark.parametrize("backend", POOLED_BACKENDS, indirect=True)
def test_an_exhausted_pool_is_connection_failed(database_url: URL) -> None:
    """pool_size + max_overflow connections are handed out; the next one waits pool_timeout
    and then fails as ConnectionFailedError (not SQLAlchemy's TimeoutError)."""
    settings = Settings(pool_size=1, max_overflow=1, pool_timeout=0.2)
    with Store(database_url, settings=settings) as store:
        with store.engine.connect() as first, store.engine.connect() as second:
            first.execute(text("SELECT 1"))
            second.execute(text("SELECT 1"))
            with pytest.raises(ConnectionFailedError) as caught:
                _count_templates(store)
            assert "pool" in str(caught.value).lower()
            with pytest.raises(ConnectionFailedError):
                store.ping()
        with store.unit_of_work() as uow:  # connections are back: work goes on
            assert uow.templates.count() == 0


# -- unreachable servers ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(DRIVER_SCHEMES.values()))
def test_a_closed_port_is_connection_failed_with_the_password_masked(scheme: str) -> None:
    with closed_port() as port:
        store = Store(unreachable_url(scheme, port), settings=Settings(connect_timeout=2))
        try:
            assert SECRET not in repr(store) and SECRET not in store.safe_url
            for call in (
                store.ping,
                store.current_revision,
                store.upgrade,
                lambda: _count_templates(store),
            ):
                error = raised_by(call)
                assert isinstance(error, ConnectionFailedError), repr(error)
                assert_masked(error)
        finally:
            store.close()


@pytest.mark.parametrize("scheme", sorted(DRIVER_SCHEMES.values()))
def test_a_silent_server_gives_up_after_the_connect_timeout(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that accepts TCP but never answers: the driver's connect timeout (from settings)
    ends the wait, and the failure is ConnectionFailedError, masked."""
    with silent_port() as port:
        store = Store(unreachable_url(scheme, port), settings=Settings(connect_timeout=1))
        try:
            attempts = _record_connect_arguments(store, monkeypatch)
            error = raised_by(store.ping)
            assert attempts and all(a["connect_timeout"] == 1 for a in attempts)
            assert isinstance(error, ConnectionFailedError), repr(error)
            assert_masked(error)
        finally:
            store.close()


def _record_connect_arguments(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Keep the keyword arguments of every driver ``connect()`` the store's engine makes."""
    seen: list[dict[str, Any]] = []
    driver = store.engine.dialect.loaded_dbapi
    real_connect = driver.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(driver, "connect", connect)
    return seen


@pytest.mark.parametrize("backend", [b for b in DROPPABLE_BACKENDS if b == "mysql"], indirect=True)
def test_the_mysql_handshake_bound_does_not_cut_long_queries(database_url: URL) -> None:
    """The read timeout that bounds MySQL's handshake is lifted once connected."""
    store = Store(database_url, settings=Settings(connect_timeout=1))
    with store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT SLEEP(1.2)")).scalar_one() == 0


def test_an_unopenable_sqlite_file_is_connection_failed(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "db.sqlite3"
    with Store(f"sqlite:///{missing_dir}") as store:
        with pytest.raises(ConnectionFailedError):
            store.ping()
        with pytest.raises(ConnectionFailedError):
            _count_templates(store)


def _count_templates(store: Store) -> int:
    with store.unit_of_work() as uow:
        return uow.templates.count()


# -- ping ---------------------------------------------------------------------------------------


def test_ping_answers_on_every_backend(store: Store) -> None:
    store.ping()
    with store.unit_of_work() as uow:  # pinging leaves the store usable
        uow.templates.add(Template(name="t", provider_type="aws", max_number=1, attributes={}))
    store.ping()
    with store.unit_of_work() as uow:
        assert uow.templates.count() == 1


# -- connections dropped by the server ----------------------------------------------------------


def _backend_id(conn: Connection) -> int:
    query = (
        "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    )
    return int(conn.execute(text(query)).scalar_one())


def _session_id(store: Store) -> int:
    with store.unit_of_work() as uow:
        return _backend_id(uow.session.connection())


def _kill(backend: str, session_id: int) -> None:
    """Terminate a server session from an admin connection, and wait until it is gone."""
    admin = create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": session_id})
                alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = :p"
            else:
                conn.execute(text(f"KILL {int(session_id)}"))
                alive = "SELECT count(*) FROM information_schema.processlist WHERE id = :p"
            for _ in range(200):
                if conn.execute(text(alive), {"p": session_id}).scalar_one() == 0:
                    return
                time.sleep(0.05)
            raise AssertionError(f"session {session_id} survived being killed")
    finally:
        admin.dispose()


@pytest.mark.parametrize("backend", DROPPABLE_BACKENDS, indirect=True)
def test_a_dropped_idle_connection_is_replaced_by_pre_ping(backend: str, database_url: URL) -> None:
    settings = Settings(pool_size=1, max_overflow=0, pool_pre_ping=True, pool_pre_ping_idle=0)
    with Store(database_url, settings=settings) as store:
        first = _session_id(store)
        assert _session_id(store) == first  # the pool hands back the same connection
        _kill(backend, first)
        with store.unit_of_work() as uow:
            uow.templates.add(Template(name="t", provider_type="aws", max_number=1, attributes={}))
            replacement = _backend_id(uow.session.connection())
        assert replacement != first
        assert _count_templates(store) == 1


@pytest.mark.parametrize("backend", DROPPABLE_BACKENDS, indirect=True)
def test_without_pre_ping_the_drop_fails_one_unit_of_work_then_recovers(
    backend: str, database_url: URL
) -> None:
    skip_behind_pgbouncer(backend, DROP_HIDDEN)
    settings = Settings(pool_size=1, max_overflow=0, pool_pre_ping=False)
    with Store(database_url, settings=settings) as store:
        first = _session_id(store)
        _kill(backend, first)
        with pytest.raises(ConnectionFailedError) as caught:
            _count_templates(store)
        assert not isinstance(caught.value.__cause__, FlowstoreError)  # translated at the edge
        assert _count_templates(store) == 0
        assert _session_id(store) != first


def test_normalized_urls_keep_the_password_out_of_messages() -> None:
    url = normalize_url(f"postgres://u:{SECRET}@127.0.0.1:1/db")
    assert url.drivername == "postgresql+psycopg"
    with Store(url) as store:
        assert SECRET not in repr(store) and SECRET not in store.safe_url
        assert store.url.password == SECRET  # still usable for connecting


# -- connection arguments: flowstore's and the caller's ------------------------------------------


def _server_says(store: Store, query: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(text(query)).scalar_one()


@pytest.mark.parametrize("backend", DROPPABLE_BACKENDS, indirect=True)
def test_the_callers_connect_args_add_to_flowstores(
    backend: str, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``connect_args={"options": ...}`` used to replace flowstore's: the application name,
    the connect timeout and, on MySQL, the session's UTC time zone were gone."""
    skip_behind_pgbouncer(backend, "PgBouncer refuses the `options` startup parameter")
    if backend == "postgresql":
        extra = {"options": "-c statement_timeout=4321"}
    else:
        extra = {"init_command": "SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'"}
    with Store(database_url, connect_args=extra) as store:
        attempts = _record_connect_arguments(store, monkeypatch)
        if backend == "postgresql":
            assert _server_says(store, "SHOW statement_timeout") == "4321ms"
            assert _server_says(store, "SHOW application_name") == "flowstore"
            assert attempts[0]["tcp_user_timeout"] == 29_500
        else:
            assert "ANSI_QUOTES" in _server_says(store, "SELECT @@session.sql_mode")
            assert _server_says(store, "SELECT @@session.time_zone") == "+00:00"
            assert float(_server_says(store, "SELECT @@session.max_statement_time")) == 29.0
        assert attempts[0]["connect_timeout"] == 10


@pytest.mark.parametrize("backend", DROPPABLE_BACKENDS, indirect=True)
def test_where_both_set_a_connection_argument_the_callers_wins(
    backend: str, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key by key, the caller's value wins; on MySQL/MariaDB the session's UTC time zone is
    set after connecting, so it holds whatever the caller's ``init_command`` does."""
    if backend == "postgresql":
        extra: dict[str, Any] = {"application_name": "billing", "tcp_user_timeout": 12_000}
    else:
        extra = {"read_timeout": 7, "init_command": "SET SESSION time_zone = '+02:00'"}
    with Store(database_url, connect_args=extra) as store:
        attempts = _record_connect_arguments(store, monkeypatch)
        if backend == "postgresql":
            assert _server_says(store, "SHOW application_name") == "billing"
            assert attempts[0]["tcp_user_timeout"] == 12_000
            assert attempts[0]["keepalives_idle"] == 10  # flowstore's, where the caller is silent
        else:
            assert _server_says(store, "SELECT @@session.time_zone") == "+00:00"
            # the server's statement limit follows the caller's read timeout: a second under it
            assert float(_server_says(store, "SELECT @@session.max_statement_time")) == 6.0
            options = engine_options(store.url, Settings(), {"connect_args": extra})
            assert options["connect_args"]["read_timeout"] == 7
        assert attempts[0]["connect_timeout"] == 10


@pytest.mark.parametrize("backend", DROPPABLE_BACKENDS, indirect=True)
def test_network_timeout_bounds_a_round_trip_without_cutting_a_slow_statement(
    backend: str, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: libpq's TCP bounds see a silent network, not a slow statement, which runs
    to its end. MySQL/MariaDB: the read timeout would cut a slow statement, so the server
    cancels it first (max_statement_time, a second under the bound), with a clear error, and
    the connection stays good."""
    settings = Settings(network_timeout=2)
    with Store(database_url, settings=settings) as store:
        attempts = _record_connect_arguments(store, monkeypatch)
        if backend == "postgresql":
            assert _server_says(store, "SELECT pg_sleep(2.5)::text") == ""
            bounds = {k: attempts[0][k] for k in ("tcp_user_timeout", "keepalives_idle")}
            assert bounds == {"tcp_user_timeout": 1500, "keepalives_idle": 1}
            assert (attempts[0]["keepalives"], attempts[0]["keepalives_interval"]) == (1, 1)
        else:
            connect_args = engine_options(store.url, settings)["connect_args"]
            assert (connect_args["read_timeout"], connect_args["write_timeout"]) == (2, 2)
            assert float(_server_says(store, "SELECT @@session.max_statement_time")) == 1.0
            with (
                pytest.raises(TransactionFailedError, match="time limit"),
                store.unit_of_work() as uow,
            ):
                uow.session.execute(text("SELECT SLEEP(1.5)"))
            assert _server_says(store, "SELECT 1") == 1
            assert len(attempts) == 1  # the same connection: the server cancelled, not the client


@pytest.mark.parametrize("backend", [b for b in DROPPABLE_BACKENDS if b == "mysql"], indirect=True)
def test_a_connection_lost_before_it_is_reset_is_one_warning_and_is_replaced(
    backend: str, database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """The server drops a connection (a crash, a restart) after its last statement and before
    it is rolled back on its way back to the pool: one warning line, not an "Exception during
    reset" traceback at ERROR, and the next unit of work gets a fresh connection. (psycopg
    sends no rollback for a connection with no transaction open, so PostgreSQL never meets
    this.)"""
    caplog.set_level(logging.INFO)
    settings = Settings(pool_size=1, max_overflow=0)
    with Store(database_url, settings=settings) as store:
        with store.engine.connect() as conn:
            session_id = _backend_id(conn)
            conn.commit()
            _kill(backend, session_id)
        assert _session_id(store) != session_id
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    lost = [r for r in caplog.records if "lost before it went back to the pool" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING and lost[0].exc_info is None
