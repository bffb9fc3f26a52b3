"""Machine templates: what a provider can launch, and how many at most."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity


class Template(Entity):
    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(255))
    provider_type: Mapped[str] = mapped_column(String(64), index=True)
    max_number: Mapped[int] = mapped_column(default=1)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
