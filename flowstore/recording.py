"""What a store records of its sessions' changes: change events, cache invalidations.

``attach`` is the one call a store makes: it reads the ``events`` and ``cache_url`` settings
(or the store's arguments), puts a ``flowstore.events.capture.Recording`` in the sessions its
factory makes, and returns the store's event log and cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from flowstore.config import Settings
from flowstore.events.capture import RECORDING, Recording
from flowstore.events.log import EventLog

if TYPE_CHECKING:
    from flowstore.cache.client import Cache

__all__ = ["attach"]


def attach(
    session_factory: Any,
    engine: Engine,
    settings: Settings,
    *,
    events: bool | None = None,
    cache_url: str | None = None,
    asynchronous: bool = False,
) -> tuple[EventLog, Cache | None]:
    """Configure ``session_factory`` (a sync or async sessionmaker) to record events and/or
    invalidate a cache; the store's ``(events, cache)``."""
    enabled = settings.events if events is None else bool(events)
    url = cache_url if cache_url is not None else settings.cache_url
    cache = None
    if url:
        from flowstore.cache.client import open_cache

        database = engine.url.render_as_string(hide_password=True)
        cache = open_cache(url, database, asynchronous=asynchronous)
    if enabled or cache is not None:
        session_factory.configure(info={RECORDING: Recording(events=enabled, cache=cache)})
    return EventLog(engine, enabled=enabled), cache
