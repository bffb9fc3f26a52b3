"""``AsyncRepository``: the awaitable face of a sync repository, the base of the typed ones."""

from __future__ import annotations

from typing import Any, TypeVar

from flowstore.aio.proxy import AsyncProxy, proxy_class
from flowstore.repositories import Repository

__all__ = ["AsyncRepository", "async_repository_class"]

RepoT = TypeVar("RepoT", bound=Repository[Any])


class AsyncRepository(AsyncProxy[RepoT]):
    """A repository with every method awaited: ``await uow.projects.get(key)``. The typed
    subclasses (``AsyncDeploymentRepository``, ...) are generated from the sync classes."""

    @property
    def model(self) -> type[Any]:
        """The model the repository stores."""
        return self.sync.model


def async_repository_class(repository_class: type[RepoT]) -> type[AsyncRepository[RepoT]]:
    """The awaitable class of ``repository_class``: its generated, typed class when one is
    imported, else one made at run time with the same methods."""
    made = proxy_class(repository_class, AsyncRepository)
    return made  # type: ignore[return-value]
