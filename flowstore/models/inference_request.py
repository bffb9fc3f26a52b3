"""One LLM inference call: tokens, cost and latency, for usage metrics and billing.

Usage rows are facts about the past, so their ids are plain columns, not foreign keys.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity


class InferenceRequest(Entity):
    __tablename__ = "inference_requests"
    __table_args__ = (
        Index(None, "org_id", "created_at"),
        Index(None, "application_id", "created_at"),
    )

    org_id: Mapped[uuid.UUID]
    application_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    model: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(64), default="success")
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    latency_ms: Mapped[int] = mapped_column(default=0)
