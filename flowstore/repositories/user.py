"""Users: lookup by email within an organization, or by identity-provider id."""

from __future__ import annotations

from typing import Any

from flowstore.cache.reads import cached_lookup
from flowstore.models import User
from flowstore.repositories.base import Repository, translated


class UserRepository(Repository[User]):
    model = User

    @cached_lookup("org_id", "email")
    @translated
    def get_by_email(self, org_id: Any, email: str) -> User | None:
        """The user with this email in this organization, or ``None``."""
        found = self.list(org_id=org_id, email=email, limit=1)
        return found[0] if found else None

    @cached_lookup("external_id")
    @translated
    def get_by_external_id(self, external_id: str) -> User | None:
        """The user with this identity-provider id, or ``None``."""
        found = self.list(external_id=external_id, limit=1)
        return found[0] if found else None
