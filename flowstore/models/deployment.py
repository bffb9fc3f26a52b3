"""Deployments of a service version, and the node each one is placed on."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Base, Entity, str_enum, utcnow
from flowstore.models.enums import DeploymentStatus


class Deployment(Entity):
    __tablename__ = "deployments"
    # list/page by status in (created_at, id) order: the first page is read off the index
    __table_args__ = (Index(None, "status", "created_at", "id"),)

    name: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeploymentStatus] = mapped_column(
        str_enum(DeploymentStatus, "deployment_status"),
        default=DeploymentStatus.PENDING,
    )
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DeploymentNode(Base):
    """Which node a deployment runs on (at most one); kept apart so that moving a deployment
    does not bump the deployment's own version."""

    __tablename__ = "deployment_nodes"

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(255), index=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
