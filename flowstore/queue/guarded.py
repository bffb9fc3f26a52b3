"""Changing a job under its claim: one UPDATE guarded by the claim, and what to say when the
claim is found lost (its lease ran out and another worker took the job, or it was settled)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from flowstore.errors import NotFoundError
from flowstore.models.enums import JobStatus
from flowstore.queue.claims import Claim, LostClaimError, lost_claim
from flowstore.queue.statements import JOBS, columns

__all__ = ["current_claim", "lost_acknowledgements", "update_claimed"]

_c = columns


def current_claim(conn: Connection, claim: Claim, verb: str) -> Claim:
    """The job's current claim, read (for a bare id its queue object did not claim)."""
    row = conn.execute(
        select(_c.status, _c.claim_token, _c.attempts, _c.max_attempts).where(_c.id == claim.id)
    ).first()
    if row is None:
        raise NotFoundError(f"job {claim.id} not found")
    status = JobStatus(row.status)
    if status is not JobStatus.RUNNING or claim.token not in (None, row.claim_token):
        raise lost_claim(claim, status, verb)
    return Claim(claim.id, row.claim_token, row.attempts, row.max_attempts)


def update_claimed(conn: Connection, claim: Claim, changes: dict[str, Any], verb: str) -> None:
    """One UPDATE of a job running under ``claim``; ``LostClaimError`` if it is not."""
    guard = (_c.id == claim.id) & (_c.status == JobStatus.RUNNING)
    if claim.token is not None:
        guard = guard & (_c.claim_token == claim.token)
    result = conn.execute(update(JOBS).where(guard).values(**changes))
    if not result.rowcount:
        row = conn.execute(select(_c.status).where(_c.id == claim.id)).first()
        if row is None:
            raise NotFoundError(f"job {claim.id} not found")
        raise lost_claim(claim, JobStatus(row.status), verb)


def lost_acknowledgements(conn: Connection, claims: Sequence[Claim]) -> list[LostClaimError]:
    """After an acknowledging UPDATE that missed rows: the claims that were lost. A job done
    under the same claim was acknowledged (now or before); a missing job is ``NotFoundError``."""
    if not claims:
        return []
    found = conn.execute(
        select(_c.id, _c.status, _c.claim_token).where(_c.id.in_({claim.id for claim in claims}))
    )
    rows = {row.id: row for row in found}
    errors: list[LostClaimError] = []
    for claim in claims:
        row = rows.get(claim.id)
        if row is None:
            raise NotFoundError(f"job {claim.id} not found")
        status = JobStatus(row.status)
        if status is JobStatus.DONE and claim.token in (None, row.claim_token):
            continue
        errors.append(lost_claim(claim, status, "acknowledge"))
    return errors
