"""Reading jobs and changing them from outside a claim: ``get``, ``counts``, ``cancel``,
``requeue`` and ``purge``. Each function works in the connection it is given."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, text, update
from sqlalchemy import exc as sa_exc

from flowstore.errors import AlreadyExistsError, NotFoundError
from flowstore.models.enums import JobStatus
from flowstore.models.job import Job
from flowstore.queue.claims import job_from_row
from flowstore.queue.statements import JOB_COLUMNS, JOBS, columns
from flowstore.repositories.keys import coerce_id

__all__ = ["NOTIFY_CHANNEL", "cancel", "counts", "get", "job_key", "purge_batch", "requeue"]

#: The PostgreSQL channel on which a committed job is announced (its queue's name as payload).
NOTIFY_CHANNEL = "flowstore_jobs"

_c = columns


def job_key(job_id: Any) -> uuid.UUID:
    """``job_id`` (a ``Job``, a UUID or its text) as a job's key; ``NotFoundError`` if it
    cannot be one."""
    key = coerce_id(job_id.id if isinstance(job_id, Job) else job_id)
    if key is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return key


def get(conn: Connection, job_id: Any) -> Job:
    """The job with this id (in any queue); ``NotFoundError`` if there is none."""
    row = conn.execute(select(*JOB_COLUMNS).where(_c.id == job_key(job_id))).first()
    if row is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return job_from_row(row)


def counts(conn: Connection, queue: str) -> dict[JobStatus, int]:
    """How many jobs of ``queue`` are in each status (every status is a key)."""
    found = dict.fromkeys(JobStatus, 0)
    rows = conn.execute(
        select(_c.status, func.count()).where(_c.queue == queue).group_by(_c.status)
    )
    for status, count in rows:
        found[JobStatus(status)] = int(count)
    return found


def _exists(conn: Connection, key: uuid.UUID) -> bool:
    return conn.execute(select(_c.id).where(_c.id == key)).first() is not None


def cancel(conn: Connection, job_id: Any, now: datetime) -> bool:
    """Make a queued job cancelled (finished: never claimed); ``False`` when it was not queued
    (running, finished), ``NotFoundError`` when there is no such job."""
    key = job_key(job_id)
    result = conn.execute(
        update(JOBS)
        .where(_c.id == key, _c.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, finished_at=now, updated_at=now)
    )
    if result.rowcount:
        return True
    if not _exists(conn, key):
        raise NotFoundError(f"job {job_id!r} not found")
    return False


def requeue(conn: Connection, job_id: Any, now: datetime) -> bool:
    """Queue a dead or cancelled job again, due now, with ``attempts`` back at 0 (its
    ``last_error`` stays, for the record); ``False`` for a job in another status.
    ``AlreadyExistsError`` when another unfinished job holds its ``dedup_key`` now."""
    key = job_key(job_id)
    statement = (
        update(JOBS)
        .where(_c.id == key, _c.status.in_([JobStatus.DEAD, JobStatus.CANCELLED]))
        .values(
            status=JobStatus.QUEUED,
            attempts=0,
            run_at=now,
            finished_at=None,
            lease_expires_at=None,
            claim_token=None,
            locked_by=None,
            updated_at=now,
        )
    )
    try:
        result = conn.execute(statement)
    except sa_exc.IntegrityError:
        raise AlreadyExistsError(
            f"job {job_id!r} cannot be queued again: another unfinished job holds its dedup_key"
        ) from None
    if not result.rowcount:
        if not _exists(conn, key):
            raise NotFoundError(f"job {job_id!r} not found")
        return False
    if conn.dialect.name == "postgresql":  # wake the waiting workers, as an insert does
        queue = conn.execute(select(_c.queue).where(_c.id == key)).scalar_one()
        conn.execute(
            text("SELECT pg_notify(:channel, :queue)"), {"channel": NOTIFY_CHANNEL, "queue": queue}
        )
    return True


def purge_batch(
    conn: Connection, queue: str, cutoff: datetime, statuses: Sequence[JobStatus], limit: int
) -> int:
    """Delete up to ``limit`` jobs of ``queue`` in ``statuses`` finished before ``cutoff``."""
    ids = list(
        conn.scalars(
            select(_c.id)
            .where(_c.queue == queue, _c.finished_at < cutoff, _c.status.in_(statuses))
            .limit(limit)
        )
    )
    if not ids:
        return 0
    return int(conn.execute(delete(JOBS).where(_c.id.in_(ids))).rowcount or 0)
