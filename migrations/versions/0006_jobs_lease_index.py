"""jobs: index running jobs by lease end, so taking back expired leases stays cheap.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

A claim also takes back running jobs whose lease ran out. Through ``ix_jobs_claim`` (in claim
order) the database had to read the entry of every running job of the queue to find the
expired ones: with 20,000 jobs in flight a single claim cost 4 ms on PostgreSQL, 8 ms on SQLite
and 23 ms on MariaDB, against 1-2 ms with none. ``(queue, status, lease_expires_at, ...)`` puts the
expired leases at the start of an index range, and the claim reads only those, first-expired
first; the jobs of one claim share a lease end and follow in claim order (``priority DESC,
run_at, id``, as in ``ix_jobs_claim``). Partial on PostgreSQL and SQLite (unfinished jobs), as
``ix_jobs_claim`` is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "finished_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["queue", "status", "lease_expires_at", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_lease", table_name="jobs")
