"""Job queue throughput: claim + acknowledge, jobs/s, with 1, 2 and 4 worker processes, beside
a hand-written raw-driver loop and (on PostgreSQL) pgqueuer, in one pass.

Every case starts from the same table: ``JOBS`` due jobs (20,000) of one queue, the table
vacuumed on PostgreSQL. ``workers`` processes warm up (connect, compile), report ready, start
together, and claim until the queue is empty (batch cases) or a window ends (single-job cases);
the figure is jobs acknowledged per second of wall time, over all processes.

* ``flowstore single``: ``queue.dequeue()`` then ``queue.acknowledge(job)``;
* ``flowstore batch 10``: ``queue.dequeue_many(10)`` then ``queue.acknowledge_many(jobs)``;
* ``raw single`` / ``raw batch 10``: the floor to beat, a hand-written loop on the driver
  (psycopg, PyMySQL, sqlite3) doing the same claim and acknowledge: PostgreSQL one
  ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` in autocommit,
  MariaDB ``SELECT ... FOR UPDATE SKIP LOCKED`` + ``UPDATE`` in one transaction, SQLite one
  ``UPDATE ... RETURNING``; then one acknowledging ``UPDATE``. It skips what flowstore adds:
  reclaiming expired leases, checking claims, building ``Job`` objects.
* ``pgqueuer batch 10`` (PostgreSQL): pgqueuer (asyncpg) on its own table holding the same
  number of jobs with the same payload, each process a ``QueueManager`` with a no-op
  entrypoint, ``run(batch_size=10, mode=drain)``; its set-up (a few queries) is inside the
  clock, as its ``run`` does it.

The goals of issue 18 are checked on the rows (column ``goal``): PostgreSQL batches of 10 at
least 1.2x pgqueuer and 0.5x the raw loop, single claims at least 0.6x the raw loop.
``worker_cpu_us_per_job`` is the CPU time the worker processes spent per job (from the start
signal to their end): what each way costs on the client, which the wall-clock figures of a
shared machine (other work, other fsyncs) blur.


    .venv/bin/python scripts/bench_queue.py [--backends sqlite,postgresql,mysql] [--quick]

``run(backends)`` is what ``make bench`` (scripts/bench.py) calls: ``backends`` maps a backend
name to the URL of a new, migrated database, or is a list of names (throwaway databases are
made here, through ``tests.backends.create_database``). pgqueuer and asyncpg come with the
``bench`` extra (``pip install -e '.[bench]'``); without them the pgqueuer rows say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from bench_core import rows_table, throwaway_url
from sqlalchemy import delete, make_url, text

from flowstore import Store
from flowstore.models import Job
from flowstore.queue import JobQueue

QUEUE = "bench"
BATCH = 10
WORKERS: tuple[int, ...] = (1, 2, 4)
PAYLOAD = {"body": "x" * 64}


class Sizes(TypedDict):
    """How many jobs each case starts with, and how long a single-job case runs (seconds)."""

    jobs: int
    window: float


FULL: Sizes = {"jobs": 20_000, "window": 3.0}
QUICK: Sizes = {"jobs": 3_000, "window": 0.6}


@dataclass
class Gate:
    """What a worker process shares with the parent: it says it is ready, waits for the
    start, and stops when the queue is empty or ``stop`` is set."""

    ready: Any
    start: Any
    stop: Any

    def open(self) -> None:
        self.ready.put(os.getpid())
        self.start.wait()
        self.cpu_started = time.process_time()

    cpu_started: float = 0.0


Loop = Callable[[str, int, Gate], int]


# -- the loops: each runs in a worker process; returns the jobs it acknowledged ---------------


def flowstore_loop(url: str, batch: int, gate: Gate) -> int:
    store = Store(url)
    queue = JobQueue(store, QUEUE, lease_seconds=60)
    # Warm up out of the clock: connect, configure the mappers, compile the statements.
    warm = JobQueue(store, f"warmup-{os.getpid()}")
    warm.enqueue_many([{}, {}])
    warm.acknowledge_many(warm.dequeue_many(1))
    job = warm.dequeue()
    if job is not None:  # MySQL: SKIP LOCKED may pass over a row another claim is reading
        warm.acknowledge(job)
    done = 0
    gate.open()
    with queue.pinned():  # as a worker's thread does: one connection for its loop
        while not gate.stop.is_set():
            if batch == 1:
                job = queue.dequeue()
                if job is None:
                    break
                queue.acknowledge(job)
                done += 1
            else:
                jobs = queue.dequeue_many(batch)
                if not jobs:
                    break
                queue.acknowledge_many(jobs)
                done += len(jobs)
    store.close()
    return done


def _dsn(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def pgqueuer_loop(url: str, batch: int, gate: Gate) -> int:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    async def main() -> int:
        connection = await asyncpg.connect(_dsn(url))
        manager = QueueManager(Queries(AsyncpgDriver(connection)))
        done = 0

        @manager.entrypoint(QUEUE)  # type: ignore[untyped-decorator, unused-ignore]
        async def handle(job: Any) -> None:
            nonlocal done
            done += 1

        await asyncio.get_running_loop().run_in_executor(None, gate.open)
        await manager.run(
            batch_size=batch,
            mode=QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=1),
            log_aggregation_interval=timedelta(0),
        )
        await connection.close()
        return done

    return asyncio.run(main())


def _lease() -> tuple[datetime, datetime, uuid.UUID]:
    now = datetime.now(UTC)
    return now, now + timedelta(seconds=60), uuid.uuid4()


def raw_postgresql_loop(url: str, batch: int, gate: Gate) -> int:
    import psycopg

    parsed = make_url(url)
    conn = psycopg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password,
        dbname=parsed.database, autocommit=True,
    )  # fmt: skip
    claim = (
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_expires_at = %s,"
        " claim_token = %s, locked_by = 'raw', updated_at = %s"
        " WHERE id IN (SELECT id FROM jobs WHERE queue = %s AND status = 'queued'"
        " AND run_at <= %s AND finished_at IS NULL ORDER BY priority DESC, run_at, id"
        " LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload"
    )
    ack = (
        "UPDATE jobs SET status = 'done', finished_at = %s, lease_expires_at = NULL,"
        " updated_at = %s WHERE id = ANY(%s) AND claim_token = %s AND status = 'running'"
    )
    with conn.cursor() as cur:
        now, until, token = _lease()
        cur.execute(claim, (until, token, now, "warmup", now, batch))  # nothing to claim
    done = 0
    gate.open()
    with conn.cursor() as cur:
        while not gate.stop.is_set():
            now, until, token = _lease()
            cur.execute(claim, (until, token, now, QUEUE, now, batch))
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                break
            cur.execute(ack, (datetime.now(UTC), now, ids, token))
            done += len(ids)
    conn.close()
    return done


def raw_mysql_loop(url: str, batch: int, gate: Gate) -> int:
    import pymysql

    parsed = make_url(url)
    conn = pymysql.connect(
        host=parsed.host or "127.0.0.1", port=parsed.port or 3306, user=parsed.username,
        password=parsed.password or "", database=parsed.database, autocommit=False,
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )  # fmt: skip
    pick = (
        "SELECT id FROM jobs WHERE queue = %s AND status = 'queued' AND run_at <= %s"
        " ORDER BY priority DESC, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    with conn.cursor() as cur:
        cur.execute(pick, ("warmup", datetime.now(UTC).replace(tzinfo=None), batch))
        conn.rollback()
    done = 0
    gate.open()
    with conn.cursor() as cur:
        while not gate.stop.is_set():
            now, until, token = _lease()
            naive_now, naive_until = now.replace(tzinfo=None), until.replace(tzinfo=None)
            cur.execute(pick, (QUEUE, naive_now, batch))
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                conn.rollback()
                break
            marks = ", ".join(["%s"] * len(ids))
            cur.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                " lease_expires_at = %s, claim_token = %s, locked_by = 'raw', updated_at = %s"
                f" WHERE id IN ({marks})",
                (naive_until, token.hex, naive_now, *ids),
            )
            conn.commit()
            finished = datetime.now(UTC).replace(tzinfo=None)
            cur.execute(
                "UPDATE jobs SET status = 'done', finished_at = %s, lease_expires_at = NULL,"
                f" updated_at = %s WHERE id IN ({marks}) AND claim_token = %s"
                " AND status = 'running'",
                (finished, finished, *ids, token.hex),
            )
            conn.commit()
            done += len(ids)
    conn.close()
    return done


def _sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores a (naive UTC) datetime in SQLite."""
    return moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def raw_sqlite_loop(url: str, batch: int, gate: Gate) -> int:
    conn = sqlite3.connect(make_url(url).database or "", isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = NORMAL")
    claim = (
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_expires_at = ?,"
        " claim_token = ?, locked_by = 'raw', updated_at = ?"
        " WHERE id IN (SELECT id FROM jobs WHERE queue = ? AND status = 'queued'"
        " AND run_at <= ? AND finished_at IS NULL ORDER BY priority DESC, run_at, id LIMIT ?)"
        " RETURNING id, payload"
    )
    now, until, token = _lease()
    stamp = _sqlite_time(now)
    conn.execute(claim, (_sqlite_time(until), token.hex, stamp, "warmup", stamp, batch))
    done = 0
    gate.open()
    while not gate.stop.is_set():
        now, until, token = _lease()
        stamp = _sqlite_time(now)
        params = (_sqlite_time(until), token.hex, stamp, QUEUE, stamp, batch)
        ids = [row[0] for row in conn.execute(claim, params)]
        if not ids:
            break
        marks = ", ".join("?" * len(ids))
        finished = _sqlite_time(datetime.now(UTC))
        conn.execute(
            "UPDATE jobs SET status = 'done', finished_at = ?, lease_expires_at = NULL,"
            f" updated_at = ? WHERE id IN ({marks}) AND claim_token = ? AND status = 'running'",
            (finished, finished, *ids, token.hex),
        )
        done += len(ids)
    conn.close()
    return done


RAW_LOOPS: dict[str, Loop] = {
    "postgresql": raw_postgresql_loop,
    "mysql": raw_mysql_loop,
    "sqlite": raw_sqlite_loop,
}


# -- filling, running a loop in several processes --------------------------------------------


def _child(loop: Loop, url: str, batch: int, gate: Gate, results: Any) -> None:
    count = loop(url, batch, gate)
    results.put((count, time.perf_counter(), time.process_time() - gate.cpu_started))


def _fill_jobs(store: Store, count: int) -> None:
    """Empty the bench queue, then give it ``count`` due jobs (vacuumed on PostgreSQL, so
    every case starts from the same table)."""
    with store.session_factory() as session, session.begin():
        session.execute(delete(Job).where(Job.queue == QUEUE))
    queue = store.queue(QUEUE)
    for first in range(0, count, 5000):
        queue.enqueue_many({"n": n, **PAYLOAD} for n in range(first, min(count, first + 5000)))
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE jobs")
            )


