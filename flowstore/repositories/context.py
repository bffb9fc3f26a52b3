"""What repositories need beside their session: the settings and the tenant scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from flowstore.config import Settings
from flowstore.repositories.keys import require_id

__all__ = ["RepositoryContext"]


@dataclass(frozen=True)
class RepositoryContext:
    """Settings (the API-key secret, ...) and the organization a unit of work is confined to."""

    settings: Settings = field(default_factory=Settings)
    org_id: uuid.UUID | None = None

    def for_org(self, org_id: Any) -> RepositoryContext:
        """This context confined to one organization (``InvalidInputError`` for a bad id)."""
        return replace(self, org_id=require_id(org_id, "org_id"))
