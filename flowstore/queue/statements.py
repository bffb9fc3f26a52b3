"""The queue's SQL, built once per process (building a statement costs more than running it).

Claiming reads two kinds of job, each off its own index in that index's order: queued and due
(``ix_jobs_claim``), and running with a lease that ran out (``ix_jobs_lease``: the expired leases
sit at the start of a queue's running range, so a claim never reads the jobs in flight).

* PostgreSQL and SQLite pick, lock and claim in one ``UPDATE ... RETURNING`` (SQLite takes its
  write lock when the statement starts, so two processes never both claim a job);
* MySQL/MariaDB (no ``UPDATE ... RETURNING``) lock both kinds with one
  ``SELECT ... FOR UPDATE SKIP LOCKED``, then claim the picked ones with an ``UPDATE``.

Every statement names the columns it returns (``JOB_COLUMNS``), so rows become ``Job`` objects
without the ORM's loading machinery (``claims.job_from_row``).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Table,
    bindparam,
    case,
    literal,
    select,
    text,
    union_all,
    update,
)

from flowstore.models.enums import JobStatus
from flowstore.models.job import ACTIVE_JOB_PREDICATE, Job

__all__ = [
    "ACK_ANY_CLAIM",
    "ACK_CLAIMS",
    "BURY_LOCKED",
    "CLAIM_LOCKED",
    "CLAIM_RETURNING",
    "JOBS",
    "JOB_COLUMNS",
    "LEASE_LOST_ERROR",
    "LOCK_CLAIMABLE",
    "MYSQL_DIALECTS",
    "columns",
]

JOBS = cast(Table, Job.__table__)
columns = JOBS.c
#: What every statement returns for a job: the model's columns, in table order.
JOB_COLUMNS = tuple(JOBS.c)
MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})
LEASE_LOST_ERROR = "lease ran out on the last attempt (the worker was lost)"

_c = columns
_TIME = _c.run_at.type
_STATUS = _c.status.type
_NOW = bindparam("now", type_=_TIME)
_LEASE_UNTIL = bindparam("lease_until", type_=_TIME)
_LIMIT = bindparam("n", type_=Integer())
_QUEUE = bindparam("queue_name", type_=_c.queue.type)
_TOKEN = bindparam("token", type_=_c.claim_token.type)
_WORKER = bindparam("worker", type_=_c.locked_by.type)
_IDS = bindparam("ids", expanding=True, type_=_c.id.type)

# (status, due, the order of its index)
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
    *picked: Any,
    partial: bool = True,
) -> Select[Any]:
    """Claimable jobs in one status, in ``order`` (their index's), at most ``n``, locked.

    With ``partial``, the query repeats the partial index's predicate as written, so that
    SQLite (which matches partial-index terms literally) and PostgreSQL's generic plans use
    it; MySQL has no partial index, and the term would only tempt it to another index.
    """
    stmt = select(*picked).where(_c.queue == _QUEUE, _c.status == status, due)
    if partial:
        stmt = stmt.where(text(ACTIVE_JOB_PREDICATE))
    return stmt.order_by(*order).limit(_LIMIT).with_for_update(skip_locked=True)


def _claim_returning() -> Any:
    """PostgreSQL and SQLite: pick, lock and claim in one ``UPDATE ... RETURNING``. A picked
    job whose lease ran out with no attempt left is made dead instead of claimed."""
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
        update(JOBS)
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
            locked_by=_WORKER,
            updated_at=_NOW,
        )
        .returning(*JOB_COLUMNS)
    )


CLAIM_RETURNING = _claim_returning()
# MySQL/MariaDB: both kinds, locked, in one round trip (each arm parenthesised with its LIMIT).
LOCK_CLAIMABLE = union_all(
    *(
        _claimable(status, due, order, *JOB_COLUMNS, partial=False)
        for status, due, order in _CLAIMABLE
    )
)
CLAIM_LOCKED = (
    update(JOBS)
    .where(_c.id.in_(_IDS))
    .values(
        status=JobStatus.RUNNING,
        attempts=_c.attempts + 1,
        lease_expires_at=_LEASE_UNTIL,
        claim_token=_TOKEN,
        locked_by=_WORKER,
        updated_at=_NOW,
    )
)
BURY_LOCKED = (
    update(JOBS)
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
#: Acknowledge jobs of one claim: one statement for a whole batch.
ACK_CLAIMS = (
    update(JOBS)
    .where(_c.id.in_(_IDS), _c.status == JobStatus.RUNNING, _c.claim_token == _TOKEN)
    .values(**_DONE)
)
#: Acknowledge by id alone (ids this queue object did not claim: trusted to be current).
ACK_ANY_CLAIM = update(JOBS).where(_c.id.in_(_IDS), _c.status == JobStatus.RUNNING).values(**_DONE)