def _fill_pgqueuer(url: str, count: int) -> None:
    """Install pgqueuer's tables (once), empty them, and enqueue ``count`` jobs."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    async def fill() -> None:
        connection = await asyncpg.connect(_dsn(url))
        queries = Queries(AsyncpgDriver(connection))
        if not await queries.schema_is_installed():
            await queries.install()
        await queries.clear_queue()
        body = json.dumps(PAYLOAD).encode()
        for first in range(0, count, 5000):
            size = min(count, first + 5000) - first
            await queries.enqueue([QUEUE] * size, [body] * size, [0] * size)
        await connection.execute("VACUUM ANALYZE")
        await connection.close()

    asyncio.run(fill())


def measure_loop(
    store: Store, url: str, case: Case, workers: int, sizes: Sizes
) -> tuple[int, float, float]:
    """Run ``case`` in ``workers`` processes from a full queue: (jobs, seconds, CPU seconds
    of the worker processes)."""
    if case.loop is pgqueuer_loop:
        _fill_pgqueuer(url, sizes["jobs"])
    else:
        _fill_jobs(store, sizes["jobs"])
    store.engine.dispose()  # no pooled connection crosses the fork
    context = multiprocessing.get_context("fork")
    gate = Gate(context.Queue(), context.Event(), context.Event())
    results = context.Queue()
    processes = [
        context.Process(target=_child, args=(case.loop, url, case.batch, gate, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        gate.ready.get(timeout=120)
    began = time.perf_counter()
    gate.start.set()
    if case.batch == 1:
        time.sleep(sizes["window"])
        gate.stop.set()
    reports = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    jobs = sum(count for count, _, _ in reports)
    return jobs, max(ended for _, ended, _ in reports) - began, sum(cpu for _, _, cpu in reports)


@dataclass(frozen=True)
class Case:
    name: str
    loop: Loop
    batch: int


def _cases(backend: str) -> list[Case]:
    cases = [
        Case("flowstore single", flowstore_loop, 1),
        Case(f"flowstore batch {BATCH}", flowstore_loop, BATCH),
        Case("raw single", RAW_LOOPS[backend], 1),
        Case(f"raw batch {BATCH}", RAW_LOOPS[backend], BATCH),
    ]
    if backend == "postgresql" and _has_pgqueuer():
        cases.append(Case(f"pgqueuer batch {BATCH}", pgqueuer_loop, BATCH))
    return cases


def _has_pgqueuer() -> bool:
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
    except ImportError:
        return False
    return True


def _goal(row: dict[str, Any]) -> str:
    """Issue 18's goals, on a PostgreSQL row of flowstore's."""
    if row["backend"] != "postgresql" or not row["case"].startswith("flowstore"):
        return ""
    checks = []
    if row["case"] == "flowstore single":
        checks.append(("0.6x raw", row["vs_raw"], 0.6))
    else:
        checks.append(("0.5x raw", row["vs_raw"], 0.5))
        checks.append(("1.2x pgqueuer", row.get("vs_pgqueuer"), 1.2))
    return "; ".join(
        f"{label}: {'held' if isinstance(got, float) and got >= want else 'MISSED'}"
        for label, got, want in checks
    )


def bench_backend(
    backend: str, url: str, sizes: Sizes, workers: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """The rows of one backend: every case with every number of workers."""
    name = "sqlite" if backend.startswith("sqlite") else backend
    cases = _cases(name)
    rows: list[dict[str, Any]] = []
    store = Store(url)
    try:
        for count in workers or WORKERS:
            for case in cases:
                jobs, seconds, cpu = measure_loop(store, url, case, count, sizes)
                rows.append(
                    {
                        "backend": name,
                        "case": case.name,
                        "workers": count,
                        "jobs": jobs,
                        "seconds": round(seconds, 3),
                        "jobs_per_s": round(jobs / seconds, 1) if seconds > 0 else 0.0,
                        "worker_cpu_us_per_job": round(cpu / jobs * 1e6, 1) if jobs else "",
                    }
                )
    finally:
        store.close()
    by = {(r["workers"], r["case"]): r["jobs_per_s"] for r in rows}
    for row in rows:
        mode = row["case"].split(" ", 1)[1]
        raw = by.get((row["workers"], f"raw {mode}"))
        row["vs_raw"] = round(row["jobs_per_s"] / raw, 2) if raw else ""
        rival = by.get((row["workers"], f"pgqueuer {mode}"))
        row["vs_pgqueuer"] = round(row["jobs_per_s"] / rival, 2) if rival else ""
        row["goal"] = _goal(row)
    order = {case.name: i for i, case in enumerate(cases)}
    rows.sort(key=lambda r: (order[r["case"]], r["workers"]))
    return rows


def run(
    backends: Mapping[str, str] | Iterable[str], *, quick: bool = False
) -> list[dict[str, Any]]:
    """Measure every backend; ``backends`` maps names to migrated database URLs, or lists
    names (``sqlite``, ``postgresql``, ``mysql``) to measure on throwaway databases."""
    sizes = QUICK if quick else FULL
    cleanups: list[Callable[[], None]] = []
    if isinstance(backends, Mapping):
        urls = dict(backends)
    else:
        urls = {name: throwaway_url(name, "queue", cleanups) for name in backends}
    try:
        rows: list[dict[str, Any]] = []
        for backend, url in urls.items():
            rows += bench_backend(backend, str(url), sizes)
        return rows
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--quick", action="store_true", help="fewer jobs, shorter windows")
    parser.add_argument("--workers", default="1,2,4", help="numbers of worker processes")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    global WORKERS
    WORKERS = tuple(int(n) for n in args.workers.split(","))
    rows = run([b.strip() for b in args.backends.split(",") if b.strip()], quick=args.quick)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("\n".join(rows_table(rows)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
