"""What the async face costs: the same work through ``flowstore.aio.AsyncStore`` and through
the sync ``Store``, on the same database.

Work (each the median of several runs, the table emptied or the rows made beforehand, untimed):

* ``add_many``: 5000 deployments in one unit of work;
* ``get``: 2000 gets by id, in one unit of work (a fresh session: every get is a SELECT);
* the same gets with the async face making them all in one ``run()`` (one greenlet switch):
  what is left over the sync face is the async driver's cost, not flowstore's;
* ``unit of work + get``: 300 units of work of one get each (session, connection, transaction).

The async face runs the sync repository code in SQLAlchemy's greenlet (``run_sync``), so its
extra cost per awaited call is one greenlet switch plus the async driver's own overhead
(aiosqlite hands every DBAPI call, about eight per get, to its thread and back; psycopg's
async connection goes through the event loop). Wall and CPU time are both reported: on a
shared machine CPU time (this process, all threads) is the steadier figure.

    .venv/bin/python scripts/bench_async.py [--backends sqlite,postgresql] [--quick]

``run(backends)`` is what ``make bench`` (scripts/bench.py) calls: ``backends`` maps a backend
name to the URL of a new, migrated database (or is a list of names: throwaway databases are
made here). MySQL is skipped: flowstore.aio supports aiosqlite and psycopg.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from bench_core import rows_table, throwaway_url
from sqlalchemy import delete

from flowstore import Store
from flowstore.aio import AsyncStore
from flowstore.models import Deployment, DeploymentStatus

ASYNC_BACKENDS = ("sqlite", "postgresql")
FULL = {"insert": 5000, "gets": 2000, "units": 300, "repeats": 5}
QUICK = {"insert": 1000, "gets": 400, "units": 60, "repeats": 3}


def _deployments(n: int) -> list[Deployment]:
    return [
        Deployment(name=f"svc-{i}", version="1.4.2", status=DeploymentStatus.RUNNING)
        for i in range(n)
    ]


def _bench_backend(backend: str, url: str, sizes: Mapping[str, int]) -> list[dict[str, Any]]:
    repeats = sizes["repeats"]
    sync_store = Store(url)
    runner = asyncio.Runner()
    async_store = runner.run(_open(url))

    def empty() -> None:
        with sync_store.unit_of_work() as uow:
            uow.session.execute(delete(Deployment))

    # -- add_many ---------------------------------------------------------------------------
    def sync_insert() -> None:
        with sync_store.unit_of_work() as uow:
            uow.deployments.add_many(_deployments(sizes["insert"]))

    async def async_insert() -> None:
        async with async_store.unit_of_work() as uow:
            await uow.deployments.add_many(_deployments(sizes["insert"]))

    # -- gets -------------------------------------------------------------------------------
    ids: list[uuid.UUID] = []

    def seed() -> None:
        empty()
        with sync_store.unit_of_work() as uow:
            made = uow.deployments.add_many(_deployments(sizes["gets"]))
        ids[:] = [d.id for d in made]
        random.Random(7).shuffle(ids)

    def sync_gets() -> None:
        with sync_store.unit_of_work() as uow:
            for ident in ids:
                uow.deployments.get(ident)

    async def async_gets() -> None:
        async with async_store.unit_of_work() as uow:
            for ident in ids:
                await uow.deployments.get(ident)

    async def async_gets_one_step() -> None:
        async with async_store.unit_of_work() as uow:
            await uow.deployments.run(lambda repo: [repo.get(ident) for ident in ids])

    def sync_units() -> None:
        for ident in ids[: sizes["units"]]:
            with sync_store.unit_of_work() as uow:
                uow.deployments.get(ident)

    async def async_units() -> None:
        for ident in ids[: sizes["units"]]:
            async with async_store.unit_of_work() as uow:
                await uow.deployments.get(ident)

    rows: list[dict[str, Any]] = []

    def compare(
        work: str,
        per: int,
        sync_run: Callable[[], object],
        async_run: Callable[[], Coroutine[Any, Any, None]],
        setup: Callable[[], object] | None = None,
    ) -> None:
        # Sync and async runs alternate, so that a change in the machine's load hits both.
        sync_times, async_times = [], []
        for _ in range(repeats):
            sync_times.append(_timed(sync_run, setup))
            async_times.append(_timed(lambda: runner.run(async_run()), setup))
        rows.append(_row(backend, work, per, _median(sync_times), _median(async_times)))

    try:
        compare(f"add_many {sizes['insert']}", sizes["insert"], sync_insert, async_insert, empty)
        seed()
        compare(f"get x{sizes['gets']}, one unit of work", sizes["gets"], sync_gets, async_gets)
        compare(
            f"get x{sizes['gets']}, one unit of work, async in one run()",
            sizes["gets"],
            sync_gets,
            async_gets_one_step,
        )
        compare(f"unit of work + get x{sizes['units']}", sizes["units"], sync_units, async_units)
    finally:
        runner.run(async_store.close())
        runner.close()
        sync_store.close()
    return rows


async def _open(url: str) -> AsyncStore:
    store = AsyncStore(url)
    await store.ping()
    return store


def _timed(work: Callable[[], object], setup: Callable[[], object] | None) -> tuple[float, float]:
    """Wall and CPU seconds of one ``work()`` (CPU: every thread of this process, aiosqlite's
    included; less disturbed by other processes on a shared machine than wall time)."""
    if setup is not None:
        setup()
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def _median(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def _row(
    backend: str, work: str, per: int, sync: tuple[float, float], asynchronous: tuple[float, float]
) -> dict[str, Any]:
    (sync_wall, sync_cpu), (async_wall, async_cpu) = sync, asynchronous
    return {
        "backend": backend,
        "work": work,
        "sync us/op": sync_wall / per * 1e6,
        "async us/op": async_wall / per * 1e6,
        "async / sync": async_wall / sync_wall,
        "sync cpu us/op": sync_cpu / per * 1e6,
        "async cpu us/op": async_cpu / per * 1e6,
        "async / sync (cpu)": async_cpu / sync_cpu,
    }


def run(
    backends: Mapping[str, str] | Iterable[str], *, quick: bool = False
) -> list[dict[str, Any]]:
    """Benchmark rows for each backend; ``backends`` maps names to migrated databases' URLs,
    or names backends to make throwaway databases on."""
    sizes = QUICK if quick else FULL
    cleanups: list[Callable[[], None]] = []
    rows: list[dict[str, Any]] = []
    try:
        if isinstance(backends, Mapping):
            urls = dict(backends)
        else:
            urls = {}
            for name in backends:
                if name in ASYNC_BACKENDS:
                    urls[name] = throwaway_url(name, "async", cleanups)
                else:
                    urls[name] = ""
        for backend, url in urls.items():
            if backend not in ASYNC_BACKENDS:
                rows.append({"backend": backend, "work": "skipped: flowstore.aio has no driver"})
                continue
            rows.extend(_bench_backend(backend, url, sizes))
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default=",".join(ASYNC_BACKENDS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.backends.split(",") if name.strip()]
    print("\n".join(rows_table(run(names, quick=args.quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
