"""Engine construction: URL normalisation, pool settings and per-dialect connection set-up.

SQLite gets foreign keys on, a busy timeout, WAL for files, and driver-level transaction
handling turned off so that SQLAlchemy emits BEGIN itself (SAVEPOINT then works on pysqlite).

The in-memory database lives in one connection (a ``StaticPool``), so that every unit of work
sees the same data. One connection cannot keep concurrent transactions apart, so the pool lends
it to one thread at a time, from checkout to checkin (one transaction); other threads wait, up
to ``pool_timeout``.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import StaticPool

from flowstore.config import Settings
from flowstore.errors import InvalidInputError, mask_secrets
from flowstore.sql_functions import register_sqlite_functions

__all__ = [
    "OneHolderPool",
    "build_engine",
    "engine_options",
    "install_sqlite_hooks",
    "is_memory_sqlite",
    "normalize_url",
]

_DEFAULT_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def normalize_url(url: str | URL, *, asynchronous: bool = False) -> URL:
    """Parse ``url`` and give driverless URLs flowstore's drivers (psycopg 3, PyMySQL,
    aiosqlite when ``asynchronous``); a malformed URL is ``InvalidInputError``, masked."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"invalid database URL {mask_secrets(str(url))!r}: {exc}") from None
    name = parsed.drivername
    if asynchronous and name in _ASYNC_DRIVERS:
        return parsed.set(drivername=_ASYNC_DRIVERS[name])
    if asynchronous and name == "postgres":
        return parsed.set(drivername="postgresql+psycopg")
    if name in _DEFAULT_DRIVERS:
        return parsed.set(drivername=_DEFAULT_DRIVERS[name])
    return parsed


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return database in {"", ":memory:"} or (
        database.startswith("file:") and "mode=memory" in database
    )


def engine_options(url: URL, settings: Settings) -> dict[str, Any]:
    """``create_engine`` keyword arguments for ``url`` under ``settings``."""
    options: dict[str, Any] = {"echo": settings.echo, "pool_pre_ping": settings.pool_pre_ping}
    backend = url.get_backend_name()
    timeout = settings.connect_timeout
    if backend == "sqlite":
        connect_args: dict[str, Any] = {"timeout": settings.sqlite_busy_timeout_ms / 1000}
        if is_memory_sqlite(url):
            connect_args["check_same_thread"] = False
            options["poolclass"] = _GatedStaticPool
        else:
            options.update(pool_size=settings.pool_size, max_overflow=settings.max_overflow)
            options["pool_timeout"] = settings.pool_timeout
        options["connect_args"] = connect_args
        return options
    options.update(
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
    )
    if backend == "postgresql":
        options["connect_args"] = {
            "connect_timeout": max(1, round(timeout)),
            "application_name": "flowstore",
        }
    elif backend in {"mysql", "mariadb"}:
        options["connect_args"] = {
            "connect_timeout": max(1, round(timeout)),
            "charset": "utf8mb4",
            "init_command": "SET time_zone = '+00:00'",
        }
        options["isolation_level"] = "READ COMMITTED"
    return options


class OneHolderPool(StaticPool):
    """``StaticPool`` whose one connection is lent to one holder at a time: ``_enter`` waits
    for (and takes) the turn before the connection is handed out, ``_leave`` gives it back when
    the connection is returned. Subclasses say who a holder is: a thread here, an asyncio task
    in ``flowstore.aio.engine``."""

    def _enter(self) -> None:
        raise NotImplementedError

    def _leave(self) -> None:
        raise NotImplementedError

    def _do_get(self) -> Any:
        self._enter()
        try:
            return super()._do_get()
        except BaseException:
            self._leave()
            raise

    def _do_return_conn(self, record: Any) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self._leave()


class _GatedStaticPool(OneHolderPool):
    """The in-memory database's pool: its one connection goes to one thread at a time.

    The gate is taken before the connection is handed out and given back when it is returned,
    so two threads never share a transaction. A second checkout from the thread that holds the
    connection (a unit of work opened inside another) is refused at once: waiting would
    deadlock, and sharing would mix the two transactions.
    """

    gate_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cond = threading.Condition()
        self._owner: int | None = None

    def _enter(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                raise sa_exc.InvalidRequestError(
                    "the in-memory database is already in use by another unit of work in this "
                    "thread; finish that one first (or use a SQLite file or a server)"
                )
            if not self._cond.wait_for(lambda: self._owner is None, self.gate_timeout):
                raise sa_exc.TimeoutError(
                    f"the in-memory database stayed busy for {self.gate_timeout:g}s"
                )
            self._owner = me

    def _leave(self) -> None:
        with self._cond:
            self._owner = None
            self._cond.notify()

    def recreate(self) -> _GatedStaticPool:
        """The pool ``engine.dispose()`` puts in place: it keeps the configured wait."""
        pool = super().recreate()
        assert isinstance(pool, _GatedStaticPool)
        pool.gate_timeout = self.gate_timeout
        return pool


def install_sqlite_hooks(engine: Engine, settings: Settings, memory: bool) -> None:
    """Pragmas and BEGIN on every connection (flowstore.aio installs them on
    ``engine.sync_engine``)."""
    busy_ms = int(settings.sqlite_busy_timeout_ms)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy, not pysqlite, starts transactions
        register_sqlite_functions(dbapi_conn)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            # LIKE respects case, as on PostgreSQL and MySQL (flowstore's binary collation)
            cursor.execute("PRAGMA case_sensitive_like = ON")
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def build_engine(url: str | URL, settings: Settings, **overrides: Any) -> Engine:
    """A configured synchronous engine for ``url``; ``overrides`` go to ``create_engine``."""
    parsed = normalize_url(url)
    options = engine_options(parsed, settings)
    options.update(overrides)
    try:
        engine = create_engine(parsed, **options)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot use database URL {mask_secrets(str(parsed))}: {exc}"
        ) from None
    if isinstance(engine.pool, _GatedStaticPool):
        engine.pool.gate_timeout = settings.pool_timeout
    if parsed.get_backend_name() == "sqlite":
        install_sqlite_hooks(engine, settings, is_memory_sqlite(parsed))
    elif parsed.get_backend_name() in {"mysql", "mariadb"}:
        _bound_mysql_handshake(engine)
    return engine


def _bound_mysql_handshake(engine: Engine) -> None:
    """Make PyMySQL's ``connect_timeout`` cover the whole handshake, not only the TCP connect.

    Without a read timeout, a server that accepts the connection but never answers hangs the
    caller forever. The handshake gets ``read_timeout = connect_timeout``; afterwards queries
    may run as long as they need. A ``read_timeout`` chosen by the caller is left alone.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        if "read_timeout" in cparams or not cparams.get("connect_timeout"):
            return None
        conn = dialect.loaded_dbapi.connect(
            *cargs, read_timeout=cparams["connect_timeout"], **cparams
        )
        conn._read_timeout = None  # PyMySQL applies it to the socket on the next read
        return conn
