"""jobs: named tasks, a queueing lock (dedup_key), cancelled jobs; job_schedules; NOTIFY.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

* ``jobs.task``: the named task whose handler runs the job.
* ``jobs.dedup_key`` and ``jobs.live_dedup_key``, a column the database computes (the key while
  the job is unfinished, else NULL) under the unique index ``ux_jobs_dedup (queue,
  live_dedup_key)``: at most one unfinished job per queue and key, whoever inserts. A generated
  column, because MySQL/MariaDB have no partial indexes; the index is partial on PostgreSQL and
  SQLite (rows with a key only).
* ``status`` may be ``cancelled`` (a finished status: ``finished_at`` is set).
* ``job_schedules``: periodic jobs, one row per queue and name.
* PostgreSQL: a statement trigger on ``INSERT INTO jobs`` sends ``NOTIFY flowstore_jobs`` with
  each queue's name, delivered when the transaction commits, so waiting workers wake at once.

SQLite cannot change a CHECK constraint nor add a stored column in place: the table is rebuilt
(created anew, rows copied, indexes made again). The types are spelled out here so that this
revision stays what it was when the models change later. Downgrading turns cancelled jobs into
dead ones (their ``last_error`` says so) and drops the schedules.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

from flowstore.schema import table_options

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ACTIVE = "finished_at IS NULL"
FINISHED = "finished_at IS NOT NULL"
LIVE_DEDUP_KEY = "CASE WHEN finished_at IS NULL THEN dedup_key ELSE NULL END"
OLD_STATUSES = ("queued", "running", "done", "dead")
NEW_STATUSES = (*OLD_STATUSES, "cancelled")

_NOTIFY_UP = (
    """
    CREATE OR REPLACE FUNCTION flowstore_jobs_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('flowstore_jobs', queues.queue)
        FROM (SELECT DISTINCT queue FROM inserted_jobs) AS queues;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION flowstore_jobs_notify()
    """,
)
_NOTIFY_DOWN = (
    "DROP TRIGGER IF EXISTS jobs_notify ON jobs",
    "DROP FUNCTION IF EXISTS flowstore_jobs_notify()",
)


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _jobs_columns(*, features: bool) -> list[sa.Column]:  # type: ignore[type-arg]
    columns = [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
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
    ]
    if features:
        columns += [
            sa.Column("task", sa.String(100), nullable=True),
            sa.Column("dedup_key", sa.String(255), nullable=True),
            sa.Column(
                "live_dedup_key", sa.String(255), sa.Computed(LIVE_DEDUP_KEY, persisted=True)
            ),
        ]
    return columns


def _jobs_indexes(*, features: bool) -> None:
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["queue", "status", sa.text("priority DESC"), "run_at", "id"],
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_index(
        "ix_jobs_queue_finished_at",
        "jobs",
        ["queue", "finished_at"],
        sqlite_where=sa.text(FINISHED),
    )
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["queue", "status", "lease_expires_at", sa.text("priority DESC"), "run_at", "id"],
        sqlite_where=sa.text(ACTIVE),
    )
    if features:
        _dedup_index()


def _dedup_index() -> None:
    op.create_index(
        "ux_jobs_dedup",
        "jobs",
        ["queue", "live_dedup_key"],
        unique=True,
        postgresql_where=sa.text("live_dedup_key IS NOT NULL"),
        sqlite_where=sa.text("live_dedup_key IS NOT NULL"),
    )


def _rebuild_sqlite_jobs(*, features: bool) -> None:
    """Create ``jobs`` anew with or without this revision's columns and statuses, copy the
    rows, and make its indexes again (SQLite's way of changing a table's constraints)."""
    statuses = NEW_STATUSES if features else OLD_STATUSES
    op.create_table(
        "jobs_rebuilt",
        *_jobs_columns(features=features),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_jobs_max_attempts_positive")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_jobs_attempts_not_negative")),
        sa.CheckConstraint(
            "(finished_at IS NULL) = (status IN ('queued', 'running'))",
            name=op.f("ck_jobs_finished_at_iff_finished"),
        ),
        sa.CheckConstraint(_status_check(statuses), name=op.f("ck_jobs_job_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    shared = ", ".join(c.name for c in _jobs_columns(features=False))
    op.execute(f"INSERT INTO jobs_rebuilt ({shared}) SELECT {shared} FROM jobs")
    op.drop_table("jobs")
    op.rename_table("jobs_rebuilt", "jobs")
    _jobs_indexes(features=features)


def _schedules_table() -> None:
    op.create_table(
        "job_schedules",
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cron", sa.String(100), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(100), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_run_at", TIMESTAMP, nullable=False),
        sa.Column("last_run_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("queue", "name", name=op.f("pk_job_schedules")),
        **table_options(op.get_context().dialect),
    )


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        _rebuild_sqlite_jobs(features=True)
    else:
        for column in _jobs_columns(features=True)[-3:]:
            op.add_column("jobs", column)
        op.drop_constraint(op.f("ck_jobs_job_status"), "jobs", type_="check")
        op.create_check_constraint(op.f("ck_jobs_job_status"), "jobs", _status_check(NEW_STATUSES))
        _dedup_index()
    _schedules_table()
    if dialect == "postgresql":
        for statement in _NOTIFY_UP:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        for statement in _NOTIFY_DOWN:
            op.execute(statement)
    op.drop_table("job_schedules")
    op.execute(
        "UPDATE jobs SET status = 'dead', last_error = 'cancelled' WHERE status = 'cancelled'"
    )
    if dialect == "sqlite":
        _rebuild_sqlite_jobs(features=False)
        return
    op.drop_index("ux_jobs_dedup", table_name="jobs")
    op.drop_constraint(op.f("ck_jobs_job_status"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_job_status"), "jobs", _status_check(OLD_STATUSES))
    for name in ("live_dedup_key", "dedup_key", "task"):
        op.drop_column("jobs", name)
