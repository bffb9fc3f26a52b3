"""Organizations; the database cascades a deletion to applications, users and policies."""

from __future__ import annotations

from flowstore.cache.reads import cached_lookup
from flowstore.models import Organization
from flowstore.repositories.base import Repository, translated
from flowstore.spec import coerce_value


class OrganizationRepository(Repository[Organization]):
    model = Organization

    @cached_lookup("slug")
    @translated
    def get_by_slug(self, slug: str) -> Organization | None:
        """The organization with this slug, or ``None``."""
        slug = coerce_value(Organization.slug, "slug", slug)
        found = self.list(slug=slug, limit=1)
        return found[0] if found else None
