"""initial schema: deployments, templates, requests, machines, organizations, applications,
users, policies, audit logs and inference requests.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

The types are spelled out here (not imported from flowstore.models) so that this revision
stays what it was when the models change later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

from flowstore.schema import table_options

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("flowstore",)
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
MONEY = sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")


def _status(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _entity(table: str, *columns: sa.SchemaItem) -> None:
    """Create ``table`` with the id/timestamps/lock_version columns every entity has."""
    op.create_table(
        table,
        sa.Column("id", sa.Uuid(), nullable=False),
        *columns,
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("lock_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        **table_options(op.get_context().dialect),
    )


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns))


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    _entity(
        "organizations",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
    )
    _entity(
        "applications",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=True),
        _fk("applications", "org_id", "organizations", "CASCADE"),
        sa.UniqueConstraint("api_key_hash", name=op.f("uq_applications_api_key_hash")),
    )
    _index("applications", "org_id")
    _entity(
        "users",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        _fk("users", "org_id", "organizations", "CASCADE"),
        sa.UniqueConstraint("external_id", name=op.f("uq_users_external_id")),
        sa.UniqueConstraint("org_id", "email", name=op.f("uq_users_org_id_email")),
    )
    _index("users", "org_id")
    _entity(
        "policies",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "policy_type",
            _status("policy_type", "rate_limit", "budget", "model_access"),
            nullable=False,
        ),
        sa.Column("config", JSON, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _fk("policies", "org_id", "organizations", "CASCADE"),
        _fk("policies", "application_id", "applications", "CASCADE"),
        _fk("policies", "user_id", "users", "CASCADE"),
    )
    _index("policies", "org_id", "enabled", "priority")
    _index("policies", "application_id")
    _index("policies", "user_id")

    _entity(
        "deployments",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column(
            "status",
            _status("deployment_status", "pending", "deploying", "running", "failed", "stopped"),
            nullable=False,
        ),
        sa.Column("config", JSON, nullable=False),
    )
    _index("deployments", "name")
    _index("deployments", "status")
    op.create_table(
        "deployment_nodes",
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.String(255), nullable=False),
        sa.Column("assigned_at", TIMESTAMP, nullable=False),
        _fk("deployment_nodes", "deployment_id", "deployments", "CASCADE"),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deployment_nodes")),
        **table_options(op.get_context().dialect),
    )
    _index("deployment_nodes", "node_id")

    _entity(
        "templates",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("provider_type", sa.String(64), nullable=False),
        sa.Column("max_number", sa.Integer(), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
    )
    _index("templates", "provider_type")
    _entity(
        "requests",
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("machine_count", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            _status("request_status", "pending", "in_progress", "completed", "failed", "cancelled"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "machine_count >= 0", name=op.f("ck_requests_machine_count_not_negative")
        ),
        _fk("requests", "template_id", "templates", "RESTRICT"),
    )
    _index("requests", "status")
    _index("requests", "template_id")
    _entity(
        "machines",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("instance_id", sa.String(255), nullable=False),
        sa.Column(
            "status",
            _status(
                "machine_status",
                "pending",
                "running",
                "stopping",
                "stopped",
                "terminated",
                "failed",
            ),
            nullable=False,
        ),
        _fk("machines", "request_id", "requests", "CASCADE"),
        sa.UniqueConstraint("instance_id", name=op.f("uq_machines_instance_id")),
    )
    _index("machines", "request_id")
    _index("machines", "status")

    _entity(
        "audit_logs",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=True),
        sa.Column("application_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("details", JSON, nullable=False),
    )
    _index("audit_logs", "org_id", "created_at")
    _index("audit_logs", "org_id", "application_id", "created_at")
    _index("audit_logs", "org_id", "user_id", "created_at")
    _index("audit_logs", "org_id", "action", "created_at")
    _index("audit_logs", "request_id")
    _entity(
        "inference_requests",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost", MONEY, nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
    )
    _index("inference_requests", "org_id", "created_at")
    _index("inference_requests", "application_id", "created_at")


def downgrade() -> None:
    for table in (
        "inference_requests",
        "audit_logs",
        "machines",
        "requests",
        "templates",
        "deployment_nodes",
        "deployments",
        "policies",
        "users",
        "applications",
        "organizations",
    ):
        op.drop_table(table)
