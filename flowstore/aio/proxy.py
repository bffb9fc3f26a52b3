"""Awaitable proxies built from sync classes: the repositories and the job queue, written once.

``async_proxy_class(cls)`` makes, once per class, a subclass of :class:`AsyncProxy` with one
coroutine method per public method of ``cls``: same name, signature and docstring (public
properties are read from the sync object, so they must not do I/O; the classes wrapped here
have none that do). Awaiting one
runs the sync method on the sync object through the owner's *runner* (for a unit of work:
``AsyncSession.run_sync`` on its session), so the SQL, the checks and the error translation
are the sync code's own. New methods of a sync repository appear on the async face by
themselves.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

__all__ = ["AsyncProxy", "Runner", "async_proxy_class"]

T = TypeVar("T")
R = TypeVar("R")

Runner = Callable[[Callable[[], R]], Awaitable[R]]
"""Runs a sync callable where it may do blocking SQLAlchemy I/O (inside a greenlet)."""


class AsyncProxy(Generic[T]):
    """The awaitable face of one sync object (a repository bound to a session, a job queue).

    Every public method of the wrapped class is a coroutine method here. For static typing,
    ``await proxy.run(lambda repo: repo.method(...))`` gives the sync method's exact types, and
    runs several calls in one switch to the greenlet.
    """

    wrapped_class: type[Any]

    def __init__(self, target: T, runner: Runner[Any]) -> None:
        self.sync = target
        self._runner = runner

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.sync!r}>"

    async def run(self, work: Callable[[T], R]) -> R:
        """``work(sync_object)`` inside the greenlet, typed; SQLAlchemy errors are translated."""
        target = self.sync
        result: R = await self._runner(lambda: work(target))
        return result

    if TYPE_CHECKING:  # the coroutine methods are added per class by async_proxy_class

        def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]: ...


def _coroutine_method(name: str, method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(self: AsyncProxy[Any], /, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.sync, name)
        return await self._runner(lambda: bound(*args, **kwargs))

    functools.update_wrapper(call, method)
    return call


def _forwarded_property(name: str, prop: property) -> property:
    def read(self: AsyncProxy[Any]) -> Any:
        return getattr(self.sync, name)

    return property(read, doc=prop.__doc__)


def public_methods(cls: type[Any]) -> dict[str, Callable[..., Any]]:
    """The public plain methods of ``cls`` (inherited ones included), by name."""
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


_PROXY_CLASSES: dict[type[Any], type[AsyncProxy[Any]]] = {}


def async_proxy_class(cls: type[T]) -> type[AsyncProxy[T]]:
    """The ``AsyncProxy`` subclass for ``cls`` (made once, then reused)."""
    made = _PROXY_CLASSES.get(cls)
    if made is not None:
        return made
    namespace: dict[str, Any] = {
        name: _coroutine_method(name, method) for name, method in public_methods(cls).items()
    }
    clash = {"run", "sync"} & namespace.keys()
    if clash:
        raise TypeError(f"{cls.__name__} has methods the proxy reserves: {sorted(clash)}")
    namespace.update(  # class-level types such as a repository's ``model``
        (name, value)
        for name, value in inspect.getmembers(cls, inspect.isclass)
        if not name.startswith("_")
    )
    namespace.update(  # plain properties (a queue's ``name``), read from the sync object
        (name, _forwarded_property(name, value))
        for name, value in inspect.getmembers(cls, lambda m: isinstance(m, property))
        if not name.startswith("_")
    )
    namespace["wrapped_class"] = cls
    namespace["__doc__"] = f"Awaitable {cls.__name__}: {(cls.__doc__ or '').strip()}".strip()
    namespace["__module__"] = __name__
    made = type(f"Async{cls.__name__}", (AsyncProxy,), namespace)
    _PROXY_CLASSES[cls] = made
    return made
