"""``AsyncStore.events``: the event log read with ``await`` (see ``flowstore.events.log``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flowstore.errors import translating
from flowstore.events.log import (
    Event,
    check_read,
    cutoff,
    prune_batch_statement,
    read_statement,
    to_event,
)
from flowstore.models.event import EVENTS

__all__ = ["AsyncEventLog"]


class AsyncEventLog:
    """The committed events of an ``AsyncStore``'s database, in commit order."""

    def __init__(self, engine: AsyncEngine, *, enabled: bool = True) -> None:
        self.engine = engine
        self.enabled = enabled

    def __repr__(self) -> str:
        return f"<AsyncEventLog {'on' if self.enabled else 'off'}>"

    async def read(self, after: int | None = None, limit: int = 100) -> list[Event]:
        """Up to ``limit`` committed events with ids above ``after``, in commit order."""
        start, size = check_read(after, limit)
        with translating():
            async with self.engine.connect() as conn:
                rows = (await conn.execute(read_statement(start, size))).mappings().all()
        return [to_event(row) for row in rows]

    async def last_id(self) -> int | None:
        """The id of the newest committed event, or ``None`` when the log is empty."""
        with translating():
            async with self.engine.connect() as conn:
                found = (await conn.execute(select(func.max(EVENTS.c.id)))).scalar_one()
        return None if found is None else int(found)

    async def prune(self, older_than: timedelta | datetime) -> int:
        """Delete the events created before ``older_than``, in batches; how many went."""
        before = cutoff(older_than)
        total = 0
        with translating():
            while True:
                async with self.engine.begin() as conn:
                    statement = await conn.run_sync(prune_batch_statement, before)
                    if statement is None:
                        break
                    removed = int((await conn.execute(statement)).rowcount or 0)
                total += removed
                if removed == 0:
                    break
        return total
