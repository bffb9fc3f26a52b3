"""The gateway's queries: written once, used by the sync and the async face."""

from __future__ import annotations

import builtins
import uuid

from flowstore import Repository
from flowstore.spec import where

from gateway.models import Region, Route


class RouteRepository(Repository[Route]):
    model = Route

    def match(self, org_id: uuid.UUID, path: str) -> Route | None:
        """The enabled route of the organization with the longest prefix of ``path``."""
        candidates = self.list(org_id=org_id, enabled=True)
        matching = [r for r in candidates if path.startswith(r.path_prefix)]
        return max(matching, key=lambda r: len(r.path_prefix), default=None)

    def in_region(self, region: str) -> builtins.list[Route]:
        """Every route served from ``region``, by name."""
        return self.list(where("region", "==", region), order_by="name")


class RegionRepository(Repository[Region]):
    model = Region
