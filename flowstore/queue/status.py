"""What the queues hold, for operators (``flowstore queue status``): per queue and status the
counts, the age of the oldest job that is due and waiting, and the dead jobs with their last
error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, text

from flowstore.models.enums import JobStatus
from flowstore.models.job import ACTIVE_JOB_PREDICATE
from flowstore.queue.statements import columns

__all__ = ["DeadJob", "QueueStatus", "queue_status"]

_c = columns


@dataclass(frozen=True)
class DeadJob:
    """A dead job as the status shows it."""

    id: str
    attempts: int
    finished_at: str | None
    last_error: str | None


@dataclass
class QueueStatus:
    """One queue: jobs per status, the oldest due job's age (seconds; ``None`` when none is
    due), and its most recent dead jobs."""

    queue: str
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in JobStatus})
    oldest_due_seconds: float | None = None
    dead: list[DeadJob] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_status(
    conn: Connection, now: datetime, *, queue: str | None = None, dead_limit: int = 5
) -> list[QueueStatus]:
    """The status of every queue that has jobs (or of ``queue``), by name."""
    where = [] if queue is None else [_c.queue == queue]
    found: dict[str, QueueStatus] = {}
    if queue is not None:
        found[queue] = QueueStatus(queue)
    rows = conn.execute(
        select(_c.queue, _c.status, func.count()).where(*where).group_by(_c.queue, _c.status)
    )
    for name, status, count in rows:
        found.setdefault(name, QueueStatus(name)).counts[JobStatus(status).value] = int(count)
    oldest = conn.execute(
        select(_c.queue, func.min(_c.run_at))
        .where(
            *where,
            _c.status == JobStatus.QUEUED,
            _c.run_at <= now,
            text(ACTIVE_JOB_PREDICATE),
        )
        .group_by(_c.queue)
    )
    for name, run_at in oldest:
        if name in found and run_at is not None:
            found[name].oldest_due_seconds = round((now - run_at).total_seconds(), 3)
    for entry in found.values():
        if entry.counts[JobStatus.DEAD.value] == 0:
            continue
        dead = conn.execute(
            select(_c.id, _c.attempts, _c.finished_at, _c.last_error)
            .where(_c.queue == entry.queue, _c.status == JobStatus.DEAD)
            .order_by(_c.finished_at.desc(), _c.id.desc())
            .limit(dead_limit)
        )
        entry.dead = [
            DeadJob(
                str(row.id),
                row.attempts,
                row.finished_at.isoformat() if row.finished_at else None,
                row.last_error,
            )
            for row in dead
        ]
    return [found[name] for name in sorted(found)]
