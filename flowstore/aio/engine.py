"""The asynchronous engine: the sync engine's options and SQLite hooks, and a task gate for the
in-memory database.

Options (pool size, timeouts, connect arguments) come from :func:`flowstore.engine.engine_options`
and the SQLite set-up (foreign keys, busy timeout, WAL, and SQLAlchemy emitting ``BEGIN`` itself
so that SAVEPOINT works; Python 3.11's sqlite3 has no ``autocommit`` attribute and aiosqlite does
not expose it) from the same hooks as the sync face, installed on ``engine.sync_engine``.

The in-memory database lives in one connection (``StaticPool``). SQLite keeps one transaction per
connection, so two tasks interleaving on it would commit or roll back each other's work. The
pool therefore admits one *task* at a time, from checkout to checkin, through an asyncio lock
taken in ``_do_get`` (before the connection is handed out, so a wait that times out or is
cancelled leaves the connection untouched); other tasks wait up to ``pool_timeout``. SQLite's
shared-cache mode (one connection per task) was the alternative; it was rejected because its
table locks fail at once with "database table is locked" instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import URL
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from flowstore.config import Settings
from flowstore.engine import (
    OneHolderPool,
    engine_options,
    install_server_hooks,
    install_sqlite_hooks,
    is_memory_sqlite,
    normalize_url,
    resets_quietly,
)
from flowstore.errors import InvalidInputError, mask_secrets
from flowstore.liveness import install_liveness_check
from flowstore.sa_compat import await_in_greenlet

R = TypeVar("R")

__all__ = ["TaskGate", "build_async_engine", "spawn_step"]

# The task a helper task works for (flowstore runs shielded steps in tasks of their own): the
# gate treats both as one holder.
_WORKING_FOR: ContextVar[asyncio.Task[Any] | None] = ContextVar(
    "flowstore_working_for", default=None
)


def _holder() -> asyncio.Task[Any] | None:
    return _WORKING_FOR.get() or asyncio.current_task()


def spawn_step(step: Awaitable[R]) -> asyncio.Future[R]:
    """``step`` as a task of its own that works for the current task (see ``TaskGate``)."""
    token = _WORKING_FOR.set(_holder())
    try:
        return asyncio.ensure_future(step)
    finally:
        _WORKING_FOR.reset(token)


class TaskGate:
    """Admits one asyncio task at a time; the holder may not enter again (it would share, and
    then reset, its own transaction's connection)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: asyncio.Task[Any] | None = None

    @property
    def held(self) -> bool:
        """Whether a task holds the gate now."""
        return self._lock is not None and self._lock.locked()

    def _current_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or (self._loop is not loop and not self._lock.locked()):
            self._lock, self._loop = asyncio.Lock(), loop  # a lock belongs to one event loop
        return self._lock

    async def enter(self) -> None:
        me = _holder()
        lock = self._current_lock()
        if me is not None and self._owner is me and lock.locked():
            raise InvalidInputError(
                "this task already holds the in-memory database's only connection "
                "(a unit of work is open): finish it before opening another"
            )
        try:
            async with asyncio.timeout(self.timeout):
                await lock.acquire()
        except TimeoutError:
            raise sa_exc.TimeoutError(
                f"the in-memory database stayed busy for {self.timeout:g}s"
            ) from None
        self._owner = me

    def leave(self) -> None:
        if self._lock is not None and self._lock.locked():
            self._owner = None
            self._lock.release()


class GatedStaticPool(OneHolderPool):
    """``StaticPool`` whose single connection one task at a time may check out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = TaskGate(timeout=30.0)

    def recreate(self) -> GatedStaticPool:
        pool = super().recreate()
        assert isinstance(pool, GatedStaticPool)
        pool.gate = self.gate
        return pool

    def _enter(self) -> None:
        await_in_greenlet(self.gate.enter())

    def _leave(self) -> None:
        self.gate.leave()


def build_async_engine(url: str | URL, settings: Settings, **overrides: Any) -> AsyncEngine:
    """A configured ``AsyncEngine`` for ``url`` (driverless URLs get aiosqlite / psycopg);
    ``overrides`` go to ``create_async_engine``."""
    parsed = normalize_url(url, asynchronous=True)
    memory = is_memory_sqlite(parsed)
    defaults: dict[str, Any] = {}
    if memory:
        defaults["poolclass"] = GatedStaticPool
    elif parsed.get_backend_name() == "sqlite":
        defaults["poolclass"] = AsyncAdaptedQueuePool  # SQLAlchemy 2.0 would use a NullPool
    options = engine_options(parsed, settings, {**defaults, **overrides})
    quiet_reset = resets_quietly(parsed, options, overrides)
    try:
        engine = create_async_engine(parsed, **options)
    except (
        sa_exc.ArgumentError,
        sa_exc.InvalidRequestError,
        sa_exc.NoSuchModuleError,
        TypeError,
        ValueError,
    ) as exc:
        raise InvalidInputError(
            f"cannot use database URL {mask_secrets(str(parsed))} asynchronously "
            f"(supported: sqlite+aiosqlite, postgresql+psycopg): {exc}"
        ) from None
    install_liveness_check(engine.sync_engine, settings, overrides)
    pool = engine.sync_engine.pool
    if isinstance(pool, GatedStaticPool):
        pool.gate.timeout = settings.pool_timeout
    if parsed.get_backend_name() == "sqlite":
        install_sqlite_hooks(engine.sync_engine, settings, memory)
    else:
        install_server_hooks(engine.sync_engine, settings, options, quiet_reset=quiet_reset)
    return engine
