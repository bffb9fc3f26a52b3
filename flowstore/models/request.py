"""Requests for machines made from a template."""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity, str_enum
from flowstore.models.enums import RequestStatus


class Request(Entity):
    __tablename__ = "requests"
    __table_args__ = (
        CheckConstraint("machine_count >= 0", name="machine_count_not_negative"),
        Index(None, "status", "created_at", "id"),  # by status, in page order
    )

    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="RESTRICT"), index=True
    )
    machine_count: Mapped[int] = mapped_column(default=1)
    status: Mapped[RequestStatus] = mapped_column(
        str_enum(RequestStatus, "request_status"), default=RequestStatus.PENDING
    )
