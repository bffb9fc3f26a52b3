"""``JobQueue``: the public face of one named queue, each call in a transaction (its own, or
the caller's: ``flowstore.queue.execution``), the logic in ``QueueCore``."""

from __future__ import annotations

import builtins
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar, Unpack, cast

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from flowstore import arguments
from flowstore.errors import InvalidInputError
from flowstore.models.enums import JobStatus
from flowstore.models.job import Job
from flowstore.queue import maintenance, schedules
from flowstore.queue.claims import JobRef, LostClaimError
from flowstore.queue.core import QueueCore
from flowstore.queue.execution import Execution, execution_for
from flowstore.queue.schedules import Schedule
from flowstore.repositories.keys import coerce_id
from flowstore.sessions import CallerSession, SessionSource, ShortTransactions

__all__ = ["JobQueue", "JobRef", "QueueOptions", "session_source"]

log = logging.getLogger("flowstore.queue")

R = TypeVar("R")


class QueueOptions(TypedDict, total=False):
    """The keyword options of a queue (``QueueCore``'s, with its defaults), which
    ``JobQueue`` and ``JobQueue.in_session`` pass on as they are."""

    lease_seconds: float
    backoff_base: float
    backoff_max: float
    worker_id: str | None
    clock: Callable[[], datetime] | None


def session_source(target: Any) -> SessionSource:
    """``target`` as the source of a queue's sessions: a ``SessionSource`` as it is, or
    anything with a ``session_factory`` (a ``Store``) as short transactions of its own."""
    if callable(getattr(target, "transaction", None)):
        return cast(SessionSource, target)
    factory = getattr(target, "session_factory", None)
    if factory is None:
        raise InvalidInputError(f"a queue needs a session source or a store, got {target!r}")
    return ShortTransactions(factory, repr(target))


