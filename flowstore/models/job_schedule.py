"""Periodic jobs of the durable queue: a cron expression per queue and name, and when it is
next due.

``JobQueue.schedule`` creates or replaces one; ``JobQueue.enqueue_scheduled`` (which workers
call as they poll) enqueues a job for each schedule whose ``next_run_at`` has come and moves
``next_run_at`` to the next tick in the same transaction, with an UPDATE guarded by the value it
read, so a tick is enqueued once however many workers call it at the same moment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Base, CopyOf, utcnow


class JobSchedule(Base):
    __tablename__ = "job_schedules"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: A 5-field cron expression, read in UTC.
    cron: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(default=0)
    task: Mapped[str | None] = mapped_column(String(100), default=None)
    max_attempts: Mapped[int] = mapped_column(default=5)
    #: The next tick: a job is enqueued once this has come.
    next_run_at: Mapped[datetime]
    #: The tick of the job enqueued last, if any.
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        default=CopyOf("created_at", utcnow), onupdate=utcnow
    )

    def __repr__(self) -> str:
        return f"<JobSchedule {self.queue}/{self.name} {self.cron!r} next={self.next_run_at}>"
