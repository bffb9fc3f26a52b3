"""jobs: the table of the durable job queue, with its claim and purge indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The types are spelled out here (not imported from flowstore.models) so that this revision
stays what it was when the models change later.

``ix_jobs_claim`` is partial on PostgreSQL and SQLite (unfinished jobs only), so claiming is an
index range over the live rows however many finished rows the table keeps. MySQL/MariaDB have
no partial indexes: there the index leads with (queue, status), which keeps finished rows out
of the scanned range just the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

from flowstore.schema import table_options

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ACTIVE = "finished_at IS NULL"
FINISHED = "finished_at IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "done",
                "dead",
                name="job_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("run_at", TIMESTAMP, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("locked_by", sa.String(255), nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_jobs_max_attempts_positive")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_jobs_attempts_not_negative")),
        sa.CheckConstraint(
            "(finished_at IS NULL) = (status IN ('queued', 'running'))",
            name=op.f("ck_jobs_finished_at_iff_finished"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        **table_options(op.get_context().dialect),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["queue", "status", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_index(
        "ix_jobs_queue_finished_at",
        "jobs",
        ["queue", "finished_at"],
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queue_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
