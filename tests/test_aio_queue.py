"""The job queue on the async face: ``store.queue()`` (a transaction per call) and
``uow.queue()`` (inside the unit of work), on the same backends as tests/test_aio.py."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from datetime import timedelta

import pytest

from flowstore import NotFoundError
from flowstore.aio import AsyncJobQueue, AsyncStore
from flowstore.models import Deployment, JobStatus
from flowstore.queue import JobQueue
from tests.test_aio import aio_url, arun, migrated_sqlite_file  # noqa: F401 (fixtures)


def test_every_queue_method_has_an_awaitable_twin() -> None:
    contract = ["enqueue", "dequeue", "dequeue_many", "acknowledge", "acknowledge_many", "fail"]
    for name in [*contract, "get"]:
        twin = getattr(AsyncJobQueue, name)
        assert inspect.iscoroutinefunction(twin)
        sync = inspect.signature(getattr(JobQueue, name))
        names = [p.name for p in inspect.signature(twin).parameters.values()]
        assert names == [p.name for p in sync.parameters.values()]


def test_store_queue_round_trip(aio_url: str) -> None:  # noqa: F811
    async def body(store: AsyncStore) -> None:
        queue = store.queue("mail", lease_seconds=60)
        forwarded: tuple[object, object] = (queue.name, queue.lease_seconds)
        assert forwarded == ("mail", 60)
        low = await queue.enqueue({"to": "a"}, priority=0)
        high = await queue.enqueue({"to": "b"}, priority=5)
        later = await queue.enqueue({"to": "c"}, priority=9, run_at=timedelta(hours=1))
        first = await queue.dequeue()
        assert first is not None and first.id == high and first.attempts == 1
        assert first.status is JobStatus.RUNNING
        rest = await queue.dequeue_many(5)
        assert [job.id for job in rest] == [low]  # the delayed job is not due
        await queue.acknowledge(first.id)  # a bare id: this queue object made the claim
        assert (await queue.get(high)).status is JobStatus.DONE
        assert await queue.fail(rest[0], "smtp down") is JobStatus.QUEUED
        retried = await queue.get(low)
        assert (retried.status, retried.last_error) == (JobStatus.QUEUED, "smtp down")
        assert (await queue.get(later)).status is JobStatus.QUEUED
        with pytest.raises(NotFoundError):
            await queue.get(uuid.uuid4())
        with pytest.raises(NotFoundError):
            await queue.acknowledge(uuid.uuid4())

    arun(aio_url, body)


def test_acknowledge_many_and_a_lost_claim(aio_url: str) -> None:  # noqa: F811
    async def body(store: AsyncStore) -> None:
        worker = store.queue("batch", lease_seconds=0)  # every lease has run out at once
        ids = [await worker.enqueue({"n": n}) for n in range(3)]
        claimed = await worker.dequeue_many(3)
        assert sorted(job.id for job in claimed) == sorted(ids)
        thief = store.queue("batch", lease_seconds=60)
        stolen = await thief.dequeue()
        assert stolen is not None
        assert await worker.acknowledge_many(claimed) == 2  # the stolen one is left alone
        done = [job.id for job in claimed if job.id != stolen.id]
        for job_id in done:  # the others were acknowledged, and committed
            assert (await worker.get(job_id)).status is JobStatus.DONE
        assert (await worker.get(stolen.id)).status is JobStatus.RUNNING
        assert await thief.fail(stolen, "gave up", retry=False) is JobStatus.DEAD

    arun(aio_url, body)


def test_unit_of_work_queue_commits_and_rolls_back_with_it(aio_url: str) -> None:  # noqa: F811
    async def body(store: AsyncStore) -> None:
        with pytest.raises(RuntimeError):
            async with store.unit_of_work() as uow:
                await uow.deployments.add(Deployment(name="lost", version="1"))
                await uow.queue("deploys").enqueue({"deployment": "lost"})
                raise RuntimeError
        assert await store.queue("deploys").dequeue() is None
        async with store.unit_of_work() as uow:
            dep = await uow.deployments.add(Deployment(name="kept", version="1"))
            job_id = await uow.queue("deploys").enqueue({"deployment": str(dep.id)})
        job = await store.queue("deploys").dequeue()
        assert job is not None and job.id == job_id
        assert job.payload == {"deployment": str(dep.id)}

    arun(aio_url, body)


def test_concurrent_workers_claim_each_job_once(aio_url: str) -> None:  # noqa: F811
    async def body(store: AsyncStore) -> None:
        queue = store.queue("work")
        jobs = 30
        for n in range(jobs):
            await queue.enqueue({"n": n})

        async def worker() -> list[uuid.UUID]:
            mine: list[uuid.UUID] = []
            own = store.queue("work")
            while (job := await own.dequeue()) is not None:
                mine.append(job.id)
                await own.acknowledge(job)
            return mine

        claimed = [
            job_id for ids in await asyncio.gather(*(worker() for _ in range(6))) for job_id in ids
        ]
        assert len(claimed) == len(set(claimed)) == jobs
        async with store.unit_of_work() as uow:
            counts = await uow.queue("work").counts()
        assert counts[JobStatus.DONE] == jobs

    arun(aio_url, body)
