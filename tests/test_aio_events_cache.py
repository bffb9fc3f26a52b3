"""The async face records and reads events, and reads through the cache, as the sync one."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowstore import Store
from flowstore.aio import AsyncStore
from flowstore.models import Organization
from tests.backends import selected_backends
from tests.conftest import empty_tables
from tests.redis_db import own_redis_database

AIO_BACKENDS = [b for b in selected_backends() if b in {"sqlite_file", "postgresql"}]


@pytest.fixture(params=AIO_BACKENDS)
def aio_url(
    request: pytest.FixtureRequest, server_stores: dict[str, Store], migrated_sqlite_file: Path,
    tmp_path: Path,
) -> str:  # fmt: skip
    if request.param == "sqlite_file":
        copy = tmp_path / "aio.sqlite3"
        shutil.copyfile(migrated_sqlite_file, copy)
        return f"sqlite:///{copy}"
    shared = server_stores["postgresql"]
    empty_tables(shared)
    return shared.url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with own_redis_database() as url:
        yield url


def test_async_units_of_work_record_and_read_events(aio_url: str) -> None:
    async def main() -> None:
        async with AsyncStore(aio_url) as store:
            async with store.unit_of_work() as uow:
                org = await uow.organizations.add(Organization(name="Acme", slug="acme"))
                uow.events.publish("welcome.sent", {"to": "acme"}, entity_id=org.id)
            try:
                async with store.unit_of_work() as uow:
                    await uow.organizations.add(Organization(name="Gone", slug="gone"))
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            events = await store.events.read()
            assert [(e.type, e.entity_id) for e in events] == [
                ("organization.created", str(org.id)),
                ("welcome.sent", str(org.id)),
            ]
            assert await store.events.last_id() == events[-1].id
            assert await store.events.read(after=events[-1].id) == []

    asyncio.run(main())


def test_async_reads_go_through_the_cache_and_see_commits(aio_url: str, redis_url: str) -> None:
    async def main() -> None:
        async with AsyncStore(aio_url, cache_url=redis_url) as store:
            async with store.unit_of_work() as uow:
                org = await uow.organizations.add(Organization(name="Acme", slug="acme"))
                app, raw = await uow.applications.create_with_api_key(org.id, "gateway")
            for _ in range(3):
                async with store.unit_of_work() as uow:
                    assert (await uow.applications.get_by_api_key(raw)).id == app.id  # type: ignore[union-attr]
            assert store.cache is not None and store.cache.stats.hits >= 1
            async with store.unit_of_work() as uow:
                fresh = await uow.applications.rotate_api_key(app.id)
            async with store.unit_of_work() as uow:
                assert await uow.applications.get_by_api_key(raw) is None
                assert (await uow.applications.get_by_api_key(fresh)).id == app.id  # type: ignore[union-attr]

    asyncio.run(main())
