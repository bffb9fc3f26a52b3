"""``AsyncRepository``: the awaitable face of a sync repository, the base of the typed ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flowstore.aio.proxy import AsyncProxy, proxy_class
from flowstore.repositories import Repository

__all__ = ["AsyncRepository", "LooseAsyncRepository", "async_repository_class"]

RepoT = TypeVar("RepoT", bound=Repository[Any])


class AsyncRepository(AsyncProxy[RepoT]):
    """A repository with every method awaited: ``await uow.projects.get(key)``. The typed
    subclasses (``AsyncDeploymentRepository``, ...) are generated from the sync classes."""

    @property
    def model(self) -> type[Any]:
        """The model the repository stores."""
        return self.sync.model


class LooseAsyncRepository(AsyncRepository[RepoT]):
    """The awaitable face of a repository without a generated class: the same methods, made
    at run time, so type checkers know them only as awaitable calls (``python -m
    flowstore.aio.codegen`` writes the typed class)."""

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]: ...


def async_repository_class(repository_class: type[RepoT]) -> type[AsyncRepository[RepoT]]:
    """The awaitable class of ``repository_class``: its generated, typed class when one is
    imported, else one made at run time with the same methods."""
    made = proxy_class(repository_class, LooseAsyncRepository)
    return made  # type: ignore[return-value]
