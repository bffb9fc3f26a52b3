"""Machine templates: what a provider can launch, and how many at most."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity


class Template(Entity):
    __tablename__ = "templates"
    __table_args__ = (
        # find_by_attributes is JSONB containment (@>) on PostgreSQL: a GIN index answers it.
        # Other databases get no index on the JSON column (MySQL cannot have one).
        Index(
            None,
            "attributes",
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    name: Mapped[str] = mapped_column(String(255))
    provider_type: Mapped[str] = mapped_column(String(64), index=True)
    max_number: Mapped[int] = mapped_column(default=1)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
