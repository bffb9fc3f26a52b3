"""A service built on flowstore, as a user would write it: its own models on flowstore's
``Base`` / ``Entity`` (integer, string and UUID keys), repositories and unit of work.

Importing it puts the service's tables on ``Base.metadata`` beside flowstore's, as in a real
service; flowstore's own checks must keep working with them there.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from flowstore import Repository, UnitOfWork, repository
from flowstore.models import Base, Entity, utcnow

SERVICE_TABLES = ("svc_notes", "svc_projects", "svc_tags")


class Note(Base):
    """Org-owned, with an integer key the database assigns."""

    __tablename__ = "svc_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Project(Entity):
    """Org-owned ``Entity`` with a unique key of its own and an exact amount."""

    __tablename__ = "svc_projects"
    __table_args__ = (UniqueConstraint("org_id", "slug"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(100))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    budget: Mapped[Decimal] = mapped_column(default=Decimal(0))


class Tag(Base):
    """Platform-level (no tenant column), keyed by a string, without ``created_at``."""

    __tablename__ = "svc_tags"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    weight: Mapped[int] = mapped_column(default=0)


class ProjectRepository(Repository[Project]):
    model = Project

    def by_slug(self, org_id: Any, slug: str) -> Project | None:
        """The organization's project with this slug, or ``None``."""
        return self.session.scalars(
            select(Project).where(Project.org_id == org_id, Project.slug == slug)
        ).first()


class NoteRepository(Repository[Note]):
    model = Note


class TagRepository(Repository[Tag]):
    model = Tag


class AcmeUnitOfWork(UnitOfWork):
    projects = repository(ProjectRepository)
    notes = repository(NoteRepository)
    tags = repository(TagRepository)
