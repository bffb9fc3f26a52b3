"""Change events and the read cache: what they cost, and what the cache saves.

* **one-row unit of work**: ``with store.unit_of_work(): add(one deployment)`` (commit
  included), events off against events on; the goal is at most 1.25x on PostgreSQL. Also with
  4 threads writing at once (events serialise their commits: the cost under contention).
* **add_many of 2,000**: the bulk path, events off against on (one event row per entity).
* **get by id** and **get_by_api_key**: one unit of work per call, no cache against a warm
  cache (Redis on this machine).
* **gateway workload**: 3,000 requests over 300 applications, each ``get_by_api_key`` then
  ``organizations.get``; one request in 50 rotates a key or renames an organization. The
  figure is the share of its reads that reached the database.

    .venv/bin/python scripts/bench_events.py [--backends sqlite,postgresql,mysql]

``run(backends)`` is what ``make bench`` (scripts/bench.py) calls, as for the other
``bench_*`` modules: ``backends`` maps a backend name to the URL of a new, migrated database.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bench_core import BACKENDS, rows_table, throwaway_url
from sqlalchemy import text

from flowstore import Store
from flowstore.models import Deployment, Organization

REDIS = os.environ.get("FLOWSTORE_BENCH_REDIS", "redis://127.0.0.1:6379")
REPEATS = 5


def _median(run: Callable[[], object], per: int, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / per


def _empty(store: Store, *tables: str) -> None:
    with store.engine.begin() as conn:
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))


@contextmanager
def _redis_database() -> Iterator[str]:
    """A Redis database (1-15) held for the run with a lock key, emptied before and after."""
    import redis

    token = secrets.token_hex(4)
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        if client.set("flowstore-bench-run", token, nx=True, ex=3600):
            try:
                for key in client.scan_iter(count=1000):
                    if key != b"flowstore-bench-run":
                        client.delete(key)
                yield f"{REDIS}/{number}"
            finally:
                for key in client.scan_iter(count=1000):
                    client.delete(key)
                client.close()
            return
        client.close()
    raise RuntimeError("no free Redis database for the benchmark")


def one_row(url: str, n: int) -> tuple[float, float]:
    """Per unit of work, events off and on, their runs interleaved to share out drift."""
    with Store(url, events=False) as off, Store(url, events=True) as on:
        samples: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(REPEATS * 2):
            for events, store in ((False, off), (True, on)):
                _empty(store, "events", "deployments")
                start = time.perf_counter()
                for i in range(n):
                    with store.unit_of_work() as uow:
                        uow.deployments.add(Deployment(name=f"d{i}", version="1"))
                samples[events].append((time.perf_counter() - start) / n)
        return statistics.median(samples[False]), statistics.median(samples[True])


def one_row_threads(url: str, events: bool, n: int, threads: int = 4) -> float:
    """Commits per second with ``threads`` writers at once."""
    with Store(url, events=events) as store:
        _empty(store, "events", "deployments")

        def work() -> None:
            for i in range(n):
                with store.unit_of_work() as uow:
                    uow.deployments.add(Deployment(name=f"t{i}", version="1"))

        def run() -> None:
            pool = [threading.Thread(target=work) for _ in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()

        return 1 / _median(run, n * threads, repeats=3)


def bulk(url: str, events: bool, n: int) -> float:
    with Store(url, events=events) as store:

        def run() -> None:
            _empty(store, "events", "deployments")
            with store.unit_of_work() as uow:
                uow.deployments.add_many(Deployment(name=f"b{i}", version="1") for i in range(n))

        return _median(run, 1)


def _apps(store: Store, n: int) -> list[tuple[Any, Any, str]]:
    made = []
    with store.unit_of_work() as uow:
        for i in range(n):
            org = uow.organizations.add(Organization(name=f"org {i}", slug=f"org-{i}"))
            app, raw = uow.applications.create_with_api_key(org.id, f"app {i}")
            made.append((org.id, app.id, raw))
    return made


def reads(url: str, cache_url: str | None, n: int) -> tuple[float, float]:
    """Per-call time of ``get`` and of ``get_by_api_key``, one unit of work per call."""
    with Store(url, cache_url=cache_url) as store:
        _empty(store, "policies", "users", "applications", "organizations", "events")
        made = _apps(store, 50)
        picks = [random.Random(i).choice(made) for i in range(n)]

        def gets() -> None:
            for org_id, _app, _raw in picks:
                with store.unit_of_work() as uow:
                    uow.organizations.get(org_id)

        def keys() -> None:
            for _org, _app, raw in picks:
                with store.unit_of_work() as uow:
                    uow.applications.get_by_api_key(raw)

        gets()  # warm: fills the cache, when there is one
        keys()
        return _median(gets, n), _median(keys, n)


def gateway(url: str, cache_url: str, requests: int = 3000) -> tuple[float, int, int]:
    """(share of reads that reached the database, reads, database reads)."""
    with Store(url, cache_url=cache_url) as store:
        _empty(store, "policies", "users", "applications", "organizations", "events")
        apps = [list(row) for row in _apps(store, 300)]
        rng = random.Random(5)
        cache = store.cache
        assert cache is not None
        before = cache.stats.database_reads + cache.stats.hits
        before_db = cache.stats.database_reads
        for i in range(requests):
            entry = apps[int(rng.paretovariate(1.2)) % len(apps)]  # a few hot keys, a long tail
            with store.unit_of_work() as uow:
                app = uow.applications.get_by_api_key(entry[2])
                assert app is not None
                uow.organizations.get(app.org_id)
            if i % 50 == 49:
                with store.unit_of_work() as uow:
                    if i % 100 == 99:
                        entry[2] = uow.applications.rotate_api_key(entry[1])
                    else:
                        uow.organizations.get(entry[0]).name = f"renamed {i}"
        total = cache.stats.database_reads + cache.stats.hits - before
        database = cache.stats.database_reads - before_db
        return database / total, total, database


def run(backends: Mapping[str, str] | list[str]) -> list[dict[str, Any]]:
    if not isinstance(backends, Mapping):
        keep: list[Callable[[], None]] = []
        backends = {b: throwaway_url(b, "events", keep) for b in backends}
    rows: list[dict[str, Any]] = []
    with _redis_database() as cache_url:
        for backend, url in backends.items():
            off, on = one_row(url, 200)
            goal = "within 1.25x: " + ("held" if on / off <= 1.25 else "missed")
            rows.append(_row(backend, "unit of work writing one row", off, on, goal, backend))
            off_tps, on_tps = one_row_threads(url, False, 60), one_row_threads(url, True, 60)
            rows.append(
                {
                    "backend": backend,
                    "measure": "one-row units of work, 4 threads (commits/s)",
                    "without": f"{off_tps:,.0f}/s",
                    "with": f"{on_tps:,.0f}/s",
                    "ratio": f"{off_tps / on_tps:.2f}x",
                    "goal": "",
                }
            )
            off, on = bulk(url, False, 2000), bulk(url, True, 2000)
            rows.append(_row(backend, "add_many of 2,000 deployments", off, on, "", backend))
            plain_get, plain_key = reads(url, None, 400)
            cached_get, cached_key = reads(url, cache_url, 400)
            rows.append(_cache_row(backend, "get by id", plain_get, cached_get))
            rows.append(_cache_row(backend, "get_by_api_key", plain_key, cached_key))
            share, total, database = gateway(url, cache_url)
            rows.append(
                {
                    "backend": backend,
                    "measure": "gateway workload: reads that reached the database",
                    "without": f"{total:,} reads",
                    "with": f"{database:,} ({share:.1%})",
                    "ratio": "",
                    "goal": "",
                }
            )
    return rows


def _row(backend: str, measure: str, off: float, on: float, goal: str, _b: str) -> dict[str, Any]:
    unit = 1e3 if off >= 0.01 else 1e6
    label = "ms" if unit == 1e3 else "µs"
    return {
        "backend": backend,
        "measure": f"{measure}: events off / on",
        "without": f"{off * unit:,.1f} {label}",
        "with": f"{on * unit:,.1f} {label}",
        "ratio": f"{on / off:.2f}x",
        "goal": goal,
    }


def _cache_row(backend: str, measure: str, plain: float, cached: float) -> dict[str, Any]:
    return {
        "backend": backend,
        "measure": f"{measure}, one unit of work per call: no cache / warm cache",
        "without": f"{plain * 1e6:,.1f} µs",
        "with": f"{cached * 1e6:,.1f} µs",
        "ratio": f"{cached / plain:.2f}x",
        "goal": "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    keep: list[Callable[[], None]] = []
    try:
        urls = {b: throwaway_url(b, "events", keep) for b in args.backends.split(",") if b}
        print("\n".join(rows_table(run(urls))))
    finally:
        for cleanup in reversed(keep):
            cleanup()


if __name__ == "__main__":
    main()
