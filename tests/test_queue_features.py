"""The queue's features beyond claim and acknowledge, on every backend: the queueing lock
(``dedup_key``), cancel and requeue, periodic jobs, named tasks, the order of a batch, and
settings that would put a time past the year 9998.

Time is a hand-driven clock where it matters, so nothing sleeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import text, update

from flowstore import AlreadyExistsError, InvalidInputError, NotFoundError, Store
from flowstore.models import Job, JobSchedule, JobStatus
from flowstore.queue import JobQueue, Tasks, queue_status
from flowstore.worker import run_worker
from tests.pgbouncer import behind_pgbouncer, direct

T = TypeVar("T")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def together(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` in ``count`` threads released at the same moment; their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


# -- the queueing lock -------------------------------------------------------------------------


def test_a_dedup_key_holds_one_live_job_until_it_finishes(store: Store) -> None:
    queue = store.queue("mail")
    first = queue.enqueue({"n": 1}, dedup_key="welcome:ada")

    assert queue.enqueue({"n": 2}, dedup_key="welcome:ada") == first
    assert store.queue("other").enqueue({}, dedup_key="welcome:ada") != first  # per queue
    assert queue.enqueue({"n": 3}, dedup_key="welcome:grace") != first
    assert queue.counts()[JobStatus.QUEUED] == 2
    job = queue.dequeue()
    assert job is not None and job.id == first and job.dedup_key == "welcome:ada"
    assert queue.enqueue({"n": 4}, dedup_key="welcome:ada") == first  # running holds it too
    assert queue.acknowledge(job)

    second = queue.enqueue({"n": 5}, dedup_key="welcome:ada")  # finished: a new one starts
    assert second != first
    assert queue.get(second).payload == {"n": 5}


def test_eight_concurrent_enqueuers_of_one_key_make_one_job(store: Store) -> None:
    ids = together(8, lambda i: store.queue("mail").enqueue({"i": i}, dedup_key="digest"))

    assert len(set(ids)) == 1
    counts = store.queue("mail").counts()
    assert counts[JobStatus.QUEUED] == 1
    assert sum(counts.values()) == 1


def test_the_dedup_key_holds_inside_a_unit_of_work(store: Store) -> None:
    live = store.queue("mail").enqueue({}, dedup_key="k")
    with store.unit_of_work() as uow:
        queue = uow.queue("mail")
        assert queue.enqueue({"again": True}, dedup_key="k") == live
        fresh = queue.enqueue({"n": 1}, dedup_key="other")
        assert queue.enqueue({"n": 2}, dedup_key="other") == fresh  # its own, uncommitted
    assert store.queue("mail").counts()[JobStatus.QUEUED] == 2


def test_bad_dedup_keys_and_tasks_are_invalid(store: Store) -> None:
    queue = store.queue("q")
    for bad in ("", " ", "x" * 256, 5):
        with pytest.raises(InvalidInputError, match="dedup_key"):
            queue.enqueue({}, dedup_key=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="task"):
        queue.enqueue({}, task="x" * 101)
    assert queue.counts()[JobStatus.QUEUED] == 0


# -- cancel and requeue ------------------------------------------------------------------------


def test_cancel_then_requeue_round_trip(store: Store) -> None:
    queue = store.queue("q")
    job_id = queue.enqueue({"k": 1}, dedup_key="only")

    assert queue.cancel(job_id) is True
    cancelled = queue.get(job_id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    assert queue.dequeue() is None
    assert queue.cancel(job_id) is False
    assert queue.enqueue({"k": 2}, dedup_key="only") != job_id  # a cancelled job holds no key

    with pytest.raises(AlreadyExistsError, match="dedup_key"):
        queue.requeue(job_id)
    replacement = queue.dequeue()
    assert replacement is not None and queue.acknowledge(replacement)

    assert queue.requeue(job_id) is True
    again = queue.get(job_id)
    assert (again.status, again.attempts, again.finished_at) == (JobStatus.QUEUED, 0, None)
    claimed = queue.dequeue()
    assert claimed is not None and (claimed.id, claimed.attempts) == (job_id, 1)
    assert queue.cancel(job_id) is False  # running
    assert queue.requeue(job_id) is False  # running


def test_a_dead_job_is_requeued_with_its_attempts_reset(store: Store) -> None:
    queue = store.queue("q")
    job_id = queue.enqueue({}, max_attempts=1)
    job = queue.dequeue()
    assert job is not None
    assert queue.fail(job, RuntimeError("boom")) is JobStatus.DEAD

    assert queue.requeue(job_id) is True
    requeued = queue.get(job_id)
    assert (requeued.status, requeued.attempts) == (JobStatus.QUEUED, 0)
    assert requeued.last_error == "RuntimeError: boom"  # kept, for the record
    assert queue.requeue(job_id) is False  # queued


def test_cancel_and_requeue_of_unknown_jobs_are_not_found(store: Store) -> None:
    queue = store.queue("q")
    for call in (queue.cancel, queue.requeue):
        with pytest.raises(NotFoundError):
            call("00000000-0000-7000-8000-000000000000")
        with pytest.raises(NotFoundError):
            call("not a job id")


def test_cancel_in_a_rolled_back_unit_of_work_is_undone(store: Store) -> None:
    job_id = store.queue("q").enqueue({})
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        assert uow.queue("q").cancel(job_id) is True
        raise RuntimeError("undo")
    assert store.queue("q").get(job_id).status is JobStatus.QUEUED


# -- periodic jobs -----------------------------------------------------------------------------

START = datetime(2026, 12, 3, 10, 2, 30, tzinfo=UTC)


def test_a_schedule_enqueues_each_due_tick_once(store: Store) -> None:
    clock = Clock(START)
    queue = JobQueue(store, "reports", clock=clock)
    made = queue.schedule("hourly-digest", "*/5 * * * *", {"kind": "digest"}, priority=3)
    assert made.next_run_at == datetime(2026, 12, 3, 10, 5, tzinfo=UTC)

    assert queue.enqueue_scheduled() == 0  # not due yet
    assert queue.enqueue_scheduled(now=START + timedelta(minutes=3)) == 1
    assert queue.enqueue_scheduled(now=START + timedelta(minutes=3)) == 0  # that tick is done
    clock.now = START + timedelta(minutes=3)
    (job,) = queue.dequeue_many(5)
    assert (job.payload, job.priority) == ({"kind": "digest"}, 3)
    assert job.run_at == datetime(2026, 12, 3, 10, 5, tzinfo=UTC)

    # Ticks missed while no worker ran are not made up: one job, and on to the next tick.
    assert queue.enqueue_scheduled(now=START + timedelta(hours=2)) == 1
    (listed,) = queue.schedules()
    assert listed.next_run_at == datetime(2026, 12, 3, 12, 5, tzinfo=UTC)
    assert listed.last_run_at == datetime(2026, 12, 3, 10, 10, tzinfo=UTC)


def test_six_threads_at_one_tick_enqueue_it_once(store: Store) -> None:
    queue = JobQueue(store, "reports", clock=Clock(START))
    queue.schedule("a", "* * * * *", {"which": "a"})
    queue.schedule("b", "*/2 * * * *", {"which": "b"})
    tick = datetime(2026, 12, 3, 10, 4, tzinfo=UTC)

    made = together(6, lambda _i: JobQueue(store, "reports").enqueue_scheduled(now=tick))

    assert sum(made) == 2
    jobs = JobQueue(store, "reports").dequeue_many(10)
    assert sorted(job.payload["which"] for job in jobs) == ["a", "b"]


def test_schedule_replaces_and_unschedule_removes(store: Store) -> None:
    queue = JobQueue(store, "reports", clock=Clock(START))
    queue.schedule("x", "0 * * * *", {"v": 1})
    replaced = queue.schedule("x", "30 10 * * *", {"v": 2}, task="report")
    JobQueue(store, "other", clock=Clock(START)).schedule("x", "0 0 * * *")

    (only,) = queue.schedules()
    assert (only.cron, only.payload, only.task) == ("30 10 * * *", {"v": 2}, "report")
    assert only.next_run_at == replaced.next_run_at == datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    assert queue.enqueue_scheduled(now=only.next_run_at) == 1
    assert JobQueue(store, "reports").dequeue_many(5)[0].task == "report"
    assert queue.unschedule("x") is True
    assert queue.unschedule("x") is False
    assert queue.schedules() == []
    assert len(JobQueue(store, "other").schedules()) == 1


@pytest.mark.parametrize("cron", ["* * * *", "61 * * * *", "0 0 30 2 *", "", 5, "* * * * * *"])
def test_bad_cron_expressions_are_invalid(store: Store, cron: Any) -> None:
    with pytest.raises(InvalidInputError):
        store.queue("q").schedule("x", cron)
    assert store.queue("q").schedules() == []


# -- order, limits -----------------------------------------------------------------------------


def test_a_batch_is_claimed_in_the_order_given(store: Store) -> None:
    queue = store.queue("q")
    ids = queue.enqueue_many({"n": n} for n in range(200))

    claimed = queue.dequeue_many(200)

    assert [job.id for job in claimed] == ids
    assert [job.payload["n"] for job in claimed] == list(range(200))


@pytest.mark.parametrize(
    "options",
    [
        {"backoff_max": 1e12},
        {"backoff_max": float(2**62)},
        {"lease_seconds": 1e12},
    ],
)
def test_settings_past_the_year_9998_are_refused(store: Store, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="too large"):
        JobQueue(store, "q", **options)


def test_a_huge_backoff_base_is_capped_by_backoff_max(store: Store) -> None:
    queue = JobQueue(store, "q", backoff_base=1e300, backoff_max=60)
    queue.enqueue({})
    job = queue.dequeue()
    assert job is not None
    assert queue.fail(job, "again") is JobStatus.QUEUED
    assert queue.get(job.id).last_error == "again"


def test_a_delay_past_the_year_9998_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="too large"):
        store.queue("q").enqueue({}, run_at=timedelta(days=3_000_000))


# -- named tasks -------------------------------------------------------------------------------


def test_one_worker_serves_several_named_tasks(store: Store) -> None:
    ran: list[tuple[str, Any]] = []
    tasks = Tasks()

    @tasks.task("email")
    def email(job: Job) -> None:
        ran.append(("email", job.payload["to"]))

    tasks.register("resize", lambda job: ran.append(("resize", job.payload["w"])))
    queue = store.queue("work")
    queue.enqueue({"to": "ada"}, task="email")
    queue.enqueue({"w": 64}, task="resize")
    stray = queue.enqueue({}, task="unknown", max_attempts=1)
    untagged = queue.enqueue({}, max_attempts=1)

    processed = run_worker(store, "work", tasks, until_empty=True, poll_interval=0.05)

    assert processed == 4
    assert sorted(ran) == [("email", "ada"), ("resize", 64)]
    dead = queue.get(stray)
    assert dead.status is JobStatus.DEAD
    assert "no handler for task 'unknown'" in (dead.last_error or "")
    assert queue.get(untagged).status is JobStatus.DEAD
    assert queue.get(stray).task == "unknown"


def test_a_task_name_is_registered_once(store: Store) -> None:
    tasks = Tasks()
    tasks.register("a", print)
    with pytest.raises(InvalidInputError, match="already"):
        tasks.register("a", print)
    with pytest.raises(InvalidInputError):
        tasks.register("b", "not callable")  # type: ignore[arg-type]
    assert list(tasks) == ["a"] and "a" in tasks


# -- status ------------------------------------------------------------------------------------


def test_queue_status_counts_ages_and_dead_jobs(store: Store) -> None:
    clock = Clock(START)
    queue = JobQueue(store, "q", clock=clock)
    queue.enqueue({}, run_at=START - timedelta(seconds=90))
    queue.enqueue({}, run_at=START + timedelta(hours=1))  # not due: no age
    doomed = queue.enqueue({}, max_attempts=1, priority=9)
    job = queue.dequeue()
    assert job is not None and job.id == doomed
    queue.fail(job, "Traceback ...\nValueError: bad input")
    JobQueue(store, "idle", clock=clock).cancel(JobQueue(store, "idle", clock=clock).enqueue({}))

    with store.engine.connect() as conn:
        found = {entry.queue: entry for entry in queue_status(conn, START)}

    assert set(found) == {"q", "idle"}
    q = found["q"]
    assert q.counts == {"queued": 2, "running": 0, "done": 0, "dead": 1, "cancelled": 0}
    assert q.oldest_due_seconds == 90.0
    assert [d.id for d in q.dead] == [str(doomed)]
    assert q.dead[0].last_error == "Traceback ...\nValueError: bad input"
    assert found["idle"].counts["cancelled"] == 1 and found["idle"].oldest_due_seconds is None


# -- the worker: periodic jobs, prompt wake-up -------------------------------------------------


def test_the_worker_enqueues_due_periodic_jobs_as_it_polls(store: Store) -> None:
    queue = store.queue("cron")
    queue.schedule("nightly", "0 3 * * *", {"kind": "cleanup"}, task="cleanup")
    with store.engine.begin() as conn:  # make its tick due now
        conn.execute(
            update(JobSchedule).values(next_run_at=datetime.now(UTC) - timedelta(seconds=5))
        )
    ran: list[Any] = []
    tasks = Tasks()
    tasks.register("cleanup", lambda job: ran.append(job.payload))

    assert run_worker(store, "cron", tasks, until_empty=True, poll_interval=0.05) == 1

    assert ran == [{"kind": "cleanup"}]
    (schedule,) = queue.schedules()
    assert schedule.next_run_at > datetime.now(UTC)


def _wait_for(condition: Callable[[], bool], what: str, patience: float = 60.0) -> None:
    """A guard against a hung test, never a measure of speed."""
    deadline = time.monotonic() + patience
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


@pytest.fixture
def worker_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="flowstore.worker")
    return caplog


def _said(caplog: pytest.LogCaptureFixture, words: str) -> int:
    return sum(words in record.getMessage() for record in caplog.records)


def _listen_url(store: Store) -> str | None:
    """Behind the suite's PgBouncer, the server itself, as flowstore.queue.wakeup advises: a
    transaction pooler hands the LISTEN's server connection to others."""
    if store.dialect != "postgresql" or not behind_pgbouncer():
        return None
    return direct(store.url).render_as_string(hide_password=False)


