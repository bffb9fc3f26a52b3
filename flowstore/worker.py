"""The job worker: claims jobs of one queue, runs a handler on each, acknowledges or fails it.

``run_worker(store, "emails", send_email)`` runs until stopped; the handler gets the claimed
``Job`` (its ``payload``, ``attempts``, ...). A handler that returns acknowledges the job; one
that raises fails it (retried with backoff until its attempts run out, then dead, with the
traceback as its ``last_error``). A heartbeat thread extends the leases of the jobs the worker
holds (claimed, not yet settled), so long jobs are not claimed again by another worker. Settling
a job rides out a database outage for as long as its lease lasts (``flowstore.settling``), so a
job runs again only when its worker dies or stalls past its lease; a job whose lease ran out
while it waited its turn in a batch (the worker stalled) is not started.

SIGTERM or SIGINT (when run on the main thread) stops claiming: the jobs in hand are finished
and acknowledged, claimed jobs not yet started are released, then ``run_worker`` returns. A
second signal aborts at once; jobs in hand are then replayed after their lease.

The command line is ``flowstore worker`` (``flowstore.cli_queue``); ``python -m
flowstore.worker`` runs it too.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from flowstore.errors import FlowstoreError, InvalidInputError, translating
from flowstore.models.enums import JobStatus
from flowstore.models.job import Job
from flowstore.models.types import utcnow
from flowstore.partitions import ensure_partitions
from flowstore.queue import JobQueue, default_worker_id
from flowstore.queue.wakeup import Wakeup
from flowstore.settling import TRANSIENT, HeldJobs, settle
from flowstore.store import Store

__all__ = ["Handler", "resolve_handler", "run_worker"]

log = logging.getLogger("flowstore.worker")

#: Seconds between a worker process's checks that the partitioned history tables have their
#: months ahead (PostgreSQL; the first check is at start).
PARTITION_CHECK_INTERVAL = 3600.0

#: What a worker runs per job: a callable taking the claimed ``Job``.
Handler = Callable[[Job], Any]


def resolve_handler(handler: Handler | str) -> Handler:
    """``handler`` itself, or the callable named by ``"package.module:function"``."""
    if callable(handler):
        return handler
    if not isinstance(handler, str) or handler.count(":") != 1:
        raise InvalidInputError(
            f"a handler is a callable or 'package.module:function', got {handler!r}"
        )
    module_name, _, attribute = handler.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(
            f"a handler reference is 'package.module:function', got {handler!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"cannot import handler module {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInputError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise InvalidInputError(f"handler {handler!r} is not callable")
    resolved: Handler = target
    return resolved


class _Worker:
    """What the worker threads share: the stop flag, the jobs in hand and the tally."""

    def __init__(
        self,
        store: Store,
        queue: str,
        handler: Handler,
        *,
        lease_seconds: float,
        poll_interval: float,
        batch: int,
        stop: threading.Event,
        max_jobs: int | None,
        until_empty: bool,
        listen: bool = True,
        listen_url: str | None = None,
    ) -> None:
        self.store = store
        self.queue_name = queue
        self.handler = handler
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.batch = batch
        self.stop = stop
        self.max_jobs = max_jobs
        self.until_empty = until_empty
        self.processed = 0
        self.fatal: FlowstoreError | None = None
        self._claimed = 0
        self._lock = threading.Lock()
        self.held = HeldJobs()
        self.wakeup = Wakeup(store.engine, queue, stop, listen=listen, listen_url=listen_url)
        self._schedules_due_at = 0.0  # time.monotonic() of the next enqueue_scheduled
        self._partitions_due_at = 0.0  # ... and of the next check of the history's months

    def queue(self, worker_id: str) -> JobQueue:
        return JobQueue(
            self.store, self.queue_name, lease_seconds=self.lease_seconds, worker_id=worker_id
        )

    # -- one worker thread -----------------------------------------------------------------

    def run(self, index: int) -> None:
        queue = self.queue(f"{default_worker_id()}/{index}"[:255])
        with queue.pinned():  # one connection for this thread's claims and acknowledgements
            self._loop(queue)

    def _loop(self, queue: JobQueue) -> None:
        while not self.stop.is_set():
            self._enqueue_scheduled(queue)
            self._maintain_partitions()
            want = self._quota()
            if want == 0:
                self.stop.set()
                break
            seen = self.wakeup.generation
            try:
                jobs = queue.dequeue_many(want)
            except TRANSIENT as exc:
                self._unreserve(want)
                log.warning("claiming from %r failed, retrying: %s", self.queue_name, exc)
                self.stop.wait(max(self.poll_interval, 0.5))
                continue
            except FlowstoreError as exc:
                log.error("claiming from %r failed, stopping: %s", self.queue_name, exc)
                self.fatal = exc
                self.stop.set()
                break
            self._unreserve(want - len(jobs))
            self.held.hold(jobs)
            if not jobs:
                if self.until_empty and self._drained(queue):
                    log.info("queue %r is empty: stopping", self.queue_name)
                    self.stop.set()
                    break
                if self.wakeup.wait(seen, self.poll_interval):
                    log.debug("queue %r: a job was committed, claiming", self.queue_name)
                continue
            for position, job in enumerate(jobs):
                if self.stop.is_set():
                    self._release(queue, jobs[position:])
                    break
                self._process(queue, job)

    def _enqueue_scheduled(self, queue: JobQueue) -> None:
        """Enqueue the due ticks of the queue's periodic jobs, once a poll interval for the
        whole process (each tick is enqueued once, however many workers try)."""
        now = time.monotonic()
        with self._lock:
            if now < self._schedules_due_at:
                return
            self._schedules_due_at = now + self.poll_interval
        try:
            made = queue.enqueue_scheduled()
        except FlowstoreError as exc:
            log.warning("could not enqueue the periodic jobs of %r: %s", self.queue_name, exc)
            return
        if made:
            log.info("queue %r: enqueued %d periodic job(s)", self.queue_name, made)

    def _maintain_partitions(self) -> None:
        """Create the coming months' partitions of partitioned history tables (as ``flowstore
        db maintain`` does), at start and then once an hour for the whole process."""
        engine = self.store.engine
        if engine.dialect.name != "postgresql":
            return
        now = time.monotonic()
        with self._lock:
            if now < self._partitions_due_at:
                return
            self._partitions_due_at = now + PARTITION_CHECK_INTERVAL
        ahead = self.store.settings.partitions_ahead
        try:
            with translating(), engine.begin() as conn:
                created = ensure_partitions(conn, now=utcnow(), months_ahead=ahead)
        except FlowstoreError as exc:
            log.warning("could not create the history tables' partitions ahead: %s", exc)
            return
        if created:
            log.info("created partition(s) %s", ", ".join(created))

    def _quota(self) -> int:
        """How many jobs to claim next: the batch, or what is left of ``max_jobs``."""
        with self._lock:
            if self.max_jobs is None:
                return self.batch
            left = self.max_jobs - self._claimed
            take = max(0, min(self.batch, left))
            self._claimed += take
            return take

    def _unreserve(self, count: int) -> None:
        if count and self.max_jobs is not None:
            with self._lock:
                self._claimed -= count

    def _drained(self, queue: JobQueue) -> bool:
        try:
            counts = queue.counts()
        except TRANSIENT:
            return False
        return counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0

    def _process(self, queue: JobQueue, job: Job) -> None:
        if not self.held.start(queue, job):  # its lease ran out while the worker stalled
            return
        error: str | None = None
        try:
            self.handler(job)
        except Exception as exc:
            error = "".join(traceback.format_exception(exc)).rstrip()
            log.warning("job %s failed (attempt %d): %r", job.id, job.attempts, exc)
        finally:
            with self._lock:
                self.processed += 1
        settle(self.store, queue, self.held, job, error)

    def _release(self, queue: JobQueue, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.held.drop(job)
            try:
                queue.release(job)
            except FlowstoreError as exc:  # it comes back when its lease runs out
                log.warning("could not release job %s: %s", job.id, exc)

    # -- the heartbeat thread --------------------------------------------------------------

    def heartbeat(self, done: threading.Event) -> None:
        """Extend the leases of the jobs held every third of a lease, until ``done``."""
        queue = self.queue(f"{default_worker_id()}/heartbeat"[:255])
        self.held.keep_leases(queue, max(self.lease_seconds / 3, 0.05), done)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """On the main thread: the first SIGTERM/SIGINT sets ``stop``, a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt(f"signal {signum} received twice")
        log.info("signal %d: finishing the jobs in hand, then stopping", signum)
        stop.set()

    signals = [signal.SIGTERM, signal.SIGINT]
    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_worker(
    store: Store,
    queue: str,
    handler: Handler | str,
    *,
    concurrency: int = 1,
    lease_seconds: float = 30,
    poll_interval: float = 0.5,
    stop_event: threading.Event | None = None,
    batch: int = 1,
    max_jobs: int | None = None,
    until_empty: bool = False,
    listen: bool = True,
    listen_url: str | None = None,
) -> int:
    """Process jobs of ``queue`` with ``handler`` until stopped; how many were processed.

    ``concurrency`` threads claim ``batch`` jobs at a time each; an idle thread polls every
    ``poll_interval`` seconds, and on PostgreSQL wakes as soon as a job is committed
    (LISTEN/NOTIFY, unless ``listen`` is false; ``listen_url``: another way to the same
    database for the listening connection, see ``flowstore.queue.wakeup``). As it polls, the
    worker enqueues the due ticks of the queue's periodic jobs (``JobQueue.schedule``). A
    ``flowstore.queue.Tasks`` handler serves several named tasks. It stops on ``stop_event``,
    on SIGTERM/SIGINT (run on the main thread), after ``max_jobs`` jobs, or, with
    ``until_empty``, once the queue holds no queued or running job. A stopping worker finishes
    the jobs in hand first.
    """
    resolved = resolve_handler(handler)
    for name, value, minimum in (("concurrency", concurrency, 1), ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if max_jobs is not None and (
        isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 0
    ):
        raise InvalidInputError(f"max_jobs must be a non-negative integer, got {max_jobs!r}")
    for name, number in (("lease_seconds", lease_seconds), ("poll_interval", poll_interval)):
        if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
            raise InvalidInputError(f"{name} must be a positive number, got {number!r}")
    JobQueue(store, queue)  # checks the queue name before any thread starts

    stop = stop_event or threading.Event()
    worker = _Worker(
        store,
        queue,
        resolved,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
        batch=batch,
        stop=stop,
        max_jobs=max_jobs,
        until_empty=until_empty,
        listen=listen,
        listen_url=listen_url,
    )
    heartbeat_done = threading.Event()
    threads = [
        threading.Thread(target=worker.run, args=(i,), name=f"flowstore-worker-{i}", daemon=True)
        for i in range(concurrency)
    ]
    beat = threading.Thread(
        target=worker.heartbeat, args=(heartbeat_done,), name="flowstore-heartbeat", daemon=True
    )
    with _stop_on_signals(stop):
        # logged once SIGTERM is handled, so whoever waits for this line may send it at once
        log.info("worker on queue %r: %d thread(s), batch %d", queue, concurrency, batch)
        worker.wakeup.start()
        beat.start()
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        finally:
            heartbeat_done.set()
            stop.set()  # the listening thread too
    beat.join(timeout=5)
    worker.wakeup.join(timeout=5)
    if worker.fatal is not None:
        raise worker.fatal
    log.info("worker on queue %r stopped after %d job(s)", queue, worker.processed)
    return worker.processed


if __name__ == "__main__":  # ``python -m flowstore.worker ...``: ``flowstore worker ...``
    from flowstore.cli import main

    sys.exit(main(["worker", *sys.argv[1:]]))