class JobQueue:
    """The job queue ``name``: enqueue, claim, acknowledge and fail jobs.

    It works in the sessions of a ``flowstore.sessions.SessionSource``: short transactions of
    its own (``store.queue(name)``, for workers), or the caller's transaction
    (``uow.queue(name)``, ``JobQueue.in_session(session, name)``), so that a job is enqueued
    (or a claim made) only if that transaction commits.

    ``lease_seconds`` is how long a claim lasts unless extended (``heartbeat``); a failed run
    waits ``backoff_base * 2 ** (attempts - 1)`` seconds, at most ``backoff_max`` (a setting
    that would put a retry past the year 9998 is refused here).
    """

    def __init__(
        self, source: SessionSource | Any, name: str = "default", **options: Unpack[QueueOptions]
    ) -> None:
        self.core = QueueCore(name, **options)
        self.source = session_source(source)
        self.execution: Execution = execution_for(self.source)

    @classmethod
    def in_session(
        cls, session: Session, name: str = "default", **options: Unpack[QueueOptions]
    ) -> JobQueue:
        """The queue ``name`` working in ``session``'s transaction (it never commits it)."""
        return cls(CallerSession(session), name, **options)

    def __repr__(self) -> str:
        return f"JobQueue({self.name!r}, {self.source.describe()})"

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.core.name

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts unless extended."""
        return self.core.lease_seconds

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, this thread's calls of this queue share one connection (no pool
        checkout or pre-ping per call): for a worker's loop. A broken connection is replaced
        at the next call. The caller's transaction (``uow.queue``) is unaffected."""
        return self.execution.pinned()

    def run(self, work: Callable[[Connection], R], *, single: bool = False) -> R:
        """Run ``work`` on a connection of the queue's transactions (its own, or the
        caller's); ``single``: ``work`` sends one writing statement."""
        return self.execution.run(work, single=single)

    # -- the contract ----------------------------------------------------------------------

    def enqueue(
        self,
        payload: dict[str, Any],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
        task: str | None = None,
        dedup_key: str | None = None,
    ) -> uuid.UUID:
        """Add a job and return its id. ``run_at`` (an aware datetime, or a delay) is when it
        is due, default now; higher ``priority`` runs first; ``max_attempts`` is at least 1;
        ``task`` names the handler of a worker serving several (``flowstore.queue.Tasks``).

        With ``dedup_key``: while a job of this queue holding that key is queued or running,
        nothing is added and that job's id is returned (the database enforces it, also under
        concurrent enqueues); once it finished, a new one may start.
        """
        options = {
            "run_at": run_at,
            "priority": priority,
            "max_attempts": max_attempts,
            "task": task,
            "dedup_key": dedup_key,
        }
        return self.execution.run(
            lambda conn: self.core.enqueue(conn, payload, **options),
            single=dedup_key is None,
            retries=3 if dedup_key is not None else 0,
        )

    def dequeue(self) -> Job | None:
        """Claim the next due job (highest priority, then oldest due) for a lease, or ``None``."""
        jobs = self.dequeue_many(1)
        return jobs[0] if jobs else None

    def dequeue_many(self, n: int) -> builtins.list[Job]:
        """Claim up to ``n`` due jobs at once, in claim order."""
        return self.execution.run(lambda conn: self.core.claim(conn, n), single=True)

    def acknowledge(self, job: JobRef) -> bool:
        """Mark a claimed job done; ``True`` when it is done under this claim.

        ``False`` (logged) when the claim was lost: the lease ran out and another worker
        claimed the job, whose run is left alone, or the job was never claimed. A lost lease
        is a normal event for a worker, so it is reported, not raised. ``NotFoundError`` for
        an unknown id.
        """
        try:
            self.execution.run(lambda conn: self.core.acknowledge(conn, job), single=True)
        except LostClaimError as lost:
            log.warning("%s", lost)
            return False
        return True

    def acknowledge_many(self, jobs: Iterable[JobRef]) -> int:
        """Mark claimed jobs done in one transaction (one statement per claim); how many were.
        Jobs whose claim was lost are left alone (and logged), as with :meth:`acknowledge`."""
        refs = builtins.list(jobs)
        tokens = {ref.claim_token for ref in refs if isinstance(ref, Job)}
        single = len(tokens) <= 1 and all(isinstance(ref, Job) for ref in refs)
        lost = self.execution.run(
            lambda conn: self.core.acknowledge_many(conn, refs), single=single
        )
        for error in lost:
            log.warning("%s", error)
        return len({ref.id if isinstance(ref, Job) else coerce_id(ref) for ref in refs}) - len(lost)

    def fail(self, job: JobRef, error: str | BaseException, retry: bool = True) -> JobStatus:
        """Record a failed run: queued again after an exponential backoff while attempts are
        left (and ``retry``), else dead and kept with ``error``. Returns the new status.

        When the claim was lost (see :meth:`acknowledge`) the job is left alone, the loss is
        logged, and its current status is returned.
        """
        try:
            return self.execution.run(
                lambda conn: self.core.fail(conn, job, error, retry=retry), single=True
            )
        except LostClaimError as lost:
            log.warning("%s", lost)
            return lost.status

    def get(self, job_id: JobRef) -> Job:
        """The job with this id; ``NotFoundError`` if there is none."""
        return self.execution.run(lambda conn: maintenance.get(conn, job_id), single=True)

    def cancel(self, job_id: JobRef) -> bool:
        """Cancel a queued job: it becomes ``cancelled`` and is never claimed. ``False`` when
        it was not queued (running or finished); ``NotFoundError`` for an unknown id."""
        now = self.core.now()
        return self.execution.run(lambda conn: maintenance.cancel(conn, job_id, now), single=True)

    def requeue(self, job_id: JobRef) -> bool:
        """Queue a dead or cancelled job again, due now, with ``attempts`` back at 0; ``False``
        for a job in another status. ``AlreadyExistsError`` while another unfinished job holds
        its ``dedup_key``."""
        now = self.core.now()
        return self.execution.run(lambda conn: maintenance.requeue(conn, job_id, now))

    # -- periodic jobs ---------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        cron: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        task: str | None = None,
        max_attempts: int = 5,
    ) -> Schedule:
        """Create or replace the periodic job ``name`` of this queue: a job with ``payload``
        at every tick of ``cron`` (5 fields, UTC), enqueued by :meth:`enqueue_scheduled`."""
        now = self.core.now()
        values = self.core.job_values(
            payload if payload is not None else {},
            priority=priority,
            max_attempts=max_attempts,
            task=task,
            now=now,
        )
        row = {
            "queue": self.name,
            "name": schedules.schedule_name(name),
            "cron": schedules.check_cron(cron),
            "payload": values["payload"],
            "priority": values["priority"],
            "task": values["task"],
            "max_attempts": values["max_attempts"],
            "next_run_at": schedules.next_tick(cron, now),
            "last_run_at": None,
            "created_at": now,
            "updated_at": now,
        }
        self.execution.run(lambda conn: schedules.save_schedule(conn, row))
        return Schedule(**{k: v for k, v in row.items() if k not in {"created_at", "updated_at"}})

    def unschedule(self, name: str) -> bool:
        """Remove the periodic job ``name`` of this queue; whether there was one."""
        return self.execution.run(lambda conn: schedules.delete_schedule(conn, self.name, name))

    def schedules(self) -> builtins.list[Schedule]:
        """This queue's periodic jobs, by name, with their next tick."""
        return self.execution.run(lambda conn: schedules.list_schedules(conn, self.name))

    def enqueue_scheduled(self, now: datetime | None = None) -> int:
        """Enqueue a job for each periodic job of this queue whose tick has come (at ``now``,
        default the queue's clock), once per tick however many callers run at the same moment;
        how many this call enqueued."""
        moment = self.core.now() if now is None else arguments.aware("now", now)

        def work(conn: Connection) -> int:
            enqueued = 0
            for due in schedules.due_schedules(conn, self.name, moment):
                if schedules.take_tick(conn, due, moment):
                    self.core.enqueue(
                        conn,
                        due.payload,
                        run_at=due.next_run_at,
                        priority=due.priority,
                        max_attempts=due.max_attempts,
                        task=due.task,
                    )
                    enqueued += 1
            return enqueued

        return self.execution.run(work, retries=3)

    # -- beyond the contract ---------------------------------------------------------------

    def enqueue_many(
        self,
        payloads: Iterable[dict[str, Any]],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
        task: str | None = None,
    ) -> builtins.list[uuid.UUID]:
        """Add one job per payload, all or none; their ids, in order. They are claimed in
        this order (among jobs of equal priority)."""
        items = builtins.list(payloads)
        options = {"run_at": run_at, "priority": priority, "max_attempts": max_attempts}
        return self.execution.run(
            # In a transaction even on PostgreSQL: a large batch may go as several statements.
            lambda conn: self.core.enqueue_many(conn, items, task=task, **options)
        )

    def heartbeat(self, job: JobRef, *, lease_seconds: float | None = None) -> datetime:
        """Extend a claimed job's lease (for long jobs); the lease's new end."""
        return self.execution.run(
            lambda conn: self.core.heartbeat(conn, job, lease_seconds=lease_seconds), single=True
        )

    extend_lease = heartbeat

    def release(self, job: JobRef) -> None:
        """Give back a claimed job that was not started: due at once, attempt not counted."""
        self.execution.run(lambda conn: self.core.release(conn, job), single=True)

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs of this queue are in each status."""
        return self.execution.run(lambda conn: maintenance.counts(conn, self.name), single=True)

    def purge(
        self,
        older_than: datetime | timedelta,
        *,
        include_dead: bool = True,
        batch_size: int = 1000,
    ) -> int:
        """Delete this queue's done (and dead) jobs that finished before ``older_than`` (an
        age, or an aware datetime), ``batch_size`` rows per transaction; how many went.
        Cancelled jobs go with the dead ones."""
        if isinstance(older_than, timedelta):
            if older_than < timedelta(0):
                raise InvalidInputError(f"older_than must not be negative, got {older_than!r}")
            cutoff = self.core.now() - older_than
        else:
            cutoff = arguments.aware("older_than", older_than)
        limit = arguments.integer("batch_size", batch_size, minimum=1)
        statuses = [JobStatus.DONE]
        if include_dead:
            statuses += [JobStatus.DEAD, JobStatus.CANCELLED]
        total = 0
        while True:
            deleted = self.execution.run(
                lambda conn: maintenance.purge_batch(conn, self.name, cutoff, statuses, limit)
            )
            total += deleted
            if deleted < limit:
                return total
