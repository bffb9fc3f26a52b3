"""Statement timeouts (flowstore.timeouts): a statement running past the store's
``statement_timeout`` or a unit of work's ``timeout=`` is cut off with ``StatementTimeoutError``,
within twice the limit, on every backend and on the async face; the transaction it was in is
refused until rolled back, and nothing of the limit outlives it in the pool.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from flowstore import (
    InvalidInputError,
    Settings,
    StatementTimeoutError,
    Store,
    TransactionFailedError,
)
from flowstore.aio import AsyncStore
from flowstore.errors import translating
from flowstore.models import Organization
from tests.conftest import empty_tables
from tests.test_aio import AIO_BACKENDS

# A billion rows from a thousand-row recursive CTE (MariaDB caps recursion at 1000): seconds
# to minutes of work on every backend, and plain SQL on all three.
SLOW = text(
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) "
    "SELECT count(*) FROM c a, c b, c d"
)
LIMIT = 0.5


def _cut_off(run: Any) -> float:
    """Seconds until ``run()`` raised ``StatementTimeoutError``."""
    started = time.monotonic()
    with pytest.raises(StatementTimeoutError, match="statement timeout"):
        run()
    return time.monotonic() - started


def test_a_unit_of_works_timeout_cuts_a_statement_off(store: Store) -> None:
    def run() -> None:
        with store.unit_of_work(timeout=LIMIT) as uow:
            uow.session.execute(SLOW)

    assert _cut_off(run) < 2 * LIMIT


def test_the_store_wide_setting_cuts_a_statement_off(store: Store) -> None:
    url = store.url.render_as_string(hide_password=False)
    if store.is_memory:
        url = "sqlite://"
    with Store(url, settings=Settings(statement_timeout=LIMIT)) as limited:
        assert limited.statement_timeout == LIMIT

        def run() -> None:
            with limited.unit_of_work() as uow:
                uow.session.execute(SLOW)

        assert _cut_off(run) < 2 * LIMIT


def test_the_transaction_is_refused_until_rolled_back_then_usable(store: Store) -> None:
    with store.unit_of_work(timeout=LIMIT) as uow:
        uow.organizations.add(Organization(name="Kept?", slug="kept"))
        with pytest.raises(StatementTimeoutError), translating():
            uow.session.execute(SLOW)
        with pytest.raises(TransactionFailedError, match="ran past its timeout"):
            uow.organizations.count()
        with pytest.raises(TransactionFailedError, match="ran past its timeout"):
            uow.commit()
        uow.rollback()
        assert uow.organizations.count() == 0  # the work before the timeout is gone
        uow.organizations.add(Organization(name="Later", slug="later"))
    with store.unit_of_work() as uow:
        assert [o.slug for o in uow.organizations.list()] == ["later"]


def test_quick_statements_pass_and_the_limit_ends_with_the_unit_of_work(store: Store) -> None:
    with store.unit_of_work(timeout=LIMIT) as uow:
        uow.organizations.add(Organization(name="Acme", slug="acme"))
        time.sleep(LIMIT * 1.5)  # time between statements does not count
        assert uow.organizations.count() == 1
    # the next unit of work, on the same pooled connection, has no limit left over
    with store.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT 1")).scalar_one() == 1
        if store.dialect == "postgresql":
            shown = uow.session.execute(text("SHOW statement_timeout")).scalar_one()
            assert shown == "0"
        if store.dialect == "sqlite":
            busy = uow.session.execute(text("PRAGMA busy_timeout")).scalar_one()
            assert busy == store.settings.sqlite_busy_timeout_ms


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1", True])
def test_a_bad_timeout_is_invalid_input(bad: Any) -> None:
    with Store() as store, pytest.raises(InvalidInputError, match="timeout"):
        store.unit_of_work(timeout=bad)


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSTORE_STATEMENT_TIMEOUT", "2.5")
    with Store() as store:
        assert store.statement_timeout == 2.5
    monkeypatch.setenv("FLOWSTORE_STATEMENT_TIMEOUT", "0")
    with pytest.raises(ValueError, match="statement_timeout"):
        Settings()


@pytest.fixture(params=[b for b in AIO_BACKENDS if b != "sqlite_file"])
def aio_url(request: pytest.FixtureRequest, server_stores: dict[str, Store]) -> str:
    if request.param == "sqlite":
        return "sqlite://"
    shared = server_stores["postgresql"]
    empty_tables(shared)
    return shared.url.render_as_string(hide_password=False)


@pytest.mark.parametrize("where", ["unit of work", "store"])
def test_the_async_face_cuts_a_statement_off(aio_url: str, where: str) -> None:
    async def main() -> float:
        settings = Settings(statement_timeout=LIMIT if where == "store" else None)
        async with AsyncStore(aio_url, settings=settings) as store:
            started = time.monotonic()
            with pytest.raises(StatementTimeoutError):
                timeout = LIMIT if where == "unit of work" else None
                async with store.unit_of_work(timeout=timeout) as uow:
                    await uow.run(lambda session: session.execute(SLOW).scalar())
            elapsed = time.monotonic() - started
            async with store.unit_of_work() as uow:
                assert await uow.run(lambda s: s.execute(text("SELECT 1")).scalar()) == 1
            return elapsed

    assert asyncio.run(main()) < 2 * LIMIT
