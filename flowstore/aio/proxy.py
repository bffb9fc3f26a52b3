"""The awaitable face of a sync object (a repository on a session, a job queue), written once.

``AsyncProxy[T]`` holds the sync object (``sync``) and a *runner* that runs a sync callable
where it may do blocking SQLAlchemy I/O (for a unit of work: ``AsyncSession.run_sync`` on its
session). Its coroutine methods run the sync methods through it, so the SQL, the checks and
the error translation are the sync code's own.

The typed classes (``flowstore.aio.generated``, and a service's own, both written by
``python -m flowstore.aio.codegen``) subclass it with one explicit coroutine method per public
sync method, so type checkers see every signature; ``proxy_class(cls)`` returns the one
registered for a sync class, or makes one at run time with the same methods (untyped) for a
class that has none. ``await proxy.run(lambda obj: ...)`` runs several calls, fully typed, in
one switch to the greenlet.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["AsyncProxy", "Runner", "proxy_class", "public_methods"]

T = TypeVar("T")
R = TypeVar("R")

Runner = Callable[[Callable[[], R]], Awaitable[R]]
"""Runs a sync callable where it may do blocking SQLAlchemy I/O (inside a greenlet)."""

_REGISTERED: dict[type[Any], type[AsyncProxy[Any]]] = {}
_MADE: dict[tuple[type[Any], type[Any]], type[AsyncProxy[Any]]] = {}


class AsyncProxy(Generic[T]):
    """The awaitable face of one sync object. A subclass naming ``wraps`` (the sync class) is
    registered as that class's typed face."""

    wraps: ClassVar[type[Any]]

    def __init__(self, target: T, runner: Runner[Any]) -> None:
        self.sync = target
        self._runner = runner

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrapped = cls.__dict__.get("wraps")
        if isinstance(wrapped, type):
            _REGISTERED[wrapped] = cls

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.sync!r}>"

    async def run(self, work: Callable[[T], R]) -> R:
        """``work(sync_object)`` inside the greenlet, typed; SQLAlchemy errors are translated."""
        target = self.sync
        result: R = await self._runner(lambda: work(target))
        return result

    async def _call(self, call: Callable[[], R]) -> R:
        """Run one sync call through the runner (the generated methods' body)."""
        result: R = await self._runner(call)
        return result


def public_methods(cls: type[Any]) -> dict[str, Callable[..., Any]]:
    """The public plain methods of ``cls`` (inherited ones included), by name."""
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


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


def proxy_class(cls: type[T], base: type[AsyncProxy[Any]] = AsyncProxy) -> type[AsyncProxy[T]]:
    """The awaitable class for ``cls``: its registered typed class, else one made now (once)
    on ``base`` with a coroutine method per public method of ``cls``."""
    registered = _REGISTERED.get(cls)
    if registered is not None:
        return registered
    made = _MADE.get((cls, base))
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
    namespace["__doc__"] = f"Awaitable {cls.__name__}: {(cls.__doc__ or '').strip()}".strip()
    namespace["__module__"] = __name__
    made = type(f"Async{cls.__name__}", (base,), namespace)
    _MADE[(cls, base)] = made
    return made
