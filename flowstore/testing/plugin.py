"""flowstore's pytest plugin, registered through the ``pytest11`` entry point.

Fixtures: ``flowstore_store`` (one migrated database per test session; in-memory SQLite unless
``--flowstore-url`` or ``FLOWSTORE_TEST_DATABASE_URL`` names another) and ``uow`` (a unit of
work per test whose writes, commits included, are rolled back afterwards). The machinery lives
in ``flowstore.testing.isolation``, usable without pytest.

For the async face, ``async_flowstore_store`` (an ``AsyncStore`` on the same database, one per
test since it belongs to the test's event loop; on the in-memory default a fresh database with
the models' schema) and ``async_uow``, the async twin of ``uow``. They are async fixtures run
by anyio's pytest plugin: mark the tests ``@pytest.mark.anyio`` and define an
``anyio_backend`` fixture returning ``"asyncio"``.

A service configures it in its pytest settings, so the fixtures use its unit-of-work class
and migrate its tables too::

    [tool.pytest.ini_options]
    flowstore_unit_of_work_class = "acme.uow:AcmeUnitOfWork"
    flowstore_migrations = "migrations"     # relative to the rootdir
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flowstore.aio import AsyncStore, AsyncUnitOfWork
    from flowstore.store import Store
    from flowstore.uow import UnitOfWork

__all__ = ["URL_ENV", "async_flowstore_store", "async_uow", "flowstore_store", "uow"]

URL_ENV = "FLOWSTORE_TEST_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowstore", "flowstore test kit")
    group.addoption(
        "--flowstore-url",
        dest="flowstore_url",
        default=None,
        metavar="URL",
        help=(
            "database for the flowstore fixtures (default: $"
            + URL_ENV
            + ", else in-memory SQLite); it is migrated to head once and every test is "
            "rolled back, so use a database made for tests"
        ),
    )
    parser.addini(
        "flowstore_unit_of_work_class",
        "the service's flowstore.UnitOfWork subclass, as 'package.module:Class'",
        default="",
    )
    parser.addini(
        "flowstore_migrations",
        "the service's Alembic folder (from `flowstore db init`), relative to the rootdir",
        default="",
    )


def unit_of_work_class(config: pytest.Config) -> type[UnitOfWork]:
    """The unit-of-work class the fixtures use (``flowstore_unit_of_work_class``)."""
    from flowstore.uow import UnitOfWork

    named = str(config.getini("flowstore_unit_of_work_class") or "").strip()
    if not named:
        return UnitOfWork
    module_name, _, attribute = named.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise pytest.UsageError(
            f"flowstore_unit_of_work_class = {named!r}: cannot import it ({exc})"
        ) from None
    if not (isinstance(found, type) and issubclass(found, UnitOfWork)):
        raise pytest.UsageError(f"flowstore_unit_of_work_class = {named!r}: not a UnitOfWork")
    return found


def migrations_folder(config: pytest.Config) -> Path | None:
    """The service's migrations folder (``flowstore_migrations``), or ``None``."""
    named = str(config.getini("flowstore_migrations") or "").strip()
    if not named:
        return None
    folder = Path(named)
    return folder if folder.is_absolute() else config.rootpath / folder


def database_url(config: pytest.Config) -> str | None:
    """The URL the fixtures use: ``--flowstore-url``, else the environment, else ``None``."""
    option = config.getoption("flowstore_url", default=None)
    return str(option) if option else os.environ.get(URL_ENV) or None


def pytest_report_header(config: pytest.Config) -> str | None:
    url = database_url(config)
    if url is None:
        return None
    from flowstore.engine import normalize_url
    from flowstore.errors import FlowstoreError, mask_secrets

    try:
        shown = normalize_url(url).render_as_string(hide_password=True)
    except FlowstoreError:
        shown = f"{mask_secrets(url)} (not a valid database URL)"
    return f"flowstore: fixtures use {shown}"


@pytest.fixture(scope="session")
def flowstore_store(pytestconfig: pytest.Config) -> Iterator[Store[Any]]:
    """The test session's store, migrated to the head revision once (see ``--flowstore-url``)."""
    from flowstore.errors import FlowstoreError
    from flowstore.testing.isolation import migrated_store

    try:
        store = migrated_store(
            database_url(pytestconfig),
            unit_of_work_class=unit_of_work_class(pytestconfig),
            migrations=migrations_folder(pytestconfig),
        )
    except FlowstoreError as exc:
        failure: str | None = f"flowstore_store: cannot prepare the test database: {exc!r}"
    else:
        failure = None
    if failure is not None:
        # Outside the ``except``: the message is masked, but a traceback would show the URL,
        # password included, among the arguments of the frames it passes through.
        pytest.fail(failure, pytrace=False)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def uow(flowstore_store: Store[Any]) -> Iterator[UnitOfWork]:
    """An active unit of work; everything the test writes, commits included, is rolled back.

    While it is active, ``flowstore_store.unit_of_work()`` joins the same transaction and the
    factories of ``flowstore.testing.factories`` write through this unit of work's session.
    """
    from flowstore.testing.isolation import isolated_unit_of_work

    with isolated_unit_of_work(flowstore_store) as unit:
        yield unit


@pytest.fixture
async def async_flowstore_store(
    flowstore_store: Store[Any], anyio_backend: Any
) -> AsyncIterator[AsyncStore[Any]]:
    """An ``AsyncStore`` on the test session's database (migrated by ``flowstore_store``), made
    in the test's event loop; on the in-memory default, a new in-memory database."""
    from flowstore.aio import AsyncStore

    url = None if flowstore_store.is_memory else flowstore_store.url
    store: AsyncStore[Any] = AsyncStore(
        url if url is not None else "sqlite://",
        unit_of_work_class=flowstore_store.unit_of_work_class,
    )
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def async_uow(async_flowstore_store: AsyncStore[Any]) -> AsyncIterator[AsyncUnitOfWork]:
    """The async twin of ``uow``: an active async unit of work whose writes, commits included,
    are rolled back after the test; ``async_flowstore_store.unit_of_work()`` joins it."""
    from flowstore.testing.async_isolation import isolated_async_unit_of_work

    async with isolated_async_unit_of_work(async_flowstore_store) as unit:
        yield unit
