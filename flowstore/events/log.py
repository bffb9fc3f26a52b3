"""Reading and pruning the event log, and publishing domain events from a unit of work.

``store.events.read(after, limit)`` returns committed events in commit order (see
``flowstore.events.writer`` for why ids follow it); a reader keeps the last id it handled and
asks for what comes after it. The query is a range of the primary key, so a page costs the
same at ten million events as at a thousand. ``prune(older_than)`` deletes old events in
batches off the ``created_at`` index.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.orm import Session

from flowstore import arguments
from flowstore.errors import InvalidInputError, TenantScopeError, translating
from flowstore.events.capture import pending, recording
from flowstore.events.writer import json_safe
from flowstore.models.event import EVENTS
from flowstore.models.types import utcnow

__all__ = [
    "MAX_READ",
    "Event",
    "EventLog",
    "EventPublisher",
    "check_read",
    "cutoff",
    "prune_batch_statement",
    "read_statement",
    "to_event",
]

MAX_READ = 10_000
PRUNE_BATCH = 5_000
_TYPE_LENGTH = 255  # events.type is a String(255)


@dataclass(frozen=True)
class Event:
    """One committed event: ``id`` is the cursor (``read(after=event.id)`` goes on from it)."""

    id: int
    type: str
    entity_id: str | None
    org_id: uuid.UUID | None
    data: dict[str, Any]
    created_at: datetime


def check_read(after: Any, limit: Any) -> tuple[int, int]:
    """``read``'s arguments checked: ``after`` an id (or ``None``: from the start), ``limit``
    from 1 to ``MAX_READ``."""
    if after is None:
        after = 0
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidInputError(f"after takes an event id (an integer >= 0), got {after!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_READ:
        raise InvalidInputError(f"limit must be an integer from 1 to {MAX_READ}, got {limit!r}")
    return after, limit


def read_statement(after: int, limit: int) -> Any:
    """The page of events after ``after``: a range of the primary key, in its order."""
    return select(EVENTS).where(EVENTS.c.id > after).order_by(EVENTS.c.id).limit(limit)


def to_event(row: Mapping[Any, Any]) -> Event:
    """An :class:`Event` from a row of the events table."""
    return Event(
        id=int(row["id"]),
        type=row["type"],
        entity_id=row["entity_id"],
        org_id=row["org_id"],
        data=dict(row["data"] or {}),
        created_at=row["created_at"],
    )


def prune_batch_statement(connection: Connection, before: datetime) -> Any:
    """Delete up to ``PRUNE_BATCH`` events created before ``before`` (oldest first)."""
    oldest = (
        select(EVENTS.c.id)
        .where(EVENTS.c.created_at < before)
        .order_by(EVENTS.c.created_at)
        .limit(PRUNE_BATCH)
    )
    if connection.dialect.name in {"mysql", "mariadb"}:  # no LIMIT in an IN subquery there
        ids = list(connection.execute(oldest).scalars())
        return delete(EVENTS).where(EVENTS.c.id.in_(ids)) if ids else None
    return delete(EVENTS).where(EVENTS.c.id.in_(oldest.scalar_subquery()))


def cutoff(older_than: timedelta | datetime) -> datetime:
    """The creation time before which ``older_than`` (an age, or a time) prunes events."""
    return arguments.cutoff("older_than", older_than, utcnow())


class EventLog:
    """``store.events``: the committed events of one store's database."""

    def __init__(self, engine: Engine, *, enabled: bool = True) -> None:
        self.engine = engine
        self.enabled = enabled

    def __repr__(self) -> str:
        return f"<EventLog {'on' if self.enabled else 'off'}>"

    def read(self, after: int | None = None, limit: int = 100) -> list[Event]:
        """Up to ``limit`` committed events with ids above ``after``, in commit order."""
        start, size = check_read(after, limit)
        with translating(), self.engine.connect() as conn:
            rows = conn.execute(read_statement(start, size)).mappings().all()
        return [to_event(row) for row in rows]

    def last_id(self) -> int | None:
        """The id of the newest committed event, or ``None`` when the log is empty."""
        with translating(), self.engine.connect() as conn:
            found = conn.execute(select(func.max(EVENTS.c.id))).scalar_one()
        return None if found is None else int(found)

    def prune(self, older_than: timedelta | datetime) -> int:
        """Delete the events created before ``older_than`` (an age or a time), in batches of
        their own transactions; how many went."""
        before = cutoff(older_than)
        total = 0
        with translating():
            while True:
                with self.engine.begin() as conn:
                    statement = prune_batch_statement(conn, before)
                    if statement is None:
                        break
                    removed = int(conn.execute(statement).rowcount or 0)
                total += removed
                if removed == 0:
                    break
        return total


class EventPublisher:
    """``uow.events``: domain events published inside the unit of work's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def publish(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        entity_id: Any = None,
        org_id: Any = None,
    ) -> None:
        """Record the event ``type`` with ``data`` (JSON-able) to commit with the transaction
        (dropped if it rolls back). ``org_id`` defaults to the unit of work's organization."""
        if not isinstance(type, str) or not type.strip() or len(type) > _TYPE_LENGTH:
            raise InvalidInputError(
                f"an event type is a non-empty string of at most {_TYPE_LENGTH} characters, "
                f"got {type!r}"
            )
        if data is not None and not isinstance(data, Mapping):
            raise InvalidInputError("event data must be a mapping (a JSON object)")
        from flowstore.tenancy import session_org_id  # tenancy imports the repositories

        scope = session_org_id(self.session)
        if org_id is None:
            org = scope
        else:
            try:
                org = org_id if isinstance(org_id, uuid.UUID) else uuid.UUID(str(org_id))
            except ValueError:
                raise InvalidInputError("org_id must be a UUID") from None
            if scope is not None and org != scope:
                raise TenantScopeError(
                    "tenant-scoped unit of work: it publishes events of its own organization only"
                )
        found = recording(self.session)
        if found is None or not found.events:
            return  # events are off for this store
        if self.session.get_transaction() is None:
            self.session.begin()  # the event belongs to this transaction, begun now
        pending(self.session).published.append(
            (type, json_safe(dict(data or {})), None if entity_id is None else str(entity_id), org)
        )
