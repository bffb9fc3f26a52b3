"""Claims and the jobs they hold: what a worker must present to settle a job, the error for a
claim that is no longer its own, and ``Job`` objects made straight from rows.

A ``Job`` returned by the queue is a plain value made from the row (no session, no loading
machinery: about 20 times cheaper than the ORM's per-object work); reading it never touches the
database.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.attributes import manager_of_class

from flowstore.errors import ConcurrencyError, NotFoundError
from flowstore.models.enums import JobStatus
from flowstore.models.job import Job
from flowstore.models.types import uuid7
from flowstore.queue.statements import JOB_COLUMNS
from flowstore.repositories.keys import coerce_id

__all__ = [
    "Claim",
    "ClaimMemory",
    "JobRef",
    "LostClaimError",
    "claim_order",
    "default_worker_id",
    "job_from_row",
    "lost_claim",
    "ordered_ids",
]

#: A job as the queue's methods take it: the ``Job`` that ``dequeue`` returned, or its id.
JobRef = Job | uuid.UUID | str

_KEYS = tuple(column.key for column in JOB_COLUMNS)
_NEW_JOB = manager_of_class(Job).new_instance
_configured = False


def default_worker_id() -> str:
    """``host:pid``: who holds a claim, for people inspecting the jobs table."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


def job_from_row(row: Sequence[Any]) -> Job:
    """A ``Job`` holding the values of ``row`` (the columns of ``JOB_COLUMNS``, in order)."""
    global _configured
    if not _configured:  # the attributes work once the mappers are configured
        configure_mappers()
        _configured = True
    job = _NEW_JOB()
    job.__dict__.update(zip(_KEYS, row, strict=True))
    return job


def claim_order(job: Job) -> tuple[int, datetime, uuid.UUID]:
    """Highest priority first, then oldest due, then id (creation order; UUIDs order as the
    databases store them)."""
    values = job.__dict__
    return (-values["priority"], values["run_at"], values["id"])


def ordered_ids(count: int) -> list[uuid.UUID]:
    """``count`` UUIDv7s in increasing order, so that jobs enqueued together (which share a
    ``run_at``) are claimed in the order given: one random UUIDv7, then its successors (the
    low random bits count up from a value with room to spare)."""
    first = uuid7().int & ~((1 << 61) - (1 << 40))  # clear rand_b's top bits: no carry out
    return [uuid.UUID(int=first + n) for n in range(count)]


@dataclass(frozen=True)
class Claim:
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


def lost_claim(claim: Claim, status: JobStatus, verb: str) -> LostClaimError:
    """The error for settling (``verb``) a job whose claim is not ``claim`` any more."""
    if status is JobStatus.RUNNING:
        why = "its lease ran out and another worker claimed it"
    else:
        why = f"it is {status.value}"
    return LostClaimError(
        f"cannot {verb} job {claim.id}: this claim is no longer current ({why})",
        claim.id,
        status,
    )


class ClaimMemory:
    """The claims one queue object made (job id -> claim), so that a bare id proves one."""

    def __init__(self) -> None:
        self._held: dict[uuid.UUID, Claim] = {}
        self._lock = threading.Lock()

    def claim_of(self, ref: JobRef) -> Claim:
        """The claim ``ref`` stands for: the ``Job``'s own, or the one remembered for an id
        (an id this object did not claim is trusted to mean the job's current claim)."""
        if isinstance(ref, Job):
            values = ref.__dict__  # plain reads; a job loaded by a session may lack some
            if "claim_token" in values and "attempts" in values and "max_attempts" in values:
                return Claim(
                    values["id"], values["claim_token"], values["attempts"], values["max_attempts"]
                )
            return Claim(ref.id, ref.claim_token, ref.attempts, ref.max_attempts)
        key = coerce_id(ref)
        if key is None:
            raise NotFoundError(f"job {ref!r} not found")
        with self._lock:
            return self._held.get(key) or Claim(key, None)

    def remember(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                values = job.__dict__
                self._held[values["id"]] = Claim(
                    values["id"], values["claim_token"], values["attempts"], values["max_attempts"]
                )

    def forget(self, job_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._held.pop(job_id, None)
