"""Enqueueing under a queueing lock: at most one unfinished job per queue and ``dedup_key``.

The database enforces it (the unique index ``ux_jobs_dedup`` over ``live_dedup_key``), so it holds
under concurrent enqueues from any number of processes. The insert gives way to a job that
holds the key (``ON CONFLICT DO NOTHING``; ``ON DUPLICATE KEY UPDATE`` of nothing on MySQL and
MariaDB), which leaves the caller's transaction usable; then the holder's id is read. If the
holder finished between the two statements, the insert is tried again.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from flowstore.errors import TransactionFailedError
from flowstore.queue.statements import JOBS, MYSQL_DIALECTS, columns

__all__ = ["insert_once"]

_TRIES = 10
_c = columns


def _insert_or_nothing(dialect: str) -> Any:
    if dialect in MYSQL_DIALECTS:
        return mysql.insert(JOBS).on_duplicate_key_update(id=_c.id)
    if dialect == "postgresql":
        return postgresql.insert(JOBS).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(JOBS).on_conflict_do_nothing()
    return insert(JOBS)


def insert_once(conn: Connection, row: dict[str, Any]) -> uuid.UUID:
    """Insert ``row`` unless an unfinished job of its queue holds its ``dedup_key``; the id of
    the job that holds the key after it (``row``'s own when it was inserted)."""
    statement = _insert_or_nothing(conn.dialect.name)
    holder = select(_c.id).where(_c.queue == row["queue"], _c.live_dedup_key == row["dedup_key"])
    for _ in range(_TRIES):
        conn.execute(statement, [row])
        found: uuid.UUID | None = conn.execute(holder).scalar()
        if found is not None:
            return found
    raise TransactionFailedError(
        f"could not enqueue under dedup key {row['dedup_key']!r}: the jobs holding it kept "
        f"finishing as this one was added ({_TRIES} tries); try again"
    )
