"""Organizations (tenants); deleting one deletes its applications, users and policies."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity


class Organization(Entity):
    __tablename__ = "organizations"
    #: An organization is its own tenant: a scoped unit of work sees only the one it is for.
    __tenant_column__ = "id"

    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
