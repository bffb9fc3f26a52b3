"""Job handlers for the worker processes of the fault suite (``tests.faults.handlers:record``).

``record`` appends ``<job id> <attempts> <pid>`` to a file of its own process under
``$FLOWSTORE_FAULTS_RECORD_DIR`` when a run starts, so a run is counted even when its process is
killed, and "run twice" is countable afterwards. A job with ``payload["hold"]`` sleeps that many
seconds on its first attempt (a long job, for killing or stopping its worker mid-run).
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path

from flowstore.models import Job

RECORD_DIR = "FLOWSTORE_FAULTS_RECORD_DIR"


def record(job: Job) -> None:
    """Note the run, then take ``payload["sleep"]`` seconds (``payload["hold"]`` on attempt 1)."""
    directory = Path(os.environ[RECORD_DIR])
    line = f"{job.id} {job.attempts} {os.getpid()}\n".encode()
    fd = os.open(directory / f"{os.getpid()}.runs", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    pause = job.payload.get("hold", 0) if job.attempts == 1 else 0
    time.sleep(float(pause or job.payload.get("sleep", 0)))


def runs(directory: Path) -> list[tuple[uuid.UUID, int, int]]:
    """Every run recorded: (job id, attempt, pid)."""
    found = []
    for path in directory.glob("*.runs"):
        for line in path.read_text().splitlines():
            job_id, attempt, pid = line.split()
            found.append((uuid.UUID(job_id), int(attempt), int(pid)))
    return found


def run_counts(directory: Path) -> Counter[uuid.UUID]:
    return Counter(job_id for job_id, _attempt, _pid in runs(directory))


def runs_by(directory: Path, pid: int) -> list[uuid.UUID]:
    return [job_id for job_id, _attempt, who in runs(directory) if who == pid]
