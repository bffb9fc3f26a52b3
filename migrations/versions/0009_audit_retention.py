"""audit retention: the append-only triggers let retention delete rows older than its cutoff.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

``flowstore db prune --audit-older-than AGE`` deletes old audit rows in bounded batches
(``flowstore.retention``). The triggers of 0003 refused every DELETE; now a DELETE of a row
older than a cutoff the deleting transaction declares is let through, and everything else is
refused as before:

* PostgreSQL: the trigger function lets a DELETE through when the row's ``created_at`` is
  before ``current_setting('flowstore.audit_retention_before')``, which retention sets for its
  own transaction only (``set_config(..., true)``). UPDATE is refused as before.
* MySQL/MariaDB: the DELETE trigger does the same with the connection's user variable
  ``@flowstore_audit_retention_before``, which retention sets and clears around its batches.
* SQLite: unchanged; retention drops and recreates the DELETE trigger inside its own write
  transaction, which no other connection can see.

The SQL is spelled out here (not imported from flowstore) so this revision stays what it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRESQL_FUNCTION = """
CREATE OR REPLACE FUNCTION flowstore_audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    {allow}
    RAISE EXCEPTION USING
        MESSAGE = 'audit_logs is append-only, ' || TG_OP || ' refused',
        ERRCODE = 'restrict_violation';
END
$$
"""
_POSTGRESQL_ALLOW = """
    IF TG_OP = 'DELETE' AND OLD.created_at <
       NULLIF(current_setting('flowstore.audit_retention_before', true), '')::timestamptz THEN
        RETURN OLD;
    END IF;
"""

_MYSQL_DELETE_TRIGGER_UP = """
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs FOR EACH ROW
BEGIN
    IF @flowstore_audit_retention_before IS NULL
       OR OLD.created_at >= CAST(@flowstore_audit_retention_before AS DATETIME(6)) THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only, DELETE refused';
    END IF;
END
"""
_MYSQL_DELETE_TRIGGER_DOWN = """
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs FOR EACH ROW
SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only, DELETE refused'
"""


def _run(retention: bool) -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        op.execute(_POSTGRESQL_FUNCTION.format(allow=_POSTGRESQL_ALLOW if retention else ""))
    elif dialect in {"mysql", "mariadb"}:
        op.execute("DROP TRIGGER IF EXISTS audit_logs_no_delete")
        op.execute(_MYSQL_DELETE_TRIGGER_UP if retention else _MYSQL_DELETE_TRIGGER_DOWN)


def upgrade() -> None:
    _run(retention=True)


def downgrade() -> None:
    _run(retention=False)
