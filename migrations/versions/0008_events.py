"""events: the change-event log (transactional outbox) and its commit-order lock row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

``events.id`` is the readers' cursor and grows in commit order (``flowstore.events.writer``
takes the ids at commit, under a lock held to the end of the commit). On SQLite the key is
``AUTOINCREMENT``, so an id is never handed out again after the newest events are pruned.
``ix_events_created_at`` serves retention (``flowstore events prune``); reading follows the
primary key. ``event_writer_lock`` holds the one row MySQL/MariaDB writers lock at commit
(PostgreSQL uses an advisory lock, SQLite its single writer); the writer creates the row.

The types are spelled out here (not imported from flowstore.models) so that this revision
stays what it was when the models change later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

from flowstore.schema import table_options

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    options = table_options(op.get_context().dialect)
    op.create_table(
        "events",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
        **options,
    )
    op.create_index(op.f("ix_events_created_at"), "events", ["created_at"])
    op.create_table(
        "event_writer_lock",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_writer_lock")),
        **options,
    )


def downgrade() -> None:
    op.drop_table("event_writer_lock")
    op.drop_index(op.f("ix_events_created_at"), table_name="events")
    op.drop_table("events")
