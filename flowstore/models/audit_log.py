"""The append-only audit trail.

Ids in an audit row are plain columns, not foreign keys: the trail outlives what it describes.
The database refuses UPDATE and DELETE of audit rows with triggers: migration 0003 creates them,
and the DDL below creates the same ones when the schema comes from ``create_all`` (in-memory).
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


_VERBS = ("UPDATE", "DELETE")
_MYSQL_DDL = tuple(
    f"CREATE TRIGGER audit_logs_no_{verb.lower()} BEFORE {verb} ON audit_logs FOR EACH ROW "
    f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only, {verb} refused'"
    for verb in _VERBS
)
_APPEND_ONLY_DDL: dict[str, tuple[str, ...]] = {
    "postgresql": (
        "CREATE OR REPLACE FUNCTION flowstore_audit_logs_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION USING "
        "MESSAGE = 'audit_logs is append-only, ' || TG_OP || ' refused', "
        "ERRCODE = 'restrict_violation'; END $$",
        "CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs "
        "FOR EACH ROW EXECUTE FUNCTION flowstore_audit_logs_append_only()",
    ),
    "mysql": _MYSQL_DDL,
    "mariadb": _MYSQL_DDL,
    "sqlite": tuple(
        f"CREATE TRIGGER audit_logs_no_{verb.lower()} BEFORE {verb} ON audit_logs "
        f"BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only, {verb} refused'); END"
        for verb in _VERBS
    ),
}
for _dialect, _statements in _APPEND_ONLY_DDL.items():
    for _statement in _statements:
        _ddl = DDL(_statement)  # type: ignore[no-untyped-call]
        event.listen(AuditLog.__table__, "after_create", _ddl.execute_if(dialect=_dialect))
_DROP_FUNCTION = "DROP FUNCTION IF EXISTS flowstore_audit_logs_append_only()"
_drop = DDL(_DROP_FUNCTION)  # type: ignore[no-untyped-call]
event.listen(AuditLog.__table__, "after_drop", _drop.execute_if(dialect="postgresql"))
