"""The gateway's tables, beside flowstore's: they share its metadata, types and tenancy."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from flowstore.models import Base, Entity
from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column


class Route(Entity):
    """Where requests under a path prefix go, for one organization (org-owned: it has
    ``org_id``, so a tenant-scoped unit of work sees only its organization's routes)."""

    __tablename__ = "gateway_routes"
    __table_args__ = (UniqueConstraint("org_id", "path_prefix"),)

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    path_prefix: Mapped[str] = mapped_column(String(200))
    upstream_url: Mapped[str] = mapped_column(String(500))
    region: Mapped[str] = mapped_column(ForeignKey("gateway_regions.code"))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    monthly_budget: Mapped[Decimal] = mapped_column(default=Decimal(0))
    enabled: Mapped[bool] = mapped_column(default=True)


class Region(Base):
    """A region routes can be served from: platform data (no ``org_id``), keyed by its code."""

    __tablename__ = "gateway_regions"

    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
