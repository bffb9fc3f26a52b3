"""The append-only audit trail.

Ids in an audit row are plain columns, not foreign keys: the trail outlives what it describes.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Index, String
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
