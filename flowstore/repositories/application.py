"""Applications and their API keys.

A raw key is shown once, when it is made, and never stored: the table holds
``HMAC-SHA-256(server secret, key)``, so a stolen table cannot be used to authenticate, and a
lookup is one indexed equality on the hash followed by a constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select

from flowstore.cache.reads import cached_lookup
from flowstore.config import DEV_API_KEY_SECRET
from flowstore.engine import is_memory_sqlite
from flowstore.errors import InvalidInputError
from flowstore.models import Application
from flowstore.repositories.base import Repository, translated
from flowstore.startup import report_api_key_secret

API_KEY_PREFIX = "fs_"
_MAX_KEY_LENGTH = 256


def generate_api_key() -> str:
    """A new random API key: ``fs_`` and 43 URL-safe characters (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(raw_key: str, secret: str) -> str:
    """The stored form of ``raw_key``: hex HMAC-SHA-256 under the server-side ``secret``."""
    return hmac.new(secret.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


class ApplicationRepository(Repository[Application]):
    model = Application

    def _hash(self, raw_key: str) -> str:
        secret = self.context.settings.api_key_secret.get_secret_value()
        if not secret:
            raise InvalidInputError(
                "api_key_secret is empty: set FLOWSTORE_API_KEY_SECRET to a long random value"
            )
        if secret == DEV_API_KEY_SECRET:
            memory = is_memory_sqlite(self.session.get_bind().engine.url)
            report_api_key_secret(secret, memory=memory)
        return hash_api_key(raw_key, secret)

    def _lookup_hash(self, raw_key: Any) -> tuple[str] | None:
        """The stored hash a raw key is looked up by in the cache (``None``: not a key that
        was ever issued, so the method answers without the cache)."""
        if not isinstance(raw_key, str) or not raw_key or len(raw_key) > _MAX_KEY_LENGTH:
            return None
        return (self._hash(raw_key),) if raw_key.isascii() else None

    @translated
    def create_with_api_key(self, org_id: Any, name: str) -> tuple[Application, str]:
        """Create an application with a fresh API key; returns ``(app, raw_key)``.

        The raw key is returned only here: keep it, it cannot be recovered.
        """
        raw_key = generate_api_key()
        app = Application(org_id=org_id, name=name, api_key_hash=self._hash(raw_key))
        return self.add(app), raw_key

    @translated
    def rotate_api_key(self, app_id: Any) -> str:
        """Give the application a new key; the old one stops working at once."""
        app = self.get(app_id)
        raw_key = generate_api_key()
        app.api_key_hash = self._hash(raw_key)
        self.session.flush()
        return raw_key

    @cached_lookup("api_key_hash", values=lambda repo, raw_key: repo._lookup_hash(raw_key))
    @translated
    def get_by_api_key(self, raw_key: str) -> Application | None:
        """The application this raw key belongs to, or ``None``."""
        if not isinstance(raw_key, str):
            raise InvalidInputError("an API key is a string")
        if not raw_key or len(raw_key) > _MAX_KEY_LENGTH or not raw_key.isascii():
            return None  # generated keys are short ASCII: this one was never issued
        digest = self._hash(raw_key)
        app = self.session.scalars(
            select(Application).where(Application.api_key_hash == digest).limit(1)
        ).first()
        if app is None or not hmac.compare_digest(app.api_key_hash or "", digest):
            return None
        return app
