"""Policies at org, application or user level (rate limits, budgets, model access)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity, str_enum
from flowstore.models.enums import PolicyType


class Policy(Entity):
    __tablename__ = "policies"
    __table_args__ = (Index(None, "org_id", "enabled", "priority"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    application_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True, default=None
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, default=None
    )
    policy_type: Mapped[PolicyType] = mapped_column(str_enum(PolicyType, "policy_type"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(default=0)
    enabled: Mapped[bool] = mapped_column(default=True)