def _worker_thread(store: Store, queue: str, poll: float) -> tuple[threading.Thread, Any, Any]:
    stop, ran = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=run_worker,
        args=(store, queue, lambda job: ran.set()),
        kwargs={"poll_interval": poll, "stop_event": stop, "listen_url": _listen_url(store)},
        daemon=True,
    )
    thread.start()
    return thread, stop, ran


def test_a_waiting_worker_is_woken_by_notify_not_by_its_poll(
    store: Store, worker_logs: pytest.LogCaptureFixture
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; elsewhere workers poll")
    thread, stop, ran = _worker_thread(store, "prompt", poll=3600)  # a poll would come in 1 h
    try:
        _wait_for(lambda: _said(worker_logs, "listening for new jobs") == 1, "the listener")
        time.sleep(0.5)  # let the worker settle into its wait (not a measure)
        with store.unit_of_work() as uow:
            uow.queue("prompt").enqueue({"hello": "world"})  # NOTIFY on commit
        _wait_for(ran.is_set, "the job to run (a poll would take an hour)")
        assert _said(worker_logs, "woken by a notification") >= 1
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_dropped_channel_falls_back_to_polling_and_comes_back(
    store: Store, worker_logs: pytest.LogCaptureFixture
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; elsewhere workers poll")
    thread, stop, ran = _worker_thread(store, "fallback", poll=0.2)
    try:
        _wait_for(lambda: _said(worker_logs, "listening for new jobs") == 1, "the listener")
        with store.engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN flowstore_jobs%' AND datname = current_database()"
                )
            ).all()
        assert killed
        _wait_for(lambda: _said(worker_logs, "notification channel dropped") == 1, "the drop")
        store.queue("fallback").enqueue({})
        _wait_for(ran.is_set, "the job to run by polling")
        _wait_for(lambda: _said(worker_logs, "listening for new jobs") == 2, "listening again")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_pinned_queue_reports_an_unreachable_server_as_connection_failed() -> None:
    from flowstore import ConnectionFailedError
    from tests.test_cli import closed_port

    with Store(f"postgresql://nobody@127.0.0.1:{closed_port()}/none") as store:
        queue = store.queue("q")
        with queue.pinned():
            for _ in range(2):  # the failed connection is not kept: the next call tries anew
                with pytest.raises(ConnectionFailedError):
                    queue.dequeue()
