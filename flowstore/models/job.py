"""Jobs of the durable queue (``flowstore.queue``), kept in the application's own database.

A job is ``queued`` until it is due (``run_at``) and claimed, ``running`` while a worker holds
its lease (``lease_expires_at``, ``claim_token``), then ``done``, or ``dead`` once it failed
``max_attempts`` times, or ``cancelled`` before it ran. Finished rows stay until
``JobQueue.purge`` removes them.

``dedup_key`` is a queueing lock: the database holds at most one unfinished job per queue and
key. ``live_dedup_key`` is a column the database computes (the key while the job is unfinished,
else NULL) and a unique index covers it, so the lock holds whoever inserts, also under
concurrent enqueues; MySQL/MariaDB have no partial indexes, and the generated column gives
them the same rule.

Jobs are not ``Entity`` rows: the queue changes them with guarded ``UPDATE`` statements, never
through the ORM unit of work, so the claim token (not a ``lock_version``) is what detects a
worker that lost its lease.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Computed, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Base, CopyOf, str_enum, utcnow, uuid7
from flowstore.models.enums import JobStatus

#: The key while the job is unfinished, else NULL: what the dedup index covers.
LIVE_DEDUP_KEY = "CASE WHEN finished_at IS NULL THEN dedup_key ELSE NULL END"
# Unfinished jobs (queued or running) are exactly those without ``finished_at`` (a CHECK holds
# it). The claim index covers them only, and the claim queries repeat this predicate as text:
# SQLite uses a partial index only for a query that repeats its WHERE terms literally (and
# keeps the index order only for this form, not for ``status IN (...)``).
ACTIVE_JOB_PREDICATE = "finished_at IS NULL"
FINISHED_JOB_PREDICATE = "finished_at IS NOT NULL"


class Job(Base):
    __tablename__ = "jobs"
    __events__ = False  # the queue's own bookkeeping records no change events
    __table_args__ = (
        CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint(
            "(finished_at IS NULL) = (status IN ('queued', 'running'))",
            name="finished_at_iff_finished",
        ),
        # Purging: the finished jobs of a queue, by age (partial where possible, so that it
        # never looks like a way to find unfinished jobs).
        Index(
            "ix_jobs_queue_finished_at",
            "queue",
            "finished_at",
            postgresql_where=text(FINISHED_JOB_PREDICATE),
            sqlite_where=text(FINISHED_JOB_PREDICATE),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    queue: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[JobStatus] = mapped_column(
        str_enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    priority: Mapped[int] = mapped_column(default=0)
    #: When the job is (next) due: its schedule, or the end of a retry's backoff.
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: How many times the job was claimed (a claim whose worker died counts too).
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: While running: when the worker's lease runs out and the job may be claimed again.
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Fresh for every claim; acknowledging or failing must present it.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(default=None)
    locked_by: Mapped[str | None] = mapped_column(String(255), default=None)
    #: The named task whose handler runs the job (``Tasks``), if the queue serves several.
    task: Mapped[str | None] = mapped_column(String(100), default=None)
    #: A queueing lock: at most one unfinished job of a queue holds a given key.
    dedup_key: Mapped[str | None] = mapped_column(String(255), default=None)
    #: ``dedup_key`` while the job is unfinished, else NULL (computed by the database).
    live_dedup_key: Mapped[str | None] = mapped_column(
        String(255), Computed(LIVE_DEDUP_KEY, persisted=True)
    )
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        default=CopyOf("created_at", utcnow), onupdate=utcnow
    )

    def __repr__(self) -> str:
        return (
            f"<Job id={self.id} queue={self.queue!r} status={self.status} attempts={self.attempts}>"
        )


def _unfinished_jobs_index(name: str, *columns: Any) -> Index:
    """An index of the jobs of a queue by status, then ``columns``, then claim order (highest
    priority first, oldest due, id). PostgreSQL and SQLite index unfinished jobs only, so
    millions of finished rows cost nothing; MySQL/MariaDB have no partial indexes, and there
    the leading (queue, status) keeps finished rows out of the scanned range."""
    return Index(
        name,
        Job.queue,
        Job.status,
        *columns,
        Job.priority.desc(),
        Job.run_at,
        Job.id,
        postgresql_where=text(ACTIVE_JOB_PREDICATE),
        sqlite_where=text(ACTIVE_JOB_PREDICATE),
    )


# Claiming queued jobs reads this index in order and stops at its LIMIT.
_unfinished_jobs_index("ix_jobs_claim")
# Taking back jobs whose lease ran out reads this one: the running jobs of a queue by lease
# end (then, for the jobs of one claim, in claim order), so that the expired ones are an index
# range at its start, however many jobs are in flight (through ix_jobs_claim, finding them
# meant reading every running job's entry).
_unfinished_jobs_index("ix_jobs_lease", Job.lease_expires_at)
# The queueing lock: one unfinished job per queue and dedup key (NULLs never collide). Partial
# where the database can (only jobs that carry a key); plain on MySQL/MariaDB.
Index(
    "ux_jobs_dedup",
    Job.queue,
    Job.live_dedup_key,
    unique=True,
    postgresql_where=text("live_dedup_key IS NOT NULL"),
    sqlite_where=text("live_dedup_key IS NOT NULL"),
)
