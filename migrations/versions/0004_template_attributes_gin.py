"""templates.attributes: a GIN index on PostgreSQL, for find_by_attributes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

``TemplateRepository.find_by_attributes`` is JSONB containment (``attributes @> :wanted``) on
PostgreSQL, which no B-tree answers: without this index it reads every template. The index uses
``jsonb_path_ops`` (containment only; smaller and faster than the default operator class).
MySQL/MariaDB cannot index a JSON column and SQLite matches with ``json_each``: they get none.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_templates_attributes"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            INDEX,
            "templates",
            ["attributes"],
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(INDEX, table_name="templates")
