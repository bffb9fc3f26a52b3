"""Users: lookup by email within an organization, or by identity-provider id."""

from __future__ import annotations

from typing import Any

from flowstore.models import User
from flowstore.repositories.base import Repository, translated


class UserRepository(Repository[User]):
    model = User

    @translated
    def get_by_email(self, org_id: Any, email: str) -> User | None:
        """The user with this email in this organization, or ``None``."""
        found = self.list(org_id=org_id, email=email, limit=1)
        return found[0] if found else None

    @translated
    def get_by_external_id(self, external_id: str) -> User | None:
        """The user with this identity-provider id, or ``None``."""
        found = self.list(external_id=external_id, limit=1)
        return found[0] if found else None
