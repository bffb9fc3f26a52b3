"""flowstore in a FastAPI service: ``install(app, store)`` and ``unit_of_work(store)``.

``install`` answers every flowstore error with problem details (RFC 9457,
``application/problem+json``; see ``flowstore.ext.problems`` for the statuses) and closes the
store when the app shuts down (its lifespan, kept around the app's own).

``unit_of_work(store)`` declares a dependency: ``uow: Annotated[UnitOfWork,
unit_of_work(store)]``. The endpoint gets an active unit of work, which commits *before the
response is sent*: the dependency is function-scoped (FastAPI's ``scope="function"``), so its
exit runs when the endpoint returns, and a commit that fails (a duplicate key found at flush,
a lost connection) becomes the error response instead of a 200 for work that was never
saved. An exception in the endpoint rolls it back. A ``Store`` serves sync endpoints and an
``AsyncStore`` async ones; a service's own ``unit_of_work_class`` is what the endpoint gets.

``org_id=<dependency>`` scopes the unit of work to the organization that dependency returns
(say, from the caller's API key); ``None`` there is refused (403), never unscoped.
``read_only=True`` gives a read-only unit of work (``store.unit_of_work(read_only=True)``): it
reads from a replica when the store has them, and a write in it is ``ReadOnlyError``.
``timeout=`` limits each statement (``StatementTimeoutError``, 504).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi import params as fastapi_params
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from flowstore.aio.store import AsyncStore
from flowstore.errors import FlowstoreError, TenantScopeError
from flowstore.ext.problems import MEDIA_TYPE, problem_for
from flowstore.store import Store

__all__ = ["install", "problem_response", "unit_of_work"]

if "scope" not in inspect.signature(Depends).parameters:  # pragma: no cover - old FastAPI
    raise ImportError(
        "flowstore.ext.fastapi needs FastAPI 0.121 or later (dependency scopes): "
        "pip install 'flowstore[fastapi]'"
    )

AnyStore = Store[Any] | AsyncStore[Any]


def problem_response(error: FlowstoreError) -> JSONResponse:
    """The problem details response for ``error``."""
    problem = problem_for(error)
    return JSONResponse(problem.body(), status_code=problem.status, media_type=MEDIA_TYPE)


async def _handle(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FlowstoreError)
    return problem_response(error)


def install(app: FastAPI, store: AnyStore) -> None:
    """Answer flowstore errors with problem details, and close ``store`` at shutdown."""
    if not isinstance(store, Store | AsyncStore):
        raise TypeError(f"install() takes a flowstore Store or AsyncStore, got {store!r}")
    app.add_exception_handler(FlowstoreError, _handle)
    app.state.flowstore_store = store
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(running: ASGIApp) -> AsyncIterator[Any]:
        try:
            async with inner(running) as state:
                yield state
        finally:
            if isinstance(store, AsyncStore):
                await store.close()
            else:
                store.close()

    app.router.lifespan_context = lifespan


def unit_of_work(
    store: AnyStore,
    *,
    org_id: Callable[..., Any] | None = None,
    read_only: bool = False,
    timeout: float | None = None,
) -> Any:
    """A dependency giving the endpoint an active unit of work of ``store`` that commits before
    the response is sent (see the module's docstring)."""
    if not isinstance(store, Store | AsyncStore):
        raise TypeError(f"unit_of_work() takes a flowstore Store or AsyncStore, got {store!r}")
    if org_id is not None and not callable(org_id):
        raise TypeError("org_id takes a dependency (a callable returning the organization id)")
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if read_only:
        options["read_only"] = True
    make = _async_dependency if isinstance(store, AsyncStore) else _sync_dependency
    dependency = make(store, options, org_id is not None)
    _declare_org(dependency, org_id)
    return fastapi_params.Depends(dependency, scope="function")


def _refuse_missing_org(org: Any) -> None:
    if org is None:
        raise TenantScopeError("this request is not tied to an organization")


def _sync_dependency(
    store: AnyStore, options: dict[str, Any], scoped: bool
) -> Callable[..., Iterator[Any]]:
    assert isinstance(store, Store)

    def dependency(org: Any = None) -> Iterator[Any]:
        if scoped:
            _refuse_missing_org(org)
            options_here = {**options, "org_id": org}
        else:
            options_here = options
        with store.unit_of_work(**options_here) as uow:
            yield uow

    return dependency


def _async_dependency(
    store: AnyStore, options: dict[str, Any], scoped: bool
) -> Callable[..., AsyncIterator[Any]]:
    assert isinstance(store, AsyncStore)

    async def dependency(org: Any = None) -> AsyncIterator[Any]:
        if scoped:
            _refuse_missing_org(org)
            options_here = {**options, "org_id": org}
        else:
            options_here = options
        async with store.unit_of_work(**options_here) as uow:
            yield uow

    return dependency


def _declare_org(dependency: Callable[..., Any], org_id: Callable[..., Any] | None) -> None:
    """What FastAPI sees of ``dependency``: an ``org`` parameter from the ``org_id`` dependency,
    or no parameter at all."""
    parameters = []
    if org_id is not None:
        parameters.append(
            inspect.Parameter(
                "org",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[Any, Depends(org_id)],
            )
        )
    dependency.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
