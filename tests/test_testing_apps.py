"""The test kit reaches the app under test: requests sent through FastAPI's ``TestClient`` (the
app in another thread) or httpx's ASGI transport write into the test's isolated transaction,
the test sees their work, and it is gone afterwards; several threads at once take turns on the
one connection. On every backend.
"""

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flowstore import InvalidInputError, Store, UnitOfWork
from flowstore.aio import AsyncStore
from flowstore.ext.fastapi import install, unit_of_work
from flowstore.models import Organization
from flowstore.testing import isolated_unit_of_work
from flowstore.testing.async_isolation import isolated_async_unit_of_work
from tests.conftest import BACKENDS, server_database
from tests.test_timeouts import aio_url  # noqa: F401 (a fixture)

pytest_plugins = ["pytester"]


def make_app(store: Store[Any]) -> FastAPI:
    app = FastAPI()
    install(app, store)
    UoW = Annotated[UnitOfWork, unit_of_work(store)]

    @app.post("/orgs/{slug}", status_code=201)
    def create(slug: str, uow: UoW) -> dict[str, str]:
        uow.session.add(Organization(name=slug, slug=slug))  # flushed at commit
        return {"slug": slug}

    @app.get("/orgs")
    def slugs(uow: UoW) -> list[str]:
        return [o.slug for o in uow.organizations.list(order_by="slug")]

    return app


def _slugs(store: Store[Any]) -> list[str]:
    with store.unit_of_work() as uow:
        return [o.slug for o in uow.organizations.list(order_by="slug")]


@pytest.fixture
def isolated(store: Store[Any]) -> Iterator[UnitOfWork]:
    with isolated_unit_of_work(store) as uow:
        yield uow
    assert _slugs(store) == []  # everything the test and the app wrote is gone


def test_a_request_through_testclient_writes_into_the_test_transaction(
    store: Store[Any], isolated: UnitOfWork
) -> None:
    isolated.organizations.add(Organization(name="Mine", slug="mine"))
    with TestClient(make_app(store)) as client:  # its shutdown does not close the store
        assert client.post("/orgs/app").status_code == 201
        assert client.get("/orgs").json() == ["app", "mine"]  # the app sees the test's rows
        assert client.post("/orgs/app").status_code == 409  # a failed commit: its own only
    assert [o.slug for o in isolated.organizations.list(order_by="slug")] == ["app", "mine"]
    isolated.organizations.add(Organization(name="Later", slug="later"))  # still usable


def test_a_request_through_httpx_writes_into_the_test_transaction(
    store: Store[Any], isolated: UnitOfWork
) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=make_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/orgs/httpx")).status_code == 201
            assert (await client.post("/orgs/httpx")).status_code == 409

    asyncio.run(main())
    assert [o.slug for o in isolated.organizations.list()] == ["httpx"]


def test_threads_at_once_take_turns_on_the_test_connection(
    store: Store[Any], isolated: UnitOfWork
) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(5):
                with store.unit_of_work() as uow:
                    uow.organizations.add(Organization(name=f"T{n}", slug=f"t{n}-{i}"))
                    uow.organizations.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    for _ in range(10):  # the test's own statements meanwhile
        isolated.organizations.count()
    for thread in threads:
        thread.join()
    assert errors == []
    assert isolated.organizations.count() == 20


def test_a_unit_of_work_left_open_in_another_thread_is_a_clear_error() -> None:
    from flowstore import Settings

    with Store(settings=Settings(pool_timeout=0.5)) as store:
        opened, release = threading.Event(), threading.Event()

        def leaky() -> None:
            with store.unit_of_work() as uow:
                uow.organizations.add(Organization(name="L", slug=f"l-{uuid.uuid4()}"))
                opened.set()
                release.wait(10)

        with isolated_unit_of_work(store) as uow:
            thread = threading.Thread(target=leaky)
            thread.start()
            opened.wait(10)
            with pytest.raises(InvalidInputError, match="stayed busy"):
                uow.organizations.count()
            release.set()
            thread.join()
            assert uow.organizations.count() == 1


# -- the async fixtures, in a user's project (the installed plugin, anyio's runner) ----------

ASYNC_PROJECT = """
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI

from flowstore.aio import AsyncUnitOfWork
from flowstore.ext.fastapi import install, unit_of_work
from flowstore.models import Organization

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_app(store):
    app = FastAPI()
    install(app, store)
    UoW = Annotated[AsyncUnitOfWork, unit_of_work(store)]

    @app.post("/orgs/{slug}", status_code=201)
    async def create(slug: str, uow: UoW) -> dict:
        uow.session.add(Organization(name=slug, slug=slug))
        return {"slug": slug}

    return app


async def test_a_writes_through_the_app(async_flowstore_store, async_uow):
    transport = httpx.ASGITransport(app=make_app(async_flowstore_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/orgs/acme")).status_code == 201
        assert (await client.post("/orgs/acme")).status_code == 409
    assert await async_uow.organizations.count(slug="acme") == 1
    await async_uow.organizations.add(Organization(name="Mine", slug="mine"))
    await async_uow.commit()


async def test_b_sees_nothing(async_uow):
    assert await async_uow.organizations.count() == 0
"""


def test_the_async_fixtures_isolate_an_app_under_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=ASYNC_PROJECT)
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)


@pytest.mark.parametrize("backend", [b for b in ("postgresql",) if b in BACKENDS])
def test_the_async_fixtures_run_on_a_server(
    pytester: pytest.Pytester, request: pytest.FixtureRequest, backend: str
) -> None:
    url = server_database(request, backend, "akit").url.render_as_string(hide_password=False)
    pytester.makepyfile(test_user=ASYNC_PROJECT)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", f"--flowstore-url={url}")
    result.assert_outcomes(passed=2)
    with Store(url) as store:
        assert _slugs(store) == []


def test_a_task_outside_the_test_is_refused(aio_url: str) -> None:  # noqa: F811
    async def main() -> None:
        async with AsyncStore(aio_url) as store:
            outside: asyncio.Queue[Any] = asyncio.Queue()

            async def stranger() -> None:  # started before the test: not one of its tasks
                await outside.get()
                try:
                    async with store.unit_of_work() as uow:
                        await uow.organizations.count()
                except InvalidInputError as exc:
                    await outside.put(exc)

            task = asyncio.create_task(stranger())
            async with isolated_async_unit_of_work(store) as uow:
                await uow.organizations.add(Organization(name="Mine", slug="mine"))
                await outside.put("go")
                await asyncio.sleep(0.05)
                error = await asyncio.wait_for(outside.get(), 10)
                assert "outside the test" in str(error)
                assert await uow.organizations.count() == 1
            await task
            async with store.unit_of_work() as uow:
                assert await uow.organizations.count() == 0

    asyncio.run(main())
