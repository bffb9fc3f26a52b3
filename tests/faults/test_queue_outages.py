"""Worker processes draining a queue while the server crashes, stays down, or a worker dies or
stalls: nothing is lost, and a job runs twice only when its worker died or stalled past its
lease (docs/faults.md).

Runs are counted by the handler (``tests.faults.handlers:record``), one line per run start, per
process, so a run counts even when its process is killed.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from flowstore import Store
from flowstore.models import Job, JobStatus
from tests.faults.conftest import WorkerProcess, settings, stop_all, wait_for
from tests.faults.handlers import run_counts, runs, runs_by
from tests.faults.servers import Server

JOBS = 8000
Spawn = Callable[..., WorkerProcess]


def _settled(queue_counts: dict[JobStatus, int]) -> dict[str, int]:
    return {status.value: count for status, count in queue_counts.items()}


def _drain_through_outages(
    server: Server, spawn: Spawn, record_dir: Path, *, down_for: float, lease: float
) -> None:
    """4 worker processes (2 threads, batches of 5) drain 8,000 jobs while the server is
    crashed twice (at a quarter and at half done) and started again ``down_for`` later. Half
    the jobs are left after the second crash: the observer's first query after a restart can
    take a second or two, and the workers must not have drained the queue by then."""
    with Store(server.url, settings=settings()) as observer:
        queue = observer.queue("drain")
        workers = [spawn(server.url, "drain", lease=lease, batch=5, threads=2) for _ in range(4)]
        ids = set(queue.enqueue_many([{"n": n} for n in range(JOBS)]))
        for done in (JOBS // 4, JOBS // 2):
            wait_for(lambda: queue.counts()[JobStatus.DONE] >= done, f"{done} jobs done")  # noqa: B023
            finished = queue.counts()[JobStatus.DONE]
            assert finished < JOBS, "the queue drained before the crash: it tests nothing"
            server.crash()
            time.sleep(down_for)
            server.start()
        wait_for(lambda: queue.counts()[JobStatus.DONE] == JOBS, "every job to be done")
        counts = queue.counts()
    alive = [w.pid for w in workers if w.process.poll() is None]
    stop_all(workers)
    runs = run_counts(record_dir)
    print(f"figures: {_settled(counts)}, {sum(runs.values())} runs of {len(runs)} jobs")
    assert _settled(counts) == {"queued": 0, "running": 0, "done": JOBS, "dead": 0, "cancelled": 0}
    assert len(alive) == 4  # the workers survived both outages
    assert set(runs) == ids  # 0 lost
    assert {job_id: n for job_id, n in runs.items() if n > 1} == {}  # 0 run twice
    errors = [line for worker in workers for line in worker.lines("ERROR")]
    assert errors == []  # nothing logged as lost or failed, no "Exception during reset"


def test_two_crashes_lose_nothing_and_run_nothing_twice(
    server: Server, spawn: Spawn, record_dir: Path
) -> None:
    _drain_through_outages(server, spawn, record_dir, down_for=0, lease=10)


def test_two_outages_of_15_seconds_run_nothing_twice(
    server: Server, spawn: Spawn, record_dir: Path
) -> None:
    """Shorter than the default 30 s lease, less the 10 s between two heartbeats: a live
    worker settles every job it ran once the server is back."""
    _drain_through_outages(server, spawn, record_dir, down_for=15, lease=30)


LEASE = 4.0
STOPPED_FOR = 10.0  # past the lease: other workers claim the stopped worker's jobs


def _claims_of(store: Store, pid: int) -> set[uuid.UUID]:
    """The jobs the worker process ``pid`` holds now."""
    prefix = f"{socket.gethostname()}:{pid}/"
    with store.session_factory() as session:
        rows = session.execute(
            select(Job.id).where(Job.status == JobStatus.RUNNING, Job.locked_by.startswith(prefix))
        )
        return {row.id for row in rows}


def test_a_killed_and_a_stopped_worker_lose_nothing_and_rerun_only_their_own_jobs(
    server: Server, spawn: Spawn, record_dir: Path
) -> None:
    """One worker is SIGKILLed and another SIGSTOPped, each in the middle of a long job (and
    holding a second job of its batch, not started). Their long jobs run again elsewhere once
    their lease runs out; their second jobs run once, elsewhere. Woken up, the stopped worker
    finishes its long job, its acknowledgement is refused, and it leaves its second job alone."""
    with Store(server.url, settings=settings()) as store:
        queue = store.queue("work")
        workers = [spawn(server.url, "work", lease=LEASE, batch=2) for _ in range(4)]
        with store.unit_of_work() as uow:  # one commit: the first claim takes both kinds
            killed_job = uow.queue("work").enqueue({"hold": STOPPED_FOR + 30}, priority=10)
            regular = set(uow.queue("work").enqueue_many([{"sleep": 0.005}] * 2000))
        wait_for(lambda: bool(_holder(record_dir, killed_job, workers)), "the first long job")
        killed = _holder(record_dir, killed_job, workers)[0]
        killed_mate = _claims_of(store, killed.pid) - {killed_job}
        killed.process.send_signal(signal.SIGKILL)
        stopped_job = queue.enqueue({"hold": STOPPED_FOR + 1}, priority=10)
        wait_for(lambda: bool(_holder(record_dir, stopped_job, workers)), "the second long job")
        stopped = _holder(record_dir, stopped_job, workers)[0]
        stopped_mate = _claims_of(store, stopped.pid) - {stopped_job}
        stopped.process.send_signal(signal.SIGSTOP)
        time.sleep(STOPPED_FOR)
        stopped.process.send_signal(signal.SIGCONT)
        wait_for(lambda: queue.counts()[JobStatus.DONE] == len(regular) + 2, "every job done")
        wait_for(lambda: len(stopped.lines("WARNING")) >= 2, "the stopped worker to wake up", 30)
        stolen = queue.get(stopped_job)
        counts = queue.counts()
    assert killed.process.wait(timeout=60) == -signal.SIGKILL
    stop_all([w for w in workers if w is not killed])
    runs = run_counts(record_dir)
    print(f"figures: {_settled(counts)}, twice {[n for n in runs.values() if n > 1]}")
    assert _settled(counts) == {
        "queued": 0,
        "running": 0,
        "done": len(regular) + 2,
        "dead": 0,
        "cancelled": 0,
    }
    assert set(runs) == regular | {killed_job, stopped_job}  # nothing lost
    assert len(killed_mate) == len(stopped_mate) == 1  # each held one more job, not started
    # only the two long jobs, in hand when their workers died or stalled, ran twice
    assert {job_id: n for job_id, n in runs.items() if n > 1} == {killed_job: 2, stopped_job: 2}
    assert set(runs_by(record_dir, stopped.pid)) & stopped_mate == set()
    assert stolen.locked_by is not None and not stolen.locked_by.startswith(
        f"{socket.gethostname()}:{stopped.pid}/"
    )
    refused = [line for line in stopped.lines("WARNING") if str(stopped_job) in line]
    assert any("ran, but its lease was lost before it settled" in line for line in refused)
    (mate,) = stopped_mate
    assert any(str(mate) in line and "not started" in line for line in stopped.lines("WARNING"))


def _holder(
    record_dir: Path, job_id: uuid.UUID, workers: list[WorkerProcess]
) -> list[WorkerProcess]:
    """The workers that started ``job_id``."""
    by_pid = {w.pid: w for w in workers}
    return [
        by_pid[pid] for job, _attempt, pid in runs(record_dir) if job == job_id and pid in by_pid
    ]
