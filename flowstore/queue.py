"""``JobQueue``: a durable job queue in the application's own database.

Jobs are rows of the ``jobs`` table (``flowstore.models.Job``), so they can be enqueued in the
same transaction as the data they are about (``uow.queue(name).enqueue(...)``), and they are
processed by many workers without a second system to run.

Claiming is safe under concurrent workers on every backend:

* PostgreSQL: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``;
* MySQL/MariaDB: ``SELECT ... FOR UPDATE SKIP LOCKED``, then the ``UPDATE``, in one short
  transaction;
* SQLite: the same single ``UPDATE ... RETURNING``; SQLite takes its write lock when the
  statement starts, so two processes can never both claim a job.

Jobs are claimed highest priority first, then oldest due. A claim sets a lease
(``lease_expires_at``) and a fresh ``claim_token``; a job whose lease ran out is claimable
again and its ``attempts`` count up (one that runs out of leases on its last attempt is dead).
``acknowledge``, ``fail``, ``heartbeat`` and ``release`` change a job only while the caller's
claim is still the current one, so a worker that lost its lease cannot settle the run of the
worker that claimed the job after it: ``acknowledge`` returns ``False`` and ``fail`` the job's
current status (a lost lease is routine for a worker), while ``heartbeat`` and ``release``
raise ``LostClaimError`` (a ``ConcurrencyError``). They take the ``Job`` that
``dequeue`` returned, or its id when this queue object made the claim; an id this object did
not claim is trusted to mean the job's current claim.

Times come from the workers' clocks (``clock``, default UTC now): keep hosts in sync (NTP) and
leases much longer than the skew between them.

The queue logic is written once, against a ``Session``, in ``QueueCore``: every method takes
the session to work in and never commits. ``JobQueue`` runs each call either in its own short
transaction (``JobQueue(store, name)``, what ``store.queue()`` returns) or in the caller's
(``JobQueue.in_session(session, name)``, what ``uow.queue()`` returns). An async face wraps
the same core: ``await async_session.run_sync(core.claim, n)``.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, TypeVar, Unpack, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from flowstore.errors import ConcurrencyError, InvalidInputError, NotFoundError, translating
from flowstore.models.base import utcnow, uuid7
from flowstore.models.enums import JobStatus
from flowstore.models.job import ACTIVE_JOB_PREDICATE, Job
from flowstore.repositories.keys import coerce_id
from flowstore.sessions import CallerSession, SessionSource, ShortTransactions

log = logging.getLogger(__name__)

__all__ = ["JobQueue", "JobRef", "LostClaimError", "QueueCore", "default_worker_id"]

R = TypeVar("R")

#: A job as the queue's methods take it: the ``Job`` that ``dequeue`` returned, or its id.
JobRef = Job | uuid.UUID | str

MAX_QUEUE_NAME = 100
MAX_ERROR_CHARS = 8000
MAX_INT = 2**31 - 1
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_MAX = 3600.0
LEASE_LOST_ERROR = "lease ran out on the last attempt (the worker was lost)"


def default_worker_id() -> str:
    """``host:pid``: who holds a claim, for people inspecting the jobs table."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


# -- the hot statements, built once (building them per call costs more than running them) --

_JOBS = cast(Table, Job.__table__)
_c = _JOBS.c
_TIME = _c.run_at.type
_STATUS = _c.status.type
_NOW = bindparam("now", type_=_TIME)
_LEASE_UNTIL = bindparam("lease_until", type_=_TIME)
_LIMIT = bindparam("n", type_=Integer())
_QUEUE = bindparam("queue_name", type_=_c.queue.type)
_TOKEN = bindparam("token", type_=_c.claim_token.type)
_IDS = bindparam("ids", expanding=True, type_=_c.id.type)
# The two kinds of claimable job, each read off its index in that index's order: queued and
# due (ix_jobs_claim: claim order), or running with its lease run out (ix_jobs_lease: the
# leases that ran out first come first, the jobs of one claim in claim order; the range holds
# only expired leases, so a claim never reads the entries of the jobs in flight). The claim
# then orders the candidates of both by claim order.
_CLAIMABLE = (
    (JobStatus.QUEUED, _c.run_at <= _NOW, (_c.priority.desc(), _c.run_at, _c.id)),
    (
        JobStatus.RUNNING,
        _c.lease_expires_at <= _NOW,
        (_c.lease_expires_at, _c.priority.desc(), _c.run_at, _c.id),
    ),
)


