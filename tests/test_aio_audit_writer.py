"""The AuditWriter from the async face: ``uow.audit_logs.writer()`` and ``AuditWriter(async_store)``
store their entries (their thread gets a synchronous engine of its own on the same database)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowstore import InvalidInputError
from flowstore.aio import AsyncStore
from flowstore.audit_writer import AuditWriter
from flowstore.models import Organization
from tests.test_aio import aio_url, arun, migrated_sqlite_file  # noqa: F401 (fixtures)


def test_a_writer_from_an_async_unit_of_work_stores_its_entries(aio_url: str) -> None:  # noqa: F811
    if aio_url == "sqlite://":
        pytest.skip("the async in-memory database is refused: see the next test")

    async def body(store: AsyncStore[Any]) -> None:
        async with store.unit_of_work() as uow:
            org = await uow.organizations.add(Organization(name="A", slug="a"))
            writer = await uow.audit_logs.writer(batch_size=10)
        for i in range(25):
            writer.write({"org_id": org.id, "action": f"a{i}", "resource_type": "thing"})
        await asyncio.to_thread(writer.close)  # it blocks: not on the event loop
        assert writer.stats.written == 25 and writer.stats.failed == 0
        standalone = AuditWriter(store)
        standalone.write({"org_id": org.id, "action": "more", "resource_type": "thing"})
        await asyncio.to_thread(standalone.close)
        async with store.unit_of_work() as uow:
            assert await uow.audit_logs.count(org_id=org.id) == 26

    arun(aio_url, body)


def test_the_async_in_memory_database_is_refused_with_a_reason() -> None:
    async def body(store: AsyncStore[Any]) -> None:
        with pytest.raises(InvalidInputError, match="in-memory"):
            AuditWriter(store)

    arun("sqlite://", body)
