"""Worker processes (real ones, not threads) draining a queue while one is killed.

Each backend that several processes can share (a SQLite file, PostgreSQL, MariaDB) gets four
``python -m flowstore.worker`` processes and 2000 jobs. One is killed with SIGKILL mid-run and
one is stopped with SIGTERM; every job must end done, none lost, and the only jobs that run
twice are the killed worker's jobs in hand, run again by another worker once their lease ran
out. The handler (``tests.queue_handlers.record``) writes one line per run, per process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from flowstore import Store
from flowstore.models import Job, JobStatus
from tests.queue_handlers import RECORD_DIR_VARIABLE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
JOBS = 2000
LEASE_SECONDS = 3
# A guard against a hung run, never a measure of speed.
PATIENCE = 240.0


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    capacity: int  # jobs it can hold at once: threads x batch

    @property
    def pid(self) -> int:
        return self.process.pid


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.01)


def runs(directory: Path) -> list[tuple[uuid.UUID, int, int]]:
    """Every recorded run: (job id, attempts, pid)."""
    found = []
    for path in directory.glob("*.runs"):
        for line in path.read_text().splitlines():
            job_id, attempts, pid = line.split()
            found.append((uuid.UUID(job_id), int(attempts), int(pid)))
    return found


def runs_of(directory: Path, pid: int) -> int:
    path = directory / f"{pid}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``python -m flowstore.worker`` processes; any left running are killed after."""
    started: list[WorkerProcess] = []

    def start(url: str, queue: str, *, concurrency: int = 1, batch: int = 1) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        command = [
            sys.executable,
            "-m",
            "flowstore.worker",
            "--url",
            url,
            "--queue",
            queue,
            "--handler",
            "tests.queue_handlers:record",
            "--concurrency",
            str(concurrency),
            "--batch",
            str(batch),
            "--lease-seconds",
            str(LEASE_SECONDS),
            "--poll-interval",
            "0.05",
        ]
        env = {**os.environ, RECORD_DIR_VARIABLE: str(tmp_path / "runs")}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(process, log, concurrency * batch)
        started.append(worker)
        return worker

    (tmp_path / "runs").mkdir()
    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def test_workers_drain_every_job_once_while_one_is_killed(
    store: Store, spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    if store.is_memory:
        pytest.skip("an in-memory database lives in one process")
    record_dir = tmp_path / "runs"
    url = store.url.render_as_string(hide_password=False)
    victim = spawn(url, "drain", concurrency=2, batch=3)
    stopped = spawn(url, "drain", batch=2)
    steady = [spawn(url, "drain", batch=10), spawn(url, "drain", concurrency=2, batch=5)]
    workers = [victim, stopped, *steady]
    wait_for(
        lambda: all(b"worker on queue" in w.log.read_bytes() for w in workers),
        "the workers to start",
    )

    queue = store.queue("drain")
    ids = set(queue.enqueue_many([{"n": n, "sleep": 0.003} for n in range(JOBS)]))

    wait_for(lambda: runs_of(record_dir, victim.pid) >= 100, "the victim to get going")
    victim.process.send_signal(signal.SIGKILL)
    assert queue.counts()[JobStatus.DONE] < JOBS, "the kill must land mid-run"
    wait_for(lambda: runs_of(record_dir, stopped.pid) >= 50, "the other worker to get going")
    stopped.process.send_signal(signal.SIGTERM)
    assert stopped.process.wait(timeout=PATIENCE) == 0, stopped.log.read_text()

    wait_for(lambda: queue.counts()[JobStatus.DONE] == JOBS, "every job to be done")
    for worker in steady:
        worker.process.send_signal(signal.SIGTERM)
    for worker in steady:
        assert worker.process.wait(timeout=PATIENCE) == 0, worker.log.read_text()
    assert victim.process.wait() == -signal.SIGKILL

    assert queue.counts() == {
        JobStatus.QUEUED: 0,
        JobStatus.RUNNING: 0,
        JobStatus.DONE: JOBS,
        JobStatus.DEAD: 0,
        JobStatus.CANCELLED: 0,
    }
    by_job: dict[uuid.UUID, list[tuple[int, int]]] = defaultdict(list)
    for job_id, attempt, pid in runs(record_dir):
        by_job[job_id].append((attempt, pid))
    assert set(by_job) == ids  # none lost
    twice = {job_id: sorted(ran) for job_id, ran in by_job.items() if len(ran) > 1}
    assert len(twice) <= victim.capacity
    with store.session_factory() as session:
        rows = session.execute(select(Job.id, Job.attempts).where(Job.queue == "drain"))
        attempts = {job_id: count for job_id, count in rows}
    for job_id, ran in twice.items():
        (first_attempt, first_pid), *replays = ran
        assert first_pid == victim.pid  # only the killed worker's jobs run again ...
        assert all(pid != victim.pid and n > first_attempt for n, pid in replays)  # ... later
        assert attempts[job_id] == ran[-1][0] >= 2
    # Claimed by the victim and replayed, whether or not it had started them:
    replayed = {job_id for job_id, n in attempts.items() if n > 1}
    assert set(twice) <= replayed
    assert len(replayed) <= victim.capacity
    assert not any(pid == stopped.pid for ran in twice.values() for _, pid in ran)


def test_the_worker_command_refuses_a_bad_handler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    with Store(url) as store:
        store.upgrade()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowstore.worker",
            "--url",
            url,
            "--queue",
            "q",
            "--handler",
            "tests.queue_handlers:no_such_function",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode == 1  # `flowstore worker`'s refusal: one line, exit 1
    assert b"no_such_function" in result.stderr
