"""The append-only audit trail.

Ids in an audit row are plain columns, not foreign keys: the trail outlives what it describes.
The database refuses UPDATE and DELETE of audit rows with triggers: migrations 0003 and 0009
create them, and the DDL below creates the same ones when the schema comes from ``create_all``
(in-memory). Only retention (``flowstore db prune``) deletes, and only rows older than its
cutoff.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import DDL, Index, String, event
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity


class AuditLog(Entity):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index(None, "org_id", "created_at"),
        Index(None, "org_id", "application_id", "created_at"),
        Index(None, "org_id", "user_id", "created_at"),
        Index(None, "org_id", "action", "created_at"),
        Index(None, "request_id"),
    )

    org_id: Mapped[uuid.UUID]
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(100))
    resource_id: Mapped[str | None] = mapped_column(String(255), default=None)
    application_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    request_id: Mapped[str | None] = mapped_column(String(255), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


#: Retention's way past the triggers (``flowstore.retention``): a DELETE of a row older than
#: this instant, set for one transaction (PostgreSQL: ``set_config(..., true)``) or one
#: connection (MySQL/MariaDB: a user variable), is let through; every other UPDATE or DELETE
#: is refused. On SQLite, whose triggers read no variables, retention drops and recreates the
#: DELETE trigger inside its own write transaction, which no other connection sees.
RETENTION_SETTING = "flowstore.audit_retention_before"
RETENTION_VARIABLE = "@flowstore_audit_retention_before"

POSTGRESQL_APPEND_ONLY_FUNCTION = (
    "CREATE OR REPLACE FUNCTION flowstore_audit_logs_append_only() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' AND OLD.created_at < "
    f"NULLIF(current_setting('{RETENTION_SETTING}', true), '')::timestamptz THEN RETURN OLD; "
    "END IF; RAISE EXCEPTION USING "
    "MESSAGE = 'audit_logs is append-only, ' || TG_OP || ' refused', "
    "ERRCODE = 'restrict_violation'; END $$"
)
POSTGRESQL_APPEND_ONLY_TRIGGER = (
    "CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs "
    "FOR EACH ROW EXECUTE FUNCTION flowstore_audit_logs_append_only()"
)
_MYSQL_DDL = (
    "CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs FOR EACH ROW "
    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only, UPDATE refused'",
    "CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs FOR EACH ROW BEGIN "
    f"IF {RETENTION_VARIABLE} IS NULL "
    f"OR OLD.created_at >= CAST({RETENTION_VARIABLE} AS DATETIME(6)) THEN "
    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only, DELETE refused'; "
    "END IF; END",
)
SQLITE_NO_DELETE_TRIGGER = (
    "CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs "
    "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only, DELETE refused'); END"
)
_APPEND_ONLY_DDL: dict[str, tuple[str, ...]] = {
    "postgresql": (POSTGRESQL_APPEND_ONLY_FUNCTION, POSTGRESQL_APPEND_ONLY_TRIGGER),
    "mysql": _MYSQL_DDL,
    "mariadb": _MYSQL_DDL,
    "sqlite": (
        "CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs "
        "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only, UPDATE refused'); END",
        SQLITE_NO_DELETE_TRIGGER,
    ),
}
for _dialect, _statements in _APPEND_ONLY_DDL.items():
    for _statement in _statements:
        _ddl = DDL(_statement)  # type: ignore[no-untyped-call]
        event.listen(AuditLog.__table__, "after_create", _ddl.execute_if(dialect=_dialect))
_DROP_FUNCTION = "DROP FUNCTION IF EXISTS flowstore_audit_logs_append_only()"
_drop = DDL(_DROP_FUNCTION)  # type: ignore[no-untyped-call]
event.listen(AuditLog.__table__, "after_drop", _drop.execute_if(dialect="postgresql"))