def _claimable(
    status: JobStatus,
    due: ColumnElement[bool],
    order: tuple[Any, ...],
    *columns: Any,
    partial: bool = True,
) -> Select[Any]:
    """Claimable jobs in one status, in ``order`` (their index's), at most ``n``, locked.

    With ``partial``, the query repeats the partial index's predicate as written, so that
    SQLite (which matches partial-index terms literally) and PostgreSQL's generic plans use
    it; MySQL has no partial index, and the term would only tempt it to another index.
    """
    stmt = select(*columns).where(_c.queue == _QUEUE, _c.status == status, due)
    if partial:
        stmt = stmt.where(text(ACTIVE_JOB_PREDICATE))
    return stmt.order_by(*order).limit(_LIMIT).with_for_update(skip_locked=True)


def _claim_in_one_statement() -> Any:
    """PostgreSQL and SQLite: pick, lock and claim in one ``UPDATE ... RETURNING``.

    A picked job whose lease ran out with no attempt left is made dead instead of claimed.
    """
    arms = [
        _claimable(status, due, order, _c.id, _c.priority, _c.run_at).subquery()
        for status, due, order in _CLAIMABLE
    ]
    candidates = union_all(*(select(arm) for arm in arms)).subquery()
    # Materialized, so that the locking pick runs exactly once, whatever the plan: a
    # rescanned SKIP LOCKED subquery could pick other rows the second time.
    picked = (
        select(candidates.c.id)
        .order_by(candidates.c.priority.desc(), candidates.c.run_at, candidates.c.id)
        .limit(_LIMIT)
        .cte("picked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    spent = _c.attempts >= _c.max_attempts
    return (
        update(_JOBS)
        .where(_c.id.in_(select(picked.c.id)))
        .values(
            status=case(
                (spent, literal(JobStatus.DEAD, _STATUS)),
                else_=literal(JobStatus.RUNNING, _STATUS),
            ),
            attempts=case((spent, _c.attempts), else_=_c.attempts + 1),
            lease_expires_at=case((spent, None), else_=_LEASE_UNTIL),
            finished_at=case((spent, _NOW), else_=None),
            last_error=case((spent, literal(LEASE_LOST_ERROR)), else_=_c.last_error),
            claim_token=_TOKEN,
            locked_by=bindparam("worker", type_=_c.locked_by.type),
            updated_at=_NOW,
        )
        .returning(*_JOBS.c)
    )


_CLAIM_RETURNING = (
    select(Job).from_statement(_claim_in_one_statement()).execution_options(populate_existing=True)
)
# MySQL/MariaDB: both kinds, locked, in one round trip (each arm parenthesised with its LIMIT).
_LOCK_CLAIMABLE = (
    select(Job)
    .from_statement(
        union_all(
            *(
                _claimable(status, due, order, Job, partial=False)
                for status, due, order in _CLAIMABLE
            )
        )
    )
    .execution_options(populate_existing=True)
)
_CLAIM_LOCKED = (
    update(_JOBS)
    .where(_c.id.in_(_IDS))
    .values(
        status=JobStatus.RUNNING,
        attempts=_c.attempts + 1,
        lease_expires_at=_LEASE_UNTIL,
        claim_token=_TOKEN,
        locked_by=bindparam("worker", type_=_c.locked_by.type),
        updated_at=_NOW,
    )
)
_BURY_LOCKED = (
    update(_JOBS)
    .where(_c.id.in_(_IDS))
    .values(
        status=JobStatus.DEAD,
        lease_expires_at=None,
        finished_at=_NOW,
        last_error=LEASE_LOST_ERROR,
        claim_token=_TOKEN,
        updated_at=_NOW,
    )
)
_DONE = {
    "status": JobStatus.DONE,
    "finished_at": _NOW,
    "lease_expires_at": None,
    "updated_at": _NOW,
}
_ACK_WITH_TOKEN = (
    update(_JOBS)
    .where(_c.id.in_(_IDS), _c.status == JobStatus.RUNNING, _c.claim_token == _TOKEN)
    .values(**_DONE)
)
_ACK_ANY_CLAIM = (
    update(_JOBS).where(_c.id.in_(_IDS), _c.status == JobStatus.RUNNING).values(**_DONE)
)


# -- argument checks -------------------------------------------------------------------------


def _number(name: str, value: Any, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be at least {minimum:g}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, *, minimum: int, maximum: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidInputError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return value


def _aware(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def _payload(payload: Any) -> dict[str, Any]:
    """``payload`` as a plain dict, if JSON can store it."""
    if not isinstance(payload, Mapping):
        raise InvalidInputError(f"a job payload must be a dict, got {type(payload).__name__}")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the job payload is not JSON-serialisable: {exc}") from None
    return dict(payload)


def _error_text(error: Any) -> str:
    if isinstance(error, BaseException):
        message = str(error)
        described = f"{type(error).__name__}: {message}" if message else type(error).__name__
    elif isinstance(error, str):
        described = error
    else:
        raise InvalidInputError(f"error must be a str or an exception, got {type(error).__name__}")
    # Keep the end: the last lines of a traceback say the most.
    if len(described) <= MAX_ERROR_CHARS:
        return described
    return "..." + described[-(MAX_ERROR_CHARS - 3) :]


def _claim_order(job: Job) -> tuple[int, datetime, str]:
    return (-job.priority, job.run_at, str(job.id))


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class _Claim:
    """What a worker knows of a job it claimed: enough to prove the claim and settle it."""

    id: uuid.UUID
    token: uuid.UUID | None
    attempts: int | None = None
    max_attempts: int | None = None


class LostClaimError(ConcurrencyError):
    """A job's claim is no longer the caller's: its lease ran out and another worker claimed
    it, or it was settled already. ``job_id`` names the job."""

    def __init__(self, message: str, job_id: uuid.UUID, status: JobStatus) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status


def _lost(claim: _Claim, status: JobStatus, verb: str) -> LostClaimError:
    if status is JobStatus.RUNNING:
        why = "its lease ran out and another worker claimed it"
    else:
        why = f"it is {status.value}"
    return LostClaimError(
        f"cannot {verb} job {claim.id}: this claim is no longer current ({why})",
        claim.id,
        status,
    )


class QueueOptions(TypedDict, total=False):
    """The keyword options of a queue (``QueueCore``'s, with its defaults), which
    ``JobQueue`` and ``JobQueue.in_session`` pass on as they are."""

    lease_seconds: float
    backoff_base: float
    backoff_max: float
    worker_id: str | None
    clock: Callable[[], datetime] | None


class QueueCore:
    """The logic of one named queue, written once against a ``Session``.

    Every method works in the session it is given and never commits or rolls back: the
    caller owns the transaction. The core remembers the claims it made (job id -> claim
    token), so that ``acknowledge(job_id)`` proves the claim with a bare id.
    """

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
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_QUEUE_NAME:
            raise InvalidInputError(
                f"a queue name must be a non-empty string of at most {MAX_QUEUE_NAME} characters,"
                f" got {name!r}"
            )
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise InvalidInputError(f"worker_id must be a non-empty string, got {worker_id!r}")
        self.name = name
        self.lease_seconds = _number("lease_seconds", lease_seconds, minimum=0)
        self.backoff_base = _number("backoff_base", backoff_base, minimum=0)
        self.backoff_max = _number("backoff_max", backoff_max, minimum=0)
        self.worker_id = worker_id[:255] if worker_id else None
        self._clock = clock or utcnow
        self._held: dict[uuid.UUID, _Claim] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"QueueCore({self.name!r}, lease_seconds={self.lease_seconds:g})"

    # -- time and claims -------------------------------------------------------------------

    def now(self) -> datetime:
        """The current time from this queue's clock (timezone-aware UTC)."""
        return _aware("the queue clock's time", self._clock())

    def backoff(self, attempts: int) -> timedelta:
        """How long a job waits after its ``attempts``-th run failed: exponential, capped."""
        exponent = min(max(attempts, 1) - 1, 64)
        return timedelta(seconds=min(self.backoff_max, self.backoff_base * 2.0**exponent))

    def _claim_of(self, ref: JobRef) -> _Claim:
        if isinstance(ref, Job):
            return _Claim(ref.id, ref.claim_token, ref.attempts, ref.max_attempts)
        key = coerce_id(ref)
        if key is None:
            raise NotFoundError(f"job {ref!r} not found")
        with self._lock:
            return self._held.get(key) or _Claim(key, None)

    def _remember(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._held[job.id] = _Claim(job.id, job.claim_token, job.attempts, job.max_attempts)

    def _forget(self, job_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._held.pop(job_id, None)

    # -- enqueueing ------------------------------------------------------------------------

    def job_values(
        self,
        payload: Any,
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """The column values of a new job, after checking every argument."""
        now = now or self.now()
        if run_at is None:
            due = now
        elif isinstance(run_at, timedelta):
            due = now + run_at
        else:
            due = _aware("run_at", run_at)
        return {
            "id": uuid7(),
            "queue": self.name,
            "payload": _payload(payload),
            "status": JobStatus.QUEUED,
            "priority": _integer("priority", priority, minimum=-MAX_INT - 1),
            "run_at": due,
            "attempts": 0,
            "max_attempts": _integer("max_attempts", max_attempts, minimum=1),
            "created_at": now,
            "updated_at": now,
        }

    def enqueue(
        self,
        session: Session,
        payload: Any,
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
    ) -> uuid.UUID:
        """Insert one queued job and return its id."""
        values = self.job_values(
            payload, run_at=run_at, priority=priority, max_attempts=max_attempts
        )
        session.execute(insert(_JOBS), [values])
        job_id: uuid.UUID = values["id"]
        return job_id

    def enqueue_many(
        self,
        session: Session,
        payloads: Iterable[Any],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
    ) -> builtins.list[uuid.UUID]:
        """Insert one queued job per payload (batched INSERTs); their ids, in order."""
        now = self.now()
        rows = [
            self.job_values(
                payload, run_at=run_at, priority=priority, max_attempts=max_attempts, now=now
            )
            for payload in payloads
        ]
        if rows:
            session.execute(insert(_JOBS), rows)
        return [row["id"] for row in rows]

    # -- claiming --------------------------------------------------------------------------

    def claim(self, session: Session, n: int = 1) -> builtins.list[Job]:
        """Claim up to ``n`` due jobs (and jobs whose lease ran out) for a lease.

        They come highest priority first, then oldest due; their ``attempts`` count this
        claim. Jobs whose lease ran out are candidates first-expired first (``n`` of them),
        then compete by that order. A job whose lease ran out on its last attempt is made
        dead instead.
        """
        n = _integer("n", n, minimum=0)
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
        if session.get_bind().dialect.name in {"mysql", "mariadb"}:
            jobs = self._claim_select_then_update(session, params)
        else:
            claimed = session.scalars(_CLAIM_RETURNING, params).all()
            jobs = [job for job in claimed if job.status is JobStatus.RUNNING]
        jobs.sort(key=_claim_order)
        self._remember(jobs)
        return jobs

    def _claim_select_then_update(
        self, session: Session, params: dict[str, Any]
    ) -> builtins.list[Job]:
        # Two ordered, locked index ranges, merged here; rows locked but not taken are free
        # again when this short transaction ends.
        locked = builtins.list(session.scalars(_LOCK_CLAIMABLE, params).all())
        locked.sort(key=_claim_order)
        picked = locked[: params["n"]]
        claimed = [job for job in picked if job.attempts < job.max_attempts]
        spent = [job for job in picked if job.attempts >= job.max_attempts]
        if claimed:
            session.execute(_CLAIM_LOCKED, {**params, "ids": [job.id for job in claimed]})
            for job in claimed:
                for key, value in (
                    ("status", JobStatus.RUNNING),
                    ("attempts", job.attempts + 1),
                    ("lease_expires_at", params["lease_until"]),
                    ("claim_token", params["token"]),
                    ("locked_by", params["worker"]),
                    ("updated_at", params["now"]),
                ):
                    set_committed_value(job, key, value)
        if spent:
            session.execute(_BURY_LOCKED, {**params, "ids": [job.id for job in spent]})
            for job in spent:
                session.expire(job)
        return claimed

    # -- settling a claim ------------------------------------------------------------------

    def acknowledge(self, session: Session, ref: JobRef) -> None:
        """Mark a claimed job done; ``ConcurrencyError`` if the claim is no longer current.

        Acknowledging again under the same claim is a no-op.
        """
        lost = self._acknowledge([self._claim_of(ref)], session)
        if lost:
            raise lost[0]

    def acknowledge_many(
        self, session: Session, refs: Iterable[JobRef]
    ) -> builtins.list[LostClaimError]:
        """Mark every job still held done (one UPDATE per claim); the errors of the others.

        Lost claims are returned, not raised, so that the caller can commit the jobs that were
        acknowledged before it reports them. An unknown id raises ``NotFoundError``.
        """
        return self._acknowledge([self._claim_of(ref) for ref in refs], session)

    def _acknowledge(
        self, claims: Sequence[_Claim], session: Session
    ) -> builtins.list[LostClaimError]:
        groups: dict[uuid.UUID | None, builtins.list[_Claim]] = {}
        for claim in claims:
            groups.setdefault(claim.token, []).append(claim)
        now = self.now()
        unsure: builtins.list[_Claim] = []
        for token, group in groups.items():
            ids = builtins.list({claim.id for claim in group})
            if token is None:
                result = session.execute(_ACK_ANY_CLAIM, {"ids": ids, "now": now})
            else:
                result = session.execute(_ACK_WITH_TOKEN, {"ids": ids, "now": now, "token": token})
            if _rowcount(result) != len(ids):
                unsure.extend(group)
        errors = self._check_done(session, unsure)
        # A lost claim stays remembered, so that a retry by bare id keeps failing instead of
        # settling the run of the worker that holds the job now.
        lost = {error.job_id for error in errors}
        self._forget(claim.id for claim in claims if claim.id not in lost)
        return errors

    def _check_done(
        self, session: Session, claims: Sequence[_Claim]
    ) -> builtins.list[LostClaimError]:
        """After an acknowledging UPDATE that missed rows: the claims that were lost.

        A job done under the same claim was acknowledged (now or before); a missing job is
        ``NotFoundError``.
        """
        if not claims:
            return []
        rows = {
            row.id: row
            for row in session.execute(
                select(_c.id, _c.status, _c.claim_token).where(
                    _c.id.in_({claim.id for claim in claims})
                )
            )
        }
        errors: builtins.list[LostClaimError] = []
        for claim in claims:
            row = rows.get(claim.id)
            if row is None:
                raise NotFoundError(f"job {claim.id} not found")
            status = JobStatus(row.status)
            if status is JobStatus.DONE and claim.token in (None, row.claim_token):
                continue
            errors.append(_lost(claim, status, "acknowledge"))
        return errors

    def fail(self, session: Session, ref: JobRef, error: Any, *, retry: bool = True) -> JobStatus:
        """Record a failed run: queued again after a backoff while it has attempts left (and
        ``retry``), else dead and kept with its last error. Returns the new status."""
        message = _error_text(error)
        claim = self._claim_of(ref)
        if claim.token is None or claim.attempts is None or claim.max_attempts is None:
            claim = self._current_claim(session, claim, "fail")
        attempts, max_attempts = claim.attempts or 0, claim.max_attempts or 1
        now = self.now()
        values: dict[str, Any] = {
            "last_error": message,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if retry and attempts < max_attempts:
            status = JobStatus.QUEUED
            values.update(
                status=status,
                run_at=now + self.backoff(attempts),
                claim_token=None,
                locked_by=None,
            )
        else:
            status = JobStatus.DEAD
            values.update(status=status, finished_at=now)
        self._settle(session, claim, values, "fail")
        return status

    def release(self, session: Session, ref: JobRef) -> None:
        """Give back a claimed job that was not started: due at once, attempt not counted."""
        values = {
            "status": JobStatus.QUEUED,
            "attempts": case((_c.attempts > 0, _c.attempts - 1), else_=0),
            "lease_expires_at": None,
            "claim_token": None,
            "locked_by": None,
            "updated_at": self.now(),
        }
        self._settle(session, self._claim_of(ref), values, "release")

    def heartbeat(
        self, session: Session, ref: JobRef, *, lease_seconds: float | None = None
    ) -> datetime:
        """Extend a claimed job's lease by ``lease_seconds`` (default: the queue's) from now;
        the lease's new end. ``ConcurrencyError`` if the claim was lost meanwhile."""
        seconds = (
            self.lease_seconds
            if lease_seconds is None
            else _number("lease_seconds", lease_seconds, minimum=0)
        )
        now = self.now()
        until = now + timedelta(seconds=seconds)
        values = {"lease_expires_at": until, "updated_at": now}
        self._settle(session, self._claim_of(ref), values, "extend the lease of", keep=True)
        return until

    def _current_claim(self, session: Session, claim: _Claim, verb: str) -> _Claim:
        """The job's current claim, read (for a bare id this core did not claim)."""
        row = session.execute(
            select(_c.status, _c.claim_token, _c.attempts, _c.max_attempts).where(_c.id == claim.id)
        ).first()
        if row is None:
            raise NotFoundError(f"job {claim.id} not found")
        status = JobStatus(row.status)
        if status is not JobStatus.RUNNING or claim.token not in (None, row.claim_token):
            raise _lost(claim, status, verb)
        return _Claim(claim.id, row.claim_token, row.attempts, row.max_attempts)

    def _settle(
        self,
        session: Session,
        claim: _Claim,
        values: dict[str, Any],
        verb: str,
        *,
        keep: bool = False,
    ) -> None:
        """One guarded UPDATE of a job running under ``claim``; raises if the claim is lost."""
        guard = (_c.id == claim.id) & (_c.status == JobStatus.RUNNING)
        if claim.token is not None:
            guard = guard & (_c.claim_token == claim.token)
        result = session.execute(update(_JOBS).where(guard).values(**values))
        if _rowcount(result) == 0:
            row = session.execute(select(_c.status).where(_c.id == claim.id)).first()
            if row is None:
                raise NotFoundError(f"job {claim.id} not found")
            raise _lost(claim, JobStatus(row.status), verb)
        if not keep:
            self._forget([claim.id])

    # -- reading and housekeeping ----------------------------------------------------------

    def get(self, session: Session, job_id: Any) -> Job:
        """The job with this id (in any queue); ``NotFoundError`` if there is none."""
        key = coerce_id(job_id.id if isinstance(job_id, Job) else job_id)
        job = session.get(Job, key, populate_existing=True) if key is not None else None
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found")
        return job

    def counts(self, session: Session) -> dict[JobStatus, int]:
        """How many jobs of this queue are in each status (every status is a key)."""
        counts = dict.fromkeys(JobStatus, 0)
        rows = session.execute(
            select(_c.status, func.count()).where(_c.queue == self.name).group_by(_c.status)
        )
        for status, count in rows:
            counts[JobStatus(status)] = int(count)
        return counts

    def purge_cutoff(self, older_than: datetime | timedelta) -> datetime:
        """The cutoff for ``older_than``: an age (``timedelta``) or an aware datetime."""
        if isinstance(older_than, timedelta):
            if older_than < timedelta(0):
                raise InvalidInputError(f"older_than must not be negative, got {older_than!r}")
            return self.now() - older_than
        return _aware("older_than", older_than)

    def purge_batch(
        self, session: Session, cutoff: datetime, statuses: Sequence[JobStatus], limit: int
    ) -> int:
        """Delete up to ``limit`` jobs of this queue in ``statuses`` finished before ``cutoff``."""
        ids = builtins.list(
            session.scalars(
                select(_c.id)
                .where(_c.queue == self.name, _c.finished_at < cutoff, _c.status.in_(statuses))
                .limit(limit)
            )
        )
        if not ids:
            return 0
        return _rowcount(session.execute(delete(_JOBS).where(_c.id.in_(ids))))


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
    waits ``backoff_base * 2 ** (attempts - 1)`` seconds, at most ``backoff_max``.
    """

    def __init__(
        self, source: SessionSource | Any, name: str = "default", **options: Unpack[QueueOptions]
    ) -> None:
        self.core = QueueCore(name, **options)
        self.source = session_source(source)

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

    def _run(self, work: Callable[[Session], R]) -> R:
        """Run ``work`` in a session of the queue's source (its own transaction, or the
        caller's)."""
        with translating(), self.source.transaction() as session:
            return work(session)

    # -- the contract ----------------------------------------------------------------------

    def enqueue(
        self,
        payload: dict[str, Any],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
    ) -> uuid.UUID:
        """Add a job and return its id. ``run_at`` (an aware datetime, or a delay) is when it
        is due, default now; higher ``priority`` runs first; ``max_attempts`` is at least 1."""
        return self._run(
            lambda session: self.core.enqueue(
                session, payload, run_at=run_at, priority=priority, max_attempts=max_attempts
            )
        )

    def dequeue(self) -> Job | None:
        """Claim the next due job (highest priority, then oldest due) for a lease, or ``None``."""
        jobs = self._run(lambda session: self.core.claim(session, 1))
        return jobs[0] if jobs else None

    def dequeue_many(self, n: int) -> builtins.list[Job]:
        """Claim up to ``n`` due jobs at once, in claim order."""
        return self._run(lambda session: self.core.claim(session, n))

    def acknowledge(self, job: JobRef) -> bool:
        """Mark a claimed job done; ``True`` when it is done under this claim.

        ``False`` (logged) when the claim was lost: the lease ran out and another worker
        claimed the job, whose run is left alone, or the job was never claimed. A lost lease
        is a normal event for a worker, so it is reported, not raised. ``NotFoundError`` for
        an unknown id.
        """
        try:
            self._run(lambda session: self.core.acknowledge(session, job))
        except LostClaimError as lost:
            log.warning("%s", lost)
            return False
        return True

    def acknowledge_many(self, jobs: Iterable[JobRef]) -> int:
        """Mark claimed jobs done in one transaction; how many were. Jobs whose claim was lost
        are left alone (and logged), as with :meth:`acknowledge`."""
        refs = builtins.list(jobs)
        lost = self._run(lambda session: self.core.acknowledge_many(session, refs))
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
            return self._run(lambda session: self.core.fail(session, job, error, retry=retry))
        except LostClaimError as lost:
            log.warning("%s", lost)
            return lost.status

    def get(self, job_id: JobRef) -> Job:
        """The job with this id; ``NotFoundError`` if there is none."""
        return self._run(lambda session: self.core.get(session, job_id))

    # -- beyond the contract ---------------------------------------------------------------

    def enqueue_many(
        self,
        payloads: Iterable[dict[str, Any]],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 5,
    ) -> builtins.list[uuid.UUID]:
        """Add one job per payload, all or none; their ids, in order."""
        items = builtins.list(payloads)
        return self._run(
            lambda session: self.core.enqueue_many(
                session, items, run_at=run_at, priority=priority, max_attempts=max_attempts
            )
        )

    def heartbeat(self, job: JobRef, *, lease_seconds: float | None = None) -> datetime:
        """Extend a claimed job's lease (for long jobs); the lease's new end."""
        return self._run(
            lambda session: self.core.heartbeat(session, job, lease_seconds=lease_seconds)
        )

    extend_lease = heartbeat

    def release(self, job: JobRef) -> None:
        """Give back a claimed job that was not started: due at once, attempt not counted."""
        self._run(lambda session: self.core.release(session, job))

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs of this queue are in each status."""
        return self._run(self.core.counts)

    def purge(
        self,
        older_than: datetime | timedelta,
        *,
        include_dead: bool = True,
        batch_size: int = 1000,
    ) -> int:
        """Delete this queue's done (and dead) jobs that finished before ``older_than`` (an
        age, or an aware datetime), ``batch_size`` rows per transaction; how many went."""
        cutoff = self.core.purge_cutoff(older_than)
        limit = _integer("batch_size", batch_size, minimum=1)
        statuses = [JobStatus.DONE, JobStatus.DEAD] if include_dead else [JobStatus.DONE]
        total = 0
        while True:
            deleted = self._run(
                lambda session: self.core.purge_batch(session, cutoff, statuses, limit)
            )
            total += deleted
            if deleted < limit:
                return total
