"""audit log append-only: triggers refuse UPDATE and DELETE of audit rows in the database.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

The ORM already refuses to change or delete audit entries; these triggers make a raw
``UPDATE audit_logs`` or ``DELETE FROM audit_logs`` fail too, whoever sends it. ``TRUNCATE``
(PostgreSQL, MySQL/MariaDB) fires no row triggers and stays available to operators, as does
``DROP TABLE``. Triggers are invisible to autogenerate, so ``alembic check`` is unaffected.

* PostgreSQL: one plpgsql function raising SQLSTATE 23001 (restrict_violation), one row trigger.
* MySQL/MariaDB: two row triggers that ``SIGNAL SQLSTATE '45000'`` (error 1644). With binary
  logging on, creating triggers needs SUPER or ``log_bin_trust_function_creators``.
* SQLite: two triggers that ``RAISE(ABORT, ...)``. A later batch migration that recreates
  ``audit_logs`` on SQLite must create them again.

The SQL is spelled out here (not imported from flowstore) so this revision stays what it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRESQL_UP = (
    """
    CREATE OR REPLACE FUNCTION flowstore_audit_logs_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING
            MESSAGE = 'audit_logs is append-only, ' || TG_OP || ' refused',
            ERRCODE = 'restrict_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_logs_append_only
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION flowstore_audit_logs_append_only()
    """,
)
_POSTGRESQL_DOWN = (
    "DROP TRIGGER IF EXISTS audit_logs_append_only ON audit_logs",
    "DROP FUNCTION IF EXISTS flowstore_audit_logs_append_only()",
)

_MYSQL_UP = tuple(
    f"""
    CREATE TRIGGER audit_logs_no_{verb.lower()}
    BEFORE {verb} ON audit_logs FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only, {verb} refused'
    """
    for verb in ("UPDATE", "DELETE")
)
_MYSQL_DOWN = (
    "DROP TRIGGER IF EXISTS audit_logs_no_update",
    "DROP TRIGGER IF EXISTS audit_logs_no_delete",
)

_SQLITE_UP = tuple(
    f"""
    CREATE TRIGGER audit_logs_no_{verb.lower()}
    BEFORE {verb} ON audit_logs
    BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only, {verb} refused'); END
    """
    for verb in ("UPDATE", "DELETE")
)
_SQLITE_DOWN = _MYSQL_DOWN

_UP = {
    "postgresql": _POSTGRESQL_UP,
    "mysql": _MYSQL_UP,
    "mariadb": _MYSQL_UP,
    "sqlite": _SQLITE_UP,
}
_DOWN = {
    "postgresql": _POSTGRESQL_DOWN,
    "mysql": _MYSQL_DOWN,
    "mariadb": _MYSQL_DOWN,
    "sqlite": _SQLITE_DOWN,
}


def upgrade() -> None:
    for statement in _UP.get(op.get_context().dialect.name, ()):
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWN.get(op.get_context().dialect.name, ()):
        op.execute(statement)
