"""``QueueCore``: the logic of one named queue, written once against a connection.

Every method works in the connection (or ``Session``) it is given and never commits or rolls
back: the caller owns the transaction (``JobQueue`` runs each call in a short transaction of its
own, or in the caller's). The statements are Core's, built once (``flowstore.queue.statements``);
rows become ``Job`` objects directly (``flowstore.queue.claims``).

The core remembers the claims it made (job id -> claim token), so that ``acknowledge(job_id)``
proves the claim with a bare id.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, insert
from sqlalchemy.orm import Session

from flowstore import arguments
from flowstore.errors import InvalidInputError
from flowstore.models.enums import JobStatus
from flowstore.models.job import Job
from flowstore.models.types import utcnow
from flowstore.queue import values
from flowstore.queue.claims import (
    Claim,
    ClaimMemory,
    JobRef,
    LostClaimError,
    claim_order,
    default_worker_id,
    job_from_row,
    ordered_ids,
)
from flowstore.queue.guarded import current_claim, lost_acknowledgements, update_claimed
from flowstore.queue.statements import (
    ACK_ANY_CLAIM,
    ACK_CLAIMS,
    BURY_LOCKED,
    CLAIM_LOCKED,
    CLAIM_RETURNING,
    JOB_COLUMNS,
    JOBS,
    LOCK_CLAIMABLE,
    MYSQL_DIALECTS,
    columns,
)
from flowstore.queue.uniqueness import insert_once

__all__ = ["DEFAULT_BACKOFF_BASE", "DEFAULT_BACKOFF_MAX", "QueueCore", "connection_of"]

DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_MAX = 3600.0
MAX_QUEUE_NAME = 100
#: Retry times, lease ends and delays must stay before this (``datetime`` ends in year 9999).
LATEST = datetime(9999, 1, 1, tzinfo=UTC)

_c = columns
STATUS = JOB_COLUMNS.index(_c.status)
Target = Session | Connection


def connection_of(target: Target) -> Connection:
    """The connection a piece of queue work runs on: ``target`` itself, or the connection of a
    ``Session``'s transaction."""
    return target.connection() if isinstance(target, Session) else target


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class QueueCore:
    """The logic of one named queue (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        *,
        lease_seconds: float = 30,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        worker_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        arguments.text("a queue name", name, max_length=MAX_QUEUE_NAME)
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise InvalidInputError(f"worker_id must be a non-empty string, got {worker_id!r}")
        self.name = name
        self.lease_seconds = arguments.number("lease_seconds", lease_seconds)
        self.backoff_base = arguments.number("backoff_base", backoff_base)
        self.backoff_max = arguments.number("backoff_max", backoff_max)
        self.worker_id = worker_id[:255] if worker_id else None
        self._clock = clock or utcnow
        self.claims = ClaimMemory()
        now = self.now()
        longest = min(self.backoff_max, self.backoff_base * 2.0**64)
        for setting, seconds in (("backoff_max", longest), ("lease_seconds", self.lease_seconds)):
            self.later(now, seconds, setting)

    def __repr__(self) -> str:
        return f"QueueCore({self.name!r}, lease_seconds={self.lease_seconds:g})"

    # -- time ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The current time from this queue's clock (timezone-aware UTC)."""
        return arguments.aware("the queue clock's time", self._clock())

    def later(self, now: datetime, seconds: float | timedelta, what: str) -> datetime:
        """``now`` plus ``seconds``, refused (``InvalidInputError``) past the year 9998: a
        time the database could not store, or one no job would live to see."""
        try:
            delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
            moment = now + delta
        except OverflowError:
            moment = LATEST
        if moment >= LATEST:
            raise InvalidInputError(
                f"{what} is too large: it would put a job's time after the year 9998 ({seconds!r})"
            )
        return moment

    def backoff(self, attempts: int) -> timedelta:
        """How long a job waits after its ``attempts``-th run failed: exponential, capped."""
        exponent = min(max(attempts, 1) - 1, 64)
        return timedelta(seconds=min(self.backoff_max, self.backoff_base * 2.0**exponent))

    # -- enqueueing ------------------------------------------------------------------------

    def job_values(
        self,
        payload: Any,
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
        task: str | None = None,
        dedup_key: str | None = None,
        now: datetime | None = None,
        job_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """The column values of a new job, after checking every argument."""
        now = now or self.now()
        if run_at is None:
            due = now
        elif isinstance(run_at, timedelta):
            due = self.later(now, run_at, "run_at")
        else:
            due = arguments.aware("run_at", run_at)
        return {
            "id": job_id or ordered_ids(1)[0],
            "queue": self.name,
            "payload": values.payload(payload),
            "status": JobStatus.QUEUED,
            "priority": arguments.integer("priority", priority, minimum=-arguments.MAX_INT - 1),
            "run_at": due,
            "attempts": 0,
            "max_attempts": arguments.integer("max_attempts", max_attempts, minimum=1),
            "task": values.task_name(task),
            "dedup_key": values.dedup_key(dedup_key),
            "created_at": now,
            "updated_at": now,
        }

    def enqueue(self, target: Target, payload: Any, **options: Any) -> uuid.UUID:
        """Insert one queued job and return its id; with a ``dedup_key`` held by an unfinished
        job of this queue, that job's id, and nothing is inserted."""
        row = self.job_values(payload, **options)
        conn = connection_of(target)
        if row["dedup_key"] is not None:
            return insert_once(conn, row)
        conn.execute(insert(JOBS), [row])
        job_id: uuid.UUID = row["id"]
        return job_id

    def enqueue_many(
        self, target: Target, payloads: Iterable[Any], **options: Any
    ) -> builtins.list[uuid.UUID]:
        """Insert one queued job per payload (one batched INSERT); their ids, in order. They
        share their ``run_at`` and get increasing ids, so they are claimed in this order."""
        items = builtins.list(payloads)
        now = self.now()
        ids = ordered_ids(len(items))
        rows = [
            self.job_values(payload, now=now, job_id=job_id, **options)
            for payload, job_id in zip(items, ids, strict=True)
        ]
        if any(row["dedup_key"] is not None for row in rows):
            raise InvalidInputError("enqueue_many takes no dedup_key: enqueue such jobs one by one")
        if rows:
            connection_of(target).execute(insert(JOBS), rows)
        return ids

    # -- claiming --------------------------------------------------------------------------

    def claim(self, target: Target, n: int = 1) -> builtins.list[Job]:
        """Claim up to ``n`` due jobs (and jobs whose lease ran out) for a lease.

        They come highest priority first, then oldest due; their ``attempts`` count this
        claim. Jobs whose lease ran out are candidates first-expired first (``n`` of them),
        then compete by that order. A job whose lease ran out on its last attempt is made
        dead instead.
        """
        n = arguments.integer("n", n, minimum=0)
        if n == 0:
            return []
        now = self.now()
        params = {
            "queue_name": self.name,
            "n": n,
            "now": now,
            "lease_until": now + timedelta(seconds=self.lease_seconds),
            "token": uuid.uuid4(),
            "worker": self.worker_id or default_worker_id(),
        }
        conn = connection_of(target)
        if conn.dialect.name in MYSQL_DIALECTS:
            jobs = self._claim_locked(conn, params)
        else:
            rows = conn.execute(CLAIM_RETURNING, params).all()
            jobs = [job_from_row(row) for row in rows if row[STATUS] is JobStatus.RUNNING]
        jobs.sort(key=claim_order)
        self.claims.remember(jobs)
        return jobs

    def _claim_locked(self, conn: Connection, params: dict[str, Any]) -> builtins.list[Job]:
        # Two ordered, locked index ranges, merged here; rows locked but not taken are free
        # again when this short transaction ends.
        locked = [job_from_row(row) for row in conn.execute(LOCK_CLAIMABLE, params)]
        locked.sort(key=claim_order)
        picked = locked[: params["n"]]
        claimed = [job for job in picked if job.attempts < job.max_attempts]
        spent = [job for job in picked if job.attempts >= job.max_attempts]
        if claimed:
            conn.execute(CLAIM_LOCKED, {**params, "ids": [job.id for job in claimed]})
            for job in claimed:
                job.__dict__.update(
                    status=JobStatus.RUNNING,
                    attempts=job.attempts + 1,
                    lease_expires_at=params["lease_until"],
                    claim_token=params["token"],
                    locked_by=params["worker"],
                    updated_at=params["now"],
                )
        if spent:
            conn.execute(BURY_LOCKED, {**params, "ids": [job.id for job in spent]})
        return claimed

    # -- settling a claim ------------------------------------------------------------------

    def acknowledge(self, target: Target, ref: JobRef) -> None:
        """Mark a claimed job done; ``LostClaimError`` if the claim is no longer current.
        Acknowledging again under the same claim is a no-op."""
        lost = self._acknowledge(connection_of(target), [self.claims.claim_of(ref)])
        if lost:
            raise lost[0]

    def acknowledge_many(
        self, target: Target, refs: Iterable[JobRef]
    ) -> builtins.list[LostClaimError]:
        """Mark every job still held done (one UPDATE per claim); the errors of the others.

        Lost claims are returned, not raised, so that the caller can commit the jobs that were
        acknowledged before it reports them. An unknown id raises ``NotFoundError``.
        """
        claims = [self.claims.claim_of(ref) for ref in refs]
        return self._acknowledge(connection_of(target), claims)

    def _acknowledge(
        self, conn: Connection, claims: Sequence[Claim]
    ) -> builtins.list[LostClaimError]:
        groups: dict[uuid.UUID | None, builtins.list[Claim]] = {}
        for claim in claims:
            groups.setdefault(claim.token, []).append(claim)
        now = self.now()
        unsure: builtins.list[Claim] = []
        for token, group in groups.items():
            ids = builtins.list({claim.id for claim in group})
            if token is None:
                result = conn.execute(ACK_ANY_CLAIM, {"ids": ids, "now": now})
            else:
                result = conn.execute(ACK_CLAIMS, {"ids": ids, "now": now, "token": token})
            if _rowcount(result) != len(ids):
                unsure.extend(group)
        errors = lost_acknowledgements(conn, unsure)
        # A lost claim stays remembered, so that a retry by bare id keeps failing instead of
        # settling the run of the worker that holds the job now.
        lost = {error.job_id for error in errors}
        self.claims.forget(claim.id for claim in claims if claim.id not in lost)
        return errors

    def fail(self, target: Target, ref: JobRef, error: Any, *, retry: bool = True) -> JobStatus:
        """Record a failed run: queued again after a backoff while it has attempts left (and
        ``retry``), else dead and kept with its last error. Returns the new status."""
        message = values.error_text(error)
        conn = connection_of(target)
        claim = self.claims.claim_of(ref)
        if claim.token is None or claim.attempts is None or claim.max_attempts is None:
            claim = current_claim(conn, claim, "fail")
        attempts, max_attempts = claim.attempts or 0, claim.max_attempts or 1
        now = self.now()
        changes: dict[str, Any] = {"last_error": message, "lease_expires_at": None}
        if retry and attempts < max_attempts:
            status = JobStatus.QUEUED
            changes.update(
                status=status,
                run_at=self.later(now, self.backoff(attempts), "the retry's backoff"),
                claim_token=None,
                locked_by=None,
            )
        else:
            status = JobStatus.DEAD
            changes.update(status=status, finished_at=now)
        self._settle(conn, claim, {**changes, "updated_at": now}, "fail")
        return status

    def release(self, target: Target, ref: JobRef) -> None:
        """Give back a claimed job that was not started: due at once, attempt not counted."""
        changes = {
            "status": JobStatus.QUEUED,
            "attempts": case((_c.attempts > 0, _c.attempts - 1), else_=0),
            "lease_expires_at": None,
            "claim_token": None,
            "locked_by": None,
            "updated_at": self.now(),
        }
        self._settle(connection_of(target), self.claims.claim_of(ref), changes, "release")

    def heartbeat(
        self, target: Target, ref: JobRef, *, lease_seconds: float | None = None
    ) -> datetime:
        """Extend a claimed job's lease by ``lease_seconds`` (default: the queue's) from now;
        the lease's new end. ``LostClaimError`` if the claim was lost meanwhile."""
        seconds = (
            self.lease_seconds
            if lease_seconds is None
            else arguments.number("lease_seconds", lease_seconds)
        )
        now = self.now()
        until = self.later(now, seconds, "lease_seconds")
        changes = {"lease_expires_at": until, "updated_at": now}
        claim = self.claims.claim_of(ref)
        self._settle(connection_of(target), claim, changes, "extend the lease of", keep=True)
        return until

    def _settle(
        self,
        conn: Connection,
        claim: Claim,
        changes: dict[str, Any],
        verb: str,
        *,
        keep: bool = False,
    ) -> None:
        """One guarded UPDATE of a job running under ``claim``; raises if the claim is lost."""
        update_claimed(conn, claim, changes, verb)
        if not keep:
            self.claims.forget([claim.id])
