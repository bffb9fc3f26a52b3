"""The engine an ``AuditWriter`` stores through: its thread runs blocking, synchronous code.

A sync ``Store`` or ``Engine`` is used as it is. The async face's engine cannot serve a plain
thread (its connections are awaited in SQLAlchemy's greenlet: the writer's batches failed
with ``MissingGreenlet``), so for an ``AsyncStore`` or ``AsyncEngine`` (or a repository of an
async unit of work, whose bind is such an engine's ``sync_engine``) the writer opens a small
synchronous engine of its own on the same database, with the store's settings, and disposes
of it when it is closed. The in-memory database of an async store lives in its one
connection, which no other engine can reach: it is refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from flowstore.config import Settings
from flowstore.engine import build_engine, is_memory_sqlite
from flowstore.errors import InvalidInputError

__all__ = ["writer_engine"]

_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite+pysqlite", "postgresql+psycopg": "postgresql+psycopg"}


def writer_engine(target: Any, settings: Settings | None = None) -> tuple[Engine, bool]:
    """The engine for ``target`` (a store, an async store, an engine of either face) and
    whether the writer made it (and must dispose of it, made with ``settings`` or the
    store's)."""
    engine = getattr(target, "engine", target)
    settings = settings or getattr(target, "settings", None)
    if isinstance(engine, AsyncEngine):
        engine = engine.sync_engine
    if not isinstance(engine, Engine):
        raise InvalidInputError("AuditWriter takes a Store, an AsyncStore or an engine")
    if not engine.dialect.is_async:
        return engine, False
    url = engine.url
    if is_memory_sqlite(url):
        raise InvalidInputError(
            "the async in-memory database lives in one connection the audit writer's thread "
            "cannot share: use a SQLite file or a server, or the sync Store"
        )
    driver = _SYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise InvalidInputError(f"AuditWriter cannot store through {url.drivername}")
    own = build_engine(url.set(drivername=driver), settings or Settings(), pool_size=1)
    return own, True
