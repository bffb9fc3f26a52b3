"""Which session (and settings) the factories write with: the current test's, or one bound
explicitly.

Kept apart from the factories (and free of factory-boy) so that the pytest plugin can bind the
test's session without importing factory-boy, which only the ``test`` extra installs. The
binding is a ``ContextVar``: each thread and each asyncio task sees its own, so tests run in
parallel threads (or an app under test in another thread) never write to another's session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from sqlalchemy.orm import Session

from flowstore.config import Settings
from flowstore.errors import InvalidInputError

__all__ = ["bind_session", "current_session", "current_settings", "using_session"]

_BINDING: ContextVar[tuple[Session | None, Settings | None]] = ContextVar(
    "flowstore_factory_binding", default=(None, None)
)


def bind_session(session: Session | None, settings: Settings | None = None) -> None:
    """Make the factories write to ``session`` from now on, in this context (``None``
    unbinds); ``settings`` (default: from the environment) supply the API-key secret
    application hashes are made with."""
    if session is not None and not isinstance(session, Session):
        raise InvalidInputError(
            f"the factories need a sqlalchemy Session, got {type(session).__name__}"
        )
    _BINDING.set((session, settings))


def current_session() -> Session:
    """The session the factories write to; a clear error when none is bound."""
    session = _BINDING.get()[0]
    if session is None:
        raise InvalidInputError(
            "no session is bound for flowstore's factories: request the `uow` fixture in the "
            "test, or bind one with flowstore.testing.factories.using_session(uow.session)"
        )
    return session


def current_settings() -> Settings:
    """The settings bound with the session, else those of the environment."""
    settings = _BINDING.get()[1]
    return settings if settings is not None else Settings()


@contextlib.contextmanager
def using_session(session: Session, settings: Settings | None = None) -> Iterator[Session]:
    """Bind ``session`` (and ``settings``) for the block, then restore the previous binding."""
    if not isinstance(session, Session):
        raise InvalidInputError(
            f"the factories need a sqlalchemy Session, got {type(session).__name__}"
        )
    token = _BINDING.set((session, settings))
    try:
        yield session
    finally:
        _BINDING.reset(token)
