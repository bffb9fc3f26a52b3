"""Machines launched for a request; ``instance_id`` is the provider's id and is unique."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models.base import Entity, str_enum
from flowstore.models.enums import MachineStatus


class Machine(Entity):
    __tablename__ = "machines"
    __table_args__ = (Index(None, "status", "created_at", "id"),)  # by status, in page order

    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    instance_id: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[MachineStatus] = mapped_column(
        str_enum(MachineStatus, "machine_status"), default=MachineStatus.PENDING
    )
