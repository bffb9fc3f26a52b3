"""Job queue throughput: claim + acknowledge, jobs/s, with 1, 2 and 4 worker processes.

Every backend runs four loops on the same ``jobs`` table, each in ``workers`` processes that
start together and stop after a fixed window (the figure is acknowledged jobs per second of
wall time, over all processes):

* ``flowstore single``: ``queue.dequeue()`` then ``queue.acknowledge(job)``;
* ``flowstore batch N``: ``queue.dequeue_many(N)`` then ``queue.acknowledge_many(jobs)``;
* ``raw single`` / ``raw batch N``: the floor to beat, a hand-written loop on the driver
  (psycopg, PyMySQL, sqlite3) doing the same claim and acknowledge: PostgreSQL one
  ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` in autocommit,
  MariaDB ``SELECT ... FOR UPDATE SKIP LOCKED`` + ``UPDATE`` in one transaction, SQLite one
  ``UPDATE ... RETURNING``; then one acknowledging ``UPDATE``. It skips what flowstore adds:
  reclaiming expired leases, checking claims, building ``Job`` objects, sessions.

Each commit of a claim or an acknowledgement is a durable write (an fsync on PostgreSQL and
MariaDB with their default settings), which bounds the single-job loops.

    .venv/bin/python scripts/bench_queue.py [--backends sqlite,postgresql,mysql] [--quick]

``run(backends)`` is what ``make bench`` (scripts/bench.py) calls: ``backends`` maps a backend
name to the URL of a new, migrated database, or is a list of names (throwaway databases are
made here, through ``tests.backends.create_database``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from typing import Any, TypedDict

from bench_core import rows_table, throwaway_url
from sqlalchemy import delete, make_url

from flowstore import Store
from flowstore.models import Job, JobStatus
from flowstore.queue import JobQueue

QUEUE = "bench"
BATCH = 20
WORKERS = (1, 2, 4)


class Sizes(TypedDict):
    """How long each case is measured (seconds) and how many jobs wait at its start."""

    window: float
    backlog: int


FULL: Sizes = {"window": 1.5, "backlog": 6000}
QUICK: Sizes = {"window": 0.6, "backlog": 3000}

Loop = Callable[[str, int, Event, Event], int]


# -- the loops: each runs in a worker process until ``stop`` is set; returns jobs acknowledged --


def flowstore_loop(url: str, batch: int, start: Event, stop: Event) -> int:
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
    start.wait()
    while not stop.is_set():
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


def _lease() -> tuple[datetime, datetime, uuid.UUID]:
    now = datetime.now(UTC)
    return now, now + timedelta(seconds=60), uuid.uuid4()


def raw_postgresql_loop(url: str, batch: int, start: Event, stop: Event) -> int:
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
    start.wait()
    with conn.cursor() as cur:
        while not stop.is_set():
            now, until, token = _lease()
            cur.execute(claim, (until, token, now, QUEUE, now, batch))
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                break
            cur.execute(ack, (datetime.now(UTC), now, ids, token))
            done += len(ids)
    conn.close()
    return done


def raw_mysql_loop(url: str, batch: int, start: Event, stop: Event) -> int:
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
    start.wait()
    with conn.cursor() as cur:
        while not stop.is_set():
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


def raw_sqlite_loop(url: str, batch: int, start: Event, stop: Event) -> int:
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
    start.wait()
    while not stop.is_set():
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


# -- running a loop in several processes -----------------------------------------------------


def _child(loop: Loop, url: str, batch: int, start: Event, stop: Event, results: Any) -> None:
    count = loop(url, batch, start, stop)
    results.put((count, time.perf_counter()))


def _top_up(store: Store, backlog: int) -> None:
    """Make sure the queue holds at least ``backlog`` due jobs."""
    queue = store.queue(QUEUE)
    missing = backlog - queue.counts()[JobStatus.QUEUED]
    while missing > 0:
        chunk = min(missing, 2000)
        queue.enqueue_many({"n": n, "body": "x" * 64} for n in range(chunk))
        missing -= chunk


def measure_loop(
    store: Store, url: str, loop: Loop, batch: int, workers: int, window: float, backlog: int
) -> tuple[int, float]:
    """Run ``loop`` in ``workers`` processes for ``window`` seconds: (jobs, seconds)."""
    _top_up(store, backlog)
    store.engine.dispose()  # no pooled connection crosses the fork
    context = (
        multiprocessing.get_context("spawn")
        if sys.platform == "win32"
        else multiprocessing.get_context("fork")
    )
    start, stop, results = context.Event(), context.Event(), context.Queue()
    processes = [
        context.Process(target=_child, args=(loop, url, batch, start, stop, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    time.sleep(0.5)  # let every process connect and warm up before the clock starts
    began = time.perf_counter()
    start.set()
    time.sleep(window)
    stop.set()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    jobs = sum(count for count, _ in reports)
    return jobs, max(ended for _, ended in reports) - began


def _reset(store: Store) -> None:
    with store.session_factory() as session, session.begin():
        session.execute(delete(Job).where(Job.queue == QUEUE))


def _mode(case: str) -> str:
    return case.split(" ", 1)[1]


def bench_backend(
    backend: str, url: str, *, window: float, backlog: int, workers: Iterable[int] = WORKERS
) -> list[dict[str, Any]]:
    """The rows of one backend: every case with every number of workers."""
    name = "sqlite" if backend.startswith("sqlite") else backend
    cases: list[tuple[str, Loop, int]] = [
        ("flowstore single", flowstore_loop, 1),
        (f"flowstore batch {BATCH}", flowstore_loop, BATCH),
        ("raw single", RAW_LOOPS[name], 1),
        (f"raw batch {BATCH}", RAW_LOOPS[name], BATCH),
    ]
    rows: list[dict[str, Any]] = []
    store = Store(url)
    try:
        _reset(store)
        for count in workers:
            for case, loop, batch in cases:
                jobs, seconds = measure_loop(store, url, loop, batch, count, window, backlog)
                rows.append(
                    {
                        "backend": name,
                        "case": case,
                        "workers": count,
                        "jobs": jobs,
                        "seconds": round(seconds, 3),
                        "jobs_per_s": round(jobs / seconds, 1) if seconds > 0 else 0.0,
                    }
                )
    finally:
        store.close()
    floors = {(r["workers"], _mode(r["case"])): r["jobs_per_s"] for r in rows if "raw" in r["case"]}
    for row in rows:
        floor = floors.get((row["workers"], _mode(row["case"])))
        row["vs_raw"] = round(row["jobs_per_s"] / floor, 2) if floor else ""
    order = {case: i for i, (case, _, _) in enumerate(cases)}
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
            rows += bench_backend(backend, str(url), **sizes)
        return rows
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run([b.strip() for b in args.backends.split(",") if b.strip()], quick=args.quick)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("\n".join(rows_table(rows)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
