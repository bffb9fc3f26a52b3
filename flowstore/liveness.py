"""Checking a pooled connection before use, only when it may have gone stale.

SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip for every unit of
work, which a busy service pays thousands of times a second on connections used a millisecond
ago. flowstore pings only a connection that sat idle in the pool for ``pool_pre_ping_idle``
seconds or more (default 5; 0 pings every checkout): a server restart, a failover or a proxy's
idle cut happen to connections that wait, and those are the ones checked. A dead one is
replaced before the unit of work gets it.

What is given up: a connection lost while busy (the server restarted within the last few
seconds of use) is found by the statement that uses it, which fails with
``ConnectionFailedError`` (503 through ``flowstore.ext.fastapi``); SQLAlchemy then discards
every connection of the pool that is older than the failure, so one request per pool sees it,
not one per connection. ``pool_pre_ping_idle = 0`` brings back the check of every checkout.
SQLite is never pinged: its connections are files, not sockets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc

from flowstore.config import Settings

__all__ = ["install_liveness_check"]

_CHECKED_IN = "flowstore_checked_in_at"


def install_liveness_check(
    engine: Engine, settings: Settings, overrides: Mapping[str, Any] | None = None
) -> None:
    """Ping ``engine``'s connections idle ``pool_pre_ping_idle`` seconds or more at checkout
    when ``settings.pool_pre_ping`` (for an async engine pass its ``sync_engine``). A
    ``pool_pre_ping`` given to the engine itself wins: ``True`` is SQLAlchemy's check of every
    checkout, ``False`` none."""
    chosen = (overrides or {}).get("pool_pre_ping")
    if chosen is not None or not settings.pool_pre_ping or engine.dialect.name == "sqlite":
        return
    idle_seconds = settings.pool_pre_ping_idle
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()  # just made: nothing to check yet

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dbapi_error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):  # type: ignore[arg-type]
                raise sa_exc.DisconnectionError("the pooled connection was lost") from exc
            raise
        if not alive:
            raise sa_exc.DisconnectionError("the pooled connection did not answer a ping")
