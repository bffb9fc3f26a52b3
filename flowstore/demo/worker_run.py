"""flowstore's worker, run in the demo's own process until the demo queue is drained."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flowstore.demo.cast import DEMO_QUEUE
from flowstore.models import Job
from flowstore.store import Store
from flowstore.worker import run_worker

WORKER_TIME_LIMIT_S = 60.0


def run_worker_until_empty(store: Store, handler: Callable[[Job], None]) -> int:
    """Run flowstore's worker in this process until the demo queue is drained; how many jobs.

    The timer only bounds a run whose handler keeps failing (its retries wait for backoff).
    """
    stop = threading.Event()
    timer = threading.Timer(WORKER_TIME_LIMIT_S, stop.set)
    timer.start()
    try:
        return run_worker(
            store, DEMO_QUEUE, handler, until_empty=True, poll_interval=0.1, stop_event=stop
        )
    finally:
        timer.cancel()
