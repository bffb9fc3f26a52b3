"""What a store records of its sessions' changes: change events, cache invalidations.

``attach`` is the one call a store makes: it reads the ``events`` and ``cache_url`` settings
(or the store's arguments) and returns the store's event log and cache, and the
``session.info`` entries (a ``flowstore.events.capture.Recording``) its sessions are made with,
to merge with the store's other entries (its statement timeout).
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
    engine: Engine,
    settings: Settings,
    *,
    events: bool | None = None,
    cache_url: str | None = None,
    asynchronous: bool = False,
) -> tuple[EventLog, Cache | None, dict[str, Any]]:
    """The store's ``(events, cache, info)``: ``info`` is what its sessions carry in
    ``Session.info`` to record events and/or invalidate the cache (empty when neither)."""
    enabled = settings.events if events is None else bool(events)
    url = cache_url if cache_url is not None else settings.cache_url
    cache = None
    if url:
        from flowstore.cache.client import open_cache

        database = engine.url.render_as_string(hide_password=True)
        cache = open_cache(url, database, asynchronous=asynchronous)
    info: dict[str, Any] = {}
    if enabled or cache is not None:
        info[RECORDING] = Recording(events=enabled, cache=cache)
    return EventLog(engine, enabled=enabled), cache, info
