"""Job handlers that worker processes in the queue tests import (``tests.queue_handlers:...``).

``record`` appends one line per run, ``<job id> <attempts> <pid>``, to a file of its own
process under ``$FLOWSTORE_TEST_RECORD_DIR``, so a test can tell which process ran which job,
and how often, even when a process is killed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flowstore.models import Job

RECORD_DIR_VARIABLE = "FLOWSTORE_TEST_RECORD_DIR"


def record_path(directory: Path, pid: int) -> Path:
    return directory / f"{pid}.runs"


def record(job: Job) -> None:
    """Note the run, then take a moment (``payload["sleep"]`` seconds) as real work would."""
    directory = Path(os.environ[RECORD_DIR_VARIABLE])
    line = f"{job.id} {job.attempts} {os.getpid()}\n".encode()
    fd = os.open(record_path(directory, os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(float(job.payload.get("sleep", 0)))


def fail_always(job: Job) -> None:
    raise RuntimeError(f"job {job.payload.get('n')} cannot be done")
