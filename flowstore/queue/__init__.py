"""The durable job queue, in the application's own database.

Jobs are rows of the ``jobs`` table (``flowstore.models.Job``), so they can be enqueued in the
same transaction as the data they are about (``uow.queue(name).enqueue(...)``), and they are
processed by many workers without a second system to run.

Claiming is safe under concurrent workers on every backend (``SKIP LOCKED`` on PostgreSQL and
MySQL/MariaDB, the write lock on SQLite: ``statements``). Jobs are claimed highest priority
first, then oldest due; jobs enqueued together are claimed in the order given. A claim sets a
lease and a fresh ``claim_token``; a job whose lease ran out is claimable again and its
``attempts`` count up (one that runs out of leases on its last attempt is dead).
``acknowledge``, ``fail``, ``heartbeat`` and ``release`` change a job only while the caller's
claim is the current one (``claims.LostClaimError`` otherwise).

Times come from the workers' clocks (``clock``, default UTC now): keep hosts in sync (NTP) and
leases much longer than the skew between them.

The modules, from the top: ``job_queue`` (``JobQueue``: each call in a transaction, its own or the
caller's, ``execution``), ``core`` (``QueueCore``: the logic, against a connection),
``maintenance`` (get, counts, cancel, requeue, purge), ``schedules`` (periodic jobs),
``uniqueness`` (enqueueing under a ``dedup_key``), ``status`` (what the queues hold),
``tasks`` (named tasks), ``wakeup`` (PostgreSQL LISTEN/NOTIFY), ``claims`` and ``statements``
(claims, the SQL), ``values`` (checked job values).
"""

from flowstore.queue.claims import JobRef, LostClaimError, default_worker_id
from flowstore.queue.core import QueueCore
from flowstore.queue.job_queue import JobQueue, QueueOptions, session_source
from flowstore.queue.schedules import Schedule
from flowstore.queue.status import DeadJob, QueueStatus, queue_status
from flowstore.queue.tasks import Tasks, UnknownTaskError

__all__ = [
    "DeadJob",
    "JobQueue",
    "JobRef",
    "LostClaimError",
    "QueueCore",
    "QueueOptions",
    "QueueStatus",
    "Schedule",
    "Tasks",
    "UnknownTaskError",
    "default_worker_id",
    "queue_status",
    "session_source",
]
