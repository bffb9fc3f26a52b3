"""The change-event log (``flowstore.events``): one row per recorded event, in commit order.

``events.id`` is the readers' cursor, so it must grow in the order transactions commit, not in
the order they started: ``flowstore.events.writer`` inserts a transaction's events at commit
time, under a lock held to the end of the commit (PostgreSQL: a transaction-level advisory
lock; MySQL/MariaDB: a row lock on ``event_writer_lock``; SQLite: its single writer), so ids
taken later always belong to transactions that commit later. On SQLite the key is
``AUTOINCREMENT``: an id is never handed out twice, even after the newest events are pruned.

These are Core tables on flowstore's metadata (migrations and ``db check`` see them), not
mapped models: an event is not an entity and records no event of its own.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from flowstore.models.base import Base
from flowstore.models.types import GUID, JSONType, UTCDateTime

__all__ = ["EVENTS", "EVENT_WRITER_LOCK"]

EVENTS = Table(
    "events",
    Base.metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("entity_id", String(255), nullable=True),
    Column("org_id", GUID(), nullable=True),
    Column("data", JSONType, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "created_at"),  # retention: prune by age off an index
    sqlite_autoincrement=True,
)

#: One row (``id = 1``) that an event-writing transaction locks at commit on MySQL/MariaDB.
EVENT_WRITER_LOCK = Table(
    "event_writer_lock",
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
)
