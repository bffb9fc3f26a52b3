"""Applications of an organization; each authenticates with an API key stored only as a hash."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity


class Application(Entity):
    __tablename__ = "applications"
    __secret_fields__ = ("api_key_hash",)  # never in a change event (flowstore.events)

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
