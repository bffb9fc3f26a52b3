"""Settling claimed jobs: what a worker holds, keeping its leases, and acknowledging or failing
each job for as long as its claim can still be the worker's own.

A worker holds a job from its claim until it is settled or lost; the heartbeat extends the
lease of every job held, the one being settled included, so that a database outage shorter
than a lease never makes a job run twice. ``settle`` retries through such an outage until the
lease (as last extended) ends, then reads the job back and logs what truly became of it: done
(or failed) under this claim, still this worker's claim (it runs again once the lease ends),
or taken by another worker. A COMMIT whose answer was lost is found to have landed.

The messages go to the ``flowstore.worker`` logger: they are the worker's account of its jobs.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from flowstore.errors import (
    ConnectionFailedError,
    FlowstoreError,
    NotFoundError,
    TransactionFailedError,
    translating,
)
from flowstore.models.enums import JobStatus
from flowstore.models.job import Job
from flowstore.queue import JobQueue, LostClaimError
from flowstore.store import Store

__all__ = ["TRANSIENT", "HeldJobs", "settle"]

log = logging.getLogger("flowstore.worker")

#: Errors after which the database may answer again: back off and carry on.
TRANSIENT = (ConnectionFailedError, TransactionFailedError)
#: The longest pause between two attempts to settle a job (they start at a tenth of a second).
MAX_SETTLE_PAUSE = 1.0
#: The longest a job is retried while its lease lasts (longer when the lease is longer).
MAX_SETTLE_SECONDS = 60.0
#: How soon a heartbeat round that could not reach the database is tried again.
HEARTBEAT_RETRY = 1.0


@dataclass
class _Holding:
    job: Job
    lease_until: datetime | None  # as last set by this worker (claim or heartbeat)
    started: bool = False  # its handler has been called
    settling: bool = False  # its handler is done
    lost: LostClaimError | None = None  # found by the heartbeat before it was started


class HeldJobs:
    """The jobs a worker holds (claimed, not yet settled or lost) and their leases."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[uuid.UUID, _Holding] = {}

    def hold(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._held[job.id] = _Holding(job, job.lease_expires_at)

    def drop(self, job: Job) -> None:
        with self._lock:
            self._held.pop(job.id, None)

    def settling(self, job: Job) -> None:
        """``job``'s handler is done: it is being settled (and is still heartbeaten)."""
        with self._lock:
            holding = self._held.get(job.id)
            if holding is not None:
                holding.settling = True

    def lease_until(self, job: Job) -> datetime | None:
        """The end of ``job``'s lease as this worker last set it; ``None`` once it is not held."""
        with self._lock:
            holding = self._held.get(job.id)
            return None if holding is None else holding.lease_until

    def start(self, queue: JobQueue, job: Job) -> bool:
        """Whether ``job`` may be started now, which it then is: held, not found lost, and its
        lease not over (one that ran out while the worker stalled is renewed, unless another
        worker has claimed the job meanwhile)."""
        with self._lock:
            holding = self._held.get(job.id)
            lost = None if holding is None else holding.lost
            until = None if holding is None else holding.lease_until
        if holding is None:
            return False
        why: FlowstoreError | None = lost
        if why is None and until is not None and until <= queue.core.now():
            try:
                self._renew(job, queue.heartbeat(job))
            except FlowstoreError as exc:
                why = exc
        if why is not None:
            self.drop(job)
            log.warning(
                "job %s not started: its lease ran out before its turn came (the worker "
                "stalled) and it is not this worker's any more (%s); it runs under its new claim",
                job.id,
                why,
            )
            return False
        with self._lock:
            holding.started = True
        return True

    def _renew(self, job: Job, until: datetime) -> None:
        with self._lock:
            holding = self._held.get(job.id)
            if holding is not None and (holding.lease_until is None or until > holding.lease_until):
                holding.lease_until = until

    def keep_leases(self, queue: JobQueue, interval: float, done: threading.Event) -> None:
        """Extend the lease of every job held each ``interval`` seconds, until ``done``; a round
        that cannot reach the database stops there and is tried again a second later."""
        pause = interval
        while not done.wait(pause):
            pause = interval
            with self._lock:
                holdings = [h for h in self._held.values() if h.lost is None]
            for holding in holdings:
                try:
                    self._renew(holding.job, queue.heartbeat(holding.job))
                except LostClaimError as exc:
                    self._lost(holding, exc)
                except FlowstoreError as exc:
                    log.warning("heartbeat of job %s failed: %s", holding.job.id, exc)
                    if isinstance(exc, TRANSIENT):
                        pause = min(interval, HEARTBEAT_RETRY)
                        break

    def _lost(self, holding: _Holding, exc: LostClaimError) -> None:
        """A heartbeat found the claim lost: a job being settled is left to ``settle`` (which
        finds out), one not started yet to ``start``; a running one is reported now."""
        with self._lock:
            if holding.settling or self._held.get(holding.job.id) is not holding:
                return
            if not holding.started:
                holding.lost = exc
                return
            del self._held[holding.job.id]
        log.error("lost the lease of job %s while running it: %s", holding.job.id, exc)


def settle(store: Store, queue: JobQueue, held: HeldJobs, job: Job, error: str | None) -> None:
    """Acknowledge ``job`` (``error`` is ``None``) or fail it with ``error``, each attempt in a
    transaction of its own, until it is settled, lost, or its lease ends; then log the truth.
    ``job`` stays held (heartbeaten) meanwhile, and is dropped at the end. The retries last
    ``MAX_SETTLE_SECONDS`` (or one lease, if longer) at most: heartbeats that keep going while
    every attempt fails do not hold the worker's thread for ever."""
    held.settling(job)
    try:
        _settle(store, queue, held, job, error)
    finally:
        held.drop(job)


def _settle(store: Store, queue: JobQueue, held: HeldJobs, job: Job, error: str | None) -> None:
    verb = "acknowledge" if error is None else "fail"

    def step(session: Session) -> None:
        if error is None:
            queue.core.acknowledge(session, job)
        else:
            queue.core.fail(session, job, error)

    pause, attempt = 0.1, 0
    give_up_at = queue.core.now() + timedelta(seconds=max(queue.lease_seconds, MAX_SETTLE_SECONDS))
    while True:
        attempt += 1
        try:
            _in_transaction(store, step)
        except LostClaimError as lost:
            if error is not None and _failed_by_us(queue, job, error):
                log.info("job %s failed (an attempt whose answer was lost had landed)", job.id)
            else:  # an acknowledgement that landed earlier is no loss: the core checks that
                log.warning(
                    "job %s ran, but its lease was lost before it settled: %s", job.id, lost
                )
            return
        except NotFoundError:
            log.error("job %s vanished (purged?) before it could %s", job.id, verb)
            return
        except TRANSIENT as exc:
            left = min(_seconds_left(queue, held, job), _seconds_to(queue, give_up_at))
            if left <= 0:
                _report_unsettled(queue, job, verb, error, exc)
                return
            if attempt == 1:
                log.warning(
                    "could not %s job %s (%s); retrying until its lease ends, in %.1fs",
                    verb,
                    job.id,
                    exc,
                    left,
                )
            threading.Event().wait(min(pause, left))
            pause = min(pause * 2, MAX_SETTLE_PAUSE)
        except FlowstoreError as exc:
            _report_unsettled(queue, job, verb, error, exc)
            return
        else:
            if attempt > 1:
                log.info("job %s: %s done at attempt %d", job.id, verb, attempt)
            return


def _in_transaction(store: Store, step: Callable[[Session], None]) -> None:
    """``step`` in a short transaction of its own; the queue core raises a lost claim (where
    ``JobQueue.acknowledge`` would log it), so that it is logged once, here."""
    with translating(), store.session_factory() as session, session.begin():
        step(session)


def _seconds_left(queue: JobQueue, held: HeldJobs, job: Job) -> float:
    until = held.lease_until(job)
    return 0.0 if until is None else _seconds_to(queue, until)


def _seconds_to(queue: JobQueue, when: datetime) -> float:
    return (when - queue.core.now()).total_seconds()


def _failed_by_us(queue: JobQueue, job: Job, error: str) -> bool:
    """After a lost claim on failing: whether it was this very failure, recorded by an earlier
    attempt whose answer was lost (the job shows this claim's attempt and error)."""
    try:
        current = queue.get(job.id)
    except FlowstoreError:
        return False
    return _shows_our_failure(current, job, error)


def _shows_our_failure(current: Job, job: Job, error: str) -> bool:
    if current.attempts != job.attempts or not current.last_error:
        return False
    if not error.endswith(current.last_error.removeprefix("...")):
        return False
    return (current.status is JobStatus.QUEUED and current.claim_token is None) or (
        current.status is JobStatus.DEAD and current.claim_token == job.claim_token
    )


def _report_unsettled(
    queue: JobQueue, job: Job, verb: str, error: str | None, last: FlowstoreError
) -> None:
    """The job could not be settled (its lease ended, or the database refused): read it back
    and say what became of it."""
    try:
        current = queue.get(job.id)
    except NotFoundError:
        log.error("job %s vanished (purged?) before it could %s", job.id, verb)
        return
    except FlowstoreError as exc:
        log.error(
            "could not %s job %s (%s) before its lease ended, nor read it back (%s): it runs "
            "again unless one of the attempts landed",
            verb,
            job.id,
            last,
            exc,
        )
        return
    mine = current.claim_token == job.claim_token
    if error is None and current.status is JobStatus.DONE and mine:
        log.info("job %s: acknowledged (an attempt whose answer was lost had landed)", job.id)
    elif error is not None and _shows_our_failure(current, job, error):
        log.info("job %s failed (an attempt whose answer was lost had landed)", job.id)
    elif current.status is JobStatus.RUNNING and mine:
        log.error(
            "could not %s job %s (%s): it is still this worker's claim, and runs again once "
            "its lease ends (%s)",
            verb,
            job.id,
            last,
            current.lease_expires_at.isoformat() if current.lease_expires_at else "now",
        )
    else:
        log.warning(
            "job %s ran, but its lease was lost before it settled: it is %s under another "
            "claim (%s)",
            job.id,
            current.status.value,
            last,
        )
