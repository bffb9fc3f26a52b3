"""Which session (and settings) the factories write with: the current test's, or one bound
explicitly.

Kept apart from the factories (and free of factory-boy) so that the pytest plugin can bind the
test's session without importing factory-boy, which only the ``test`` extra installs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.orm import Session

from flowstore.config import Settings
from flowstore.errors import InvalidInputError

__all__ = ["bind_session", "current_session", "current_settings", "using_session"]

_session: Session | None = None
_settings: Settings | None = None


def bind_session(session: Session | None, settings: Settings | None = None) -> None:
    """Make the factories write to ``session`` from now on (``None`` unbinds); ``settings``
    (default: from the environment) supply the API-key secret application hashes are made with."""
    global _session, _settings
    if session is not None and not isinstance(session, Session):
        raise InvalidInputError(
            f"the factories need a sqlalchemy Session, got {type(session).__name__}"
        )
    _session, _settings = session, settings


def current_session() -> Session:
    """The session the factories write to; a clear error when none is bound."""
    if _session is None:
        raise InvalidInputError(
            "no session is bound for flowstore's factories: request the `uow` fixture in the "
            "test, or bind one with flowstore.testing.factories.using_session(uow.session)"
        )
    return _session


def current_settings() -> Settings:
    """The settings bound with the session, else those of the environment."""
    return _settings if _settings is not None else Settings()


@contextlib.contextmanager
def using_session(session: Session, settings: Settings | None = None) -> Iterator[Session]:
    """Bind ``session`` (and ``settings``) for the block, then restore the previous binding."""
    previous = _session, _settings
    bind_session(session, settings)
    try:
        yield session
    finally:
        bind_session(*previous)
