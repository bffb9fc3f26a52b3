"""Engine construction: URL normalisation, pool settings and per-dialect connection set-up.

SQLite gets foreign keys on, a busy timeout, WAL for files, and driver-level transaction
handling turned off so that SQLAlchemy emits BEGIN itself (SAVEPOINT then works on pysqlite).

The in-memory database lives in one connection (a ``StaticPool``), so that every unit of work
sees the same data. One connection cannot keep concurrent transactions apart, so the pool lends
it to one thread at a time, from checkout to checkin (one transaction); other threads wait, up
to ``pool_timeout``.

On the servers every wait is bounded (docs/faults.md): opening a connection by
``connect_timeout``, a round trip on an open one by ``network_timeout`` (libpq's
``tcp_user_timeout`` and keepalives; PyMySQL's read and write timeouts, with MariaDB's
``max_statement_time`` just under them so that a slow statement is cancelled by the server,
clearly, before the client gives up on it). A pre-ping that waited out the bound fails the
call rather than waiting again to reconnect, and a connection lost before it could be reset
on its way back to the pool is logged in one line and replaced.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import StaticPool

from flowstore.config import Settings
from flowstore.errors import ConnectionFailedError, InvalidInputError, mask_secrets
from flowstore.liveness import install_liveness_check
from flowstore.sql_functions import register_sqlite_functions

__all__ = [
    "OneHolderPool",
    "build_engine",
    "engine_options",
    "install_server_hooks",
    "install_sqlite_hooks",
    "is_memory_sqlite",
    "merge_options",
    "normalize_url",
    "statement_limit",
]

log = logging.getLogger("flowstore.engine")

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


def engine_options(
    url: URL, settings: Settings, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``create_engine`` keyword arguments for ``url`` under ``settings``, with the caller's
    ``overrides`` merged in (see :func:`merge_options`)."""
    options: dict[str, Any] = {"echo": settings.echo, "pool_pre_ping": False}  # see liveness
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
        return merge_options(options, overrides or {})
    options.update(
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
    )
    network = settings.network_timeout
    if backend == "postgresql":
        # libpq: data unacknowledged for tcp_user_timeout ms drops the connection (the kernel
        # fires that timer up to half a second late, hence the half second off); keepalive
        # probes find a silent peer while a statement runs, within the same bound.
        idle = max(1, int(network // 3))
        options["connect_args"] = {
            "connect_timeout": max(1, round(timeout)),
            "application_name": "flowstore",
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": 1,
            "keepalives_count": max(1, math.ceil(network - idle)),
            "tcp_user_timeout": round(max(1.0, network - 0.5) * 1000),
        }
        if not settings.prepared_statements and url.get_driver_name() == "psycopg":
            # behind a transaction pooler the next transaction may run on another server
            # connection, which never saw the statement psycopg prepared
            options["connect_args"]["prepare_threshold"] = None
    elif backend in {"mysql", "mariadb"}:
        # the session's time zone and statement limit are set once connected (_bound_mysql)
        options["connect_args"] = {
            "connect_timeout": max(1, round(timeout)),
            "read_timeout": network,
            "write_timeout": network,
            "charset": "utf8mb4",
        }
        options["isolation_level"] = "READ COMMITTED"
    return merge_options(options, overrides or {})


def merge_options(options: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the caller's ``overrides`` on top, key by key; ``connect_args`` too,
    so a caller's ``connect_args={"options": ...}`` adds to flowstore's connection arguments
    instead of replacing them. Where both set a key, the caller's value wins (on MySQL and
    MariaDB the session's UTC time zone is set after connecting, so it always holds)."""
    merged = {**options, **overrides}
    theirs = overrides.get("connect_args")
    if isinstance(theirs, Mapping) and isinstance(options.get("connect_args"), Mapping):
        merged["connect_args"] = {**options["connect_args"], **theirs}
    return merged


def statement_limit(round_trip: float) -> float:
    """How long MySQL/MariaDB may run a statement when the client waits ``round_trip`` seconds
    for an answer: a second less (at most half less), so the server's error comes first."""
    return round_trip - min(1.0, round_trip / 2)


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
    """A configured synchronous engine for ``url``; ``overrides`` go to ``create_engine``
    (``connect_args`` merged with flowstore's, see :func:`merge_options`)."""
    parsed = normalize_url(url)
    options = engine_options(parsed, settings, overrides)
    quiet_reset = resets_quietly(parsed, options, overrides)
    try:
        engine = create_engine(parsed, **options)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot use database URL {mask_secrets(str(parsed))}: {exc}"
        ) from None
    install_liveness_check(engine, settings, overrides)
    if isinstance(engine.pool, _GatedStaticPool):
        engine.pool.gate_timeout = settings.pool_timeout
    if parsed.get_backend_name() == "sqlite":
        install_sqlite_hooks(engine, settings, is_memory_sqlite(parsed))
        return engine
    install_server_hooks(engine, settings, options, quiet_reset=quiet_reset)
    return engine


def resets_quietly(url: URL, options: dict[str, Any], overrides: Mapping[str, Any]) -> bool:
    """Whether a server engine's pool gets flowstore's quiet reset (``_reset_quietly``): then
    ``options`` tell SQLAlchemy not to reset connections itself."""
    server = url.get_backend_name() in {"postgresql", "mysql", "mariadb"}
    quiet = server and "pool_reset_on_return" not in overrides
    if quiet:
        options["pool_reset_on_return"] = None
    return quiet


def install_server_hooks(
    engine: Engine, settings: Settings, options: Mapping[str, Any], *, quiet_reset: bool
) -> None:
    """What a server engine gets once made (the sync engine of an ``AsyncEngine`` too): the
    bounded MySQL handshake and statement limit, the quiet reset, the timed pre-ping."""
    if engine.dialect.name in {"mysql", "mariadb"}:
        _bound_mysql(engine, options.get("connect_args") or {})
    if quiet_reset:
        _reset_quietly(engine)
    if options.get("pool_pre_ping") or settings.pool_pre_ping:  # liveness pings through it
        _bound_pre_ping(engine, settings.network_timeout)


def _bound_mysql(engine: Engine, connect_args: Mapping[str, Any]) -> None:
    """PyMySQL: bound the handshake by ``connect_timeout``, then every read by the read
    timeout; pin the session to UTC and let the server cancel a statement a little before
    the client would give up on it (MariaDB ``max_statement_time``; MySQL's
    ``max_execution_time`` covers SELECTs only).

    ``connect_timeout`` alone covers only the TCP connect: a server that accepts and never
    answers would hang the handshake. It runs with ``read_timeout = connect_timeout``, and the
    connection then gets its own read timeout for what follows.
    """
    read_timeout = connect_args.get("read_timeout")
    limit = statement_limit(read_timeout) if read_timeout else None

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        handshake = cparams.get("connect_timeout")
        if not handshake:
            return None
        given = cparams.get("read_timeout")
        bounded = {**cparams, "read_timeout": min(handshake, given) if given else handshake}
        conn = dialect.loaded_dbapi.connect(*cargs, **bounded)
        conn._read_timeout = given  # PyMySQL applies it to the socket on the next read
        return conn

    @event.listens_for(engine, "connect")
    def _session(dbapi_conn: Any, _record: Any) -> None:
        settings = ["time_zone = '+00:00'"]
        if limit is not None:
            if "mariadb" in str(dbapi_conn.get_server_info()).lower():
                settings.append(f"max_statement_time = {limit:.3f}")
            else:
                settings.append(f"max_execution_time = {math.ceil(limit * 1000)}")
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET " + ", ".join(settings))


def _bound_pre_ping(engine: Engine, round_trip: float) -> None:
    """A pre-ping that failed only after waiting (the network is cut, not the server down)
    fails the call at once with ``ConnectionFailedError``: reconnecting would wait another
    ``connect_timeout``. A ping that fails at once (the server restarted, the connection was
    reset) is left to SQLAlchemy, which reconnects. The pool drops the dead connection either
    way. SQLAlchemy has no hook around its ping, so the dialect's ``do_ping`` is wrapped."""
    dialect = engine.dialect
    ping = dialect.do_ping
    waited_long = min(1.0, round_trip / 2)

    def do_ping(dbapi_connection: Any) -> bool:
        started = time.monotonic()
        try:
            return ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            waited = time.monotonic() - started
            if waited < waited_long or not dialect.is_disconnect(error, dbapi_connection, None):
                raise
            raise ConnectionFailedError(
                f"the database did not answer a ping within {waited:.1f}s "
                f"(network_timeout {round_trip:g}s): {_first_line(error)}"
            ) from error

    setattr(dialect, "do_ping", do_ping)  # noqa: B010  (an instance attribute: this engine only)


def _reset_quietly(engine: Engine) -> None:
    """Roll back a connection on its way back to the pool, as SQLAlchemy does, but take one
    the server dropped meanwhile (a crash, a restart) for what it is: one warning line, and
    the connection is replaced, instead of an "Exception during reset" traceback at ERROR."""
    dialect = engine.dialect

    @event.listens_for(engine.pool, "reset")
    def _reset(dbapi_conn: Any, record: Any, state: Any) -> None:
        if state.transaction_was_reset or state.terminate_only or not state.asyncio_safe:
            return
        try:
            dialect.do_rollback(dbapi_conn)
        except dialect.loaded_dbapi.Error as error:
            if not dialect.is_disconnect(error, dbapi_conn, None):
                raise
            log.warning(
                "a connection was lost before it went back to the pool (%s); it is replaced",
                _first_line(error),
            )
            record.invalidate(error, soft=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return mask_secrets(text.splitlines()[0] if text else type(error).__name__)
